"""The retry policy: what is tried again, how often, and how long to wait. One place only.

Retried: transport failures (refused, reset, timed out, a body cut short), 408, 429, 500, 502,
503 and 504, and a blob whose bytes did not match their digest in transit. Never retried: any
other 4xx (a 401 is answered once by re-authenticating, in auth.py), and anything that is not a
`ReconcilerError` marked `retryable`.

Waits grow exponentially from `base` with full jitter, capped at `cap`. A `Retry-After` header
(seconds or an HTTP-date) sets the wait instead; when it asks for longer than `cap`, we stop and
report it rather than block a run for an unbounded time.

A connection refused by a host that has not answered once in this process (the transport marks
the error `first_contact_refused`) most likely means nothing listens there: a typo, a registry
not started. A one-shot command gives it `first_contact_retries` quick tries and fails, instead
of backing off for seconds; the daemon (`first_contact_retries=None`) retries it like any
transport failure, since a registry may be restarting. A reset mid-stream or a 5xx is not a
refusal, and a host that answered before gets the usual retries.
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
from reconciler.store.registry.numbers import decimal

log = logging.getLogger("reconciler.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # retries after the first try
    base: float = 0.5  # seconds before the first retry (before jitter)
    cap: float = 30.0  # longest wait between two tries, and the most Retry-After we honour
    first_contact_retries: int | None = None  # for a refusal before the host ever answered
    first_contact_delay: float = 0.2  # seconds before each of those

    def delay(
        self, retry: int, retry_after: float | None = None, *, first_contact: bool = False
    ) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None means give up.

        `first_contact`: the error is a connection refused by a host that never answered."""
        if first_contact and self.first_contact_retries is not None:
            return self.first_contact_delay if retry < self.first_contact_retries else None
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
                wait = self.delay(
                    retry,
                    getattr(exc, "retry_after", None),
                    first_contact=getattr(exc, "first_contact_refused", False),
                )
                if not exc.retryable or wait is None:
                    if exc.retryable:
                        log.warning(
                            "%s: giving up after %d %s",
                            what,
                            retry,
                            "retry" if retry == 1 else "retries",
                        )
                    raise
                log.warning("%s failed (%s); retry %d in %.2fs", what, exc, retry + 1, wait)
                await asyncio.sleep(wait)
                retry += 1


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` -> seconds from now;
    None when absent or neither (`¹`, `-1`, `1.5`): the policy's own backoff applies then."""
    if value is None:
        return None
    value = value.strip(" \t")
    seconds = decimal(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
