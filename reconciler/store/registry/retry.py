"""The retry policy: what is tried again, how often, and how long to wait. One place only.

Retried: transport failures (refused, reset, timed out, a body cut short), 408, 429, 500, 502,
503 and 504, and a blob whose bytes did not match their digest in transit. Never retried: any
other 4xx (a 401 is answered once by re-authenticating, in auth.py), and anything that is not a
`ReconcilerError` marked `retryable`.

Waits grow exponentially from `base` with full jitter, capped at `cap`. A `Retry-After` header
(seconds or an HTTP-date) sets the wait instead; when it asks for longer than `cap`, we stop and
report it rather than block a run for an unbounded time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from reconciler.errors import ReconcilerError

log = logging.getLogger("reconciler.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # retries after the first try
    base: float = 0.5  # seconds before the first retry (before jitter)
    cap: float = 30.0  # longest wait between two tries, and the most Retry-After we honour

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None means give up."""
        if retry >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.cap else None
        return random.uniform(0, min(self.cap, self.base * 2**retry))  # noqa: S311 - jitter

    async def run(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run `operation`, trying again on retryable errors as the policy allows."""
        retry = 0
        while True:
            try:
                return await operation()
            except ReconcilerError as exc:
                wait = self.delay(retry, getattr(exc, "retry_after", None))
                if not exc.retryable or wait is None:
                    if exc.retryable:
                        log.warning("%s: giving up after %d retries", what, retry)
                    raise
                log.warning("%s failed (%s); retry %d in %.2fs", what, exc, retry + 1, wait)
                await asyncio.sleep(wait)
                retry += 1


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` -> seconds from now."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
