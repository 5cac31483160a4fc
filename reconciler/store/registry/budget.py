"""Request budgets: how fast requests go to one registry host, by our limit and by theirs.

Two limits meet in one FIFO queue per host (a host is `host[:port]` as a request goes on the
wire: Docker Hub's `docker.io` is `registry-1.docker.io` there):

- **Ours**: `registries.<host>.requests_per_second` and `burst`, a token bucket (`TokenBucket`)
  that starts full. One per host per process, in the transport that `Stores` owns, so every
  spec and every daemon pass draws from it.
- **Theirs**: the `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` headers of
  every answer (`parse_ratelimit`: the IETF draft's `RateLimit-Limit: 100, 100;w=60` and
  Docker Hub's `ratelimit-limit: 100;w=21600`). The window follows the answer of the latest
  request sent, less the requests still in flight (they may be counted there already: erring
  on the slow side), less what we send until the next answer. While the remainder is low
  (under a tenth of the limit, or under `low_water`: the concurrency), the remaining requests
  are spread over the rest of the window, one every `left / remaining` seconds, so the client
  slows before it reaches zero. At zero, with requests in flight, it waits for their answers;
  with none, for the reset, unless that is more than `cap` (`retry_max_delay`) away: then the
  request fails at once, naming the host and the wait. A spread that would put more than `cap`
  between two requests is not made: the reset is out of reach either way, and one request a
  `cap` would only make the same failure come later. Without `RateLimit-Reset`, the window
  (`;w=`) is taken to end a whole window after the answer (the longest it can be); without
  either, a spent budget lets one request at a time ask again. Once a window has reset, the
  next starts from the limit, less what is in flight, until an answer says more: a pass whose
  requests were waiting for the reset does not send them all at once. Malformed headers are
  ignored (a debug line).

What is counted: every request that goes on the wire, where it goes: each retry, each hop of a
redirect (against the hop's host, when that host has a budget or advertises one), and token
requests (against the auth realm's host: a realm on the registry's own host shares its budget,
a realm elsewhere is limited only if its host has a budget of its own).

Where the queue stands: the transport waits on it right before a request is handed to httpx, so
a waiting request holds no connection of the pool. It does hold the caller's concurrency slot
(`Stores.slot`, taken by the steps around each operation): the slot is per registry host, and
whoever waits for that slot would next wait on the same host's queue, behind us (FIFO), so
holding it costs nobody a turn (a copy holds its destination's slot while it reads from the
source: the source's budget then paces that copy's slot, as the copy itself does). Taking the
budget before the slot instead would spend tokens on requests that then wait for a slot, and
let them reach the wire in bursts above the rate. The token itself is taken when the woken
request runs on to send, not when its turn came: under load the two can be far apart.

A request of a spec that waits longer than `SHOW_WAIT` seconds is listed in `waiting()` (spec
name -> host) while it waits: the daemon's `/status` shows it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from reconciler.errors import RegistryError
from reconciler.logs import current_spec
from reconciler.store.registry.numbers import decimal

log = logging.getLogger("reconciler.budget")

SHOW_WAIT = 0.5  # seconds a request waits before its spec shows as waiting
_EPSILON = 1e-9  # of a token: what float arithmetic of refills may leave short
_EPOCH = 1_000_000_000  # a RateLimit-Reset this large is a point in time, not seconds from now


class BudgetEvents(Protocol):
    """What the daemon's metrics are told (the transport's callback, like `on_response`)."""

    def on_budget_wait(self, host: str, seconds: float) -> None: ...

    def on_ratelimit(self, host: str, remaining: int) -> None: ...


@dataclass(frozen=True)
class RateLimit:
    """What one answer said about the server's budget."""

    limit: int
    remaining: int
    reset: float | None = None  # seconds from the answer until the window resets
    window: float | None = None  # the window's length (`;w=`)


def _item(item: str) -> tuple[int, float | None] | None:
    """`76;w=21600` -> (76, 21600.0); `76` -> (76, None)."""
    first, *params = item.split(";")
    number = decimal(first.strip(" \t"))
    if number is None:
        return None
    window = None
    for param in params:
        key, _, given = param.partition("=")
        seconds = decimal(given.strip(" \t"))
        if key.strip().lower() == "w" and seconds:
            window = float(seconds)
    return number, window


def _quota(value: str) -> tuple[int, float | None] | None:
    """The first item of a quota list, with its window; the draft's `10, 10;w=1, 50;w=60`
    names the window of the first item in the policy of the same number: (10, 1.0)."""
    first, *policies = value.split(",")
    quota = _item(first)
    if quota is None or quota[1] is not None:
        return quota
    for policy in policies:
        same = _item(policy)
        if same is not None and same[0] == quota[0] and same[1] is not None:
            return same
    return quota


def parse_ratelimit(headers: Mapping[str, str], now: float | None = None) -> RateLimit | None:
    """The RateLimit headers of an answer (`headers` looked up case-insensitively, as httpx's
    are), or None when there are none or they do not parse."""
    limit_header = headers.get("RateLimit-Limit")
    remaining_header = headers.get("RateLimit-Remaining")
    if limit_header is None and remaining_header is None:
        return None
    limit = _quota(limit_header or "")
    remaining = _quota(remaining_header or "")
    if limit is None or remaining is None or limit[0] < 1:
        log.debug("ignoring RateLimit headers %r / %r", limit_header, remaining_header)
        return None
    reset = None
    reset_header = (headers.get("RateLimit-Reset") or "").strip(" \t")
    reset_number = decimal(reset_header)
    if reset_number is not None:
        reset = float(reset_number)
        if reset >= _EPOCH:
            reset = max(0.0, reset - (time.time() if now is None else now))
    elif reset_header:
        log.debug("ignoring RateLimit-Reset %r", reset_header)
    window = limit[1] or remaining[1]
    return RateLimit(limit[0], min(remaining[0], limit[0]), reset, window)


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; one token per request."""

    rate: float
    burst: int
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._refill(now)
        short = 1 - self.tokens
        return 0.0 if short <= _EPSILON else short / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1


@dataclass
class ServerWindow:
    """The server's budget as its latest answer said, less what we sent since (loop time)."""

    limit: int
    remaining: int
    reset_at: float | None  # None: not said (or not yet, in a window rolled over by us)
    next_at: float = 0.0  # while spreading: the earliest the next request may go

    def expired(self, now: float) -> bool:
        return self.reset_at is not None and now >= self.reset_at

    def rolled(self, in_flight: int) -> ServerWindow:
        """The next window, once this one has reset: the limit again, less what is in flight
        (it may count there), until an answer says more."""
        return ServerWindow(self.limit, self.limit - in_flight, None)

    def low(self, low_water: int) -> bool:
        return self.remaining < max(self.limit / 10, low_water)

    def wait(self, now: float, low_water: int, in_flight: int = 0) -> float:
        """Seconds the next request must wait for the server's budget (`math.inf`: until an
        answer comes)."""
        if self.expired(now):
            return 0.0
        if self.remaining <= 0:
            if in_flight:  # their answers will say how many are left
                return math.inf
            # Spent, as the server said: wait for the reset; when it never said, one request
            # goes to ask.
            return self.reset_at - now if self.reset_at is not None else 0.0
        if self.reset_at is None or not self.low(low_water):
            return 0.0
        return max(0.0, self.next_at - now)

    def sent(self, now: float, low_water: int, cap: float) -> None:
        self.remaining -= 1
        if self.reset_at is not None and self.remaining > 0 and self.low(low_water):
            spacing = (self.reset_at - now) / self.remaining
            if spacing <= cap:  # else the reset is out of reach: spreading only delays
                self.next_at = now + spacing


def window_from(said: RateLimit, now: float, in_flight: int, next_at: float = 0.0) -> ServerWindow:
    """The window an answer describes. What is still in flight may not be counted in it yet;
    counting it as spent errs on the slow side."""
    left = said.reset if said.reset is not None else said.window
    reset_at = None if left is None else now + left
    return ServerWindow(said.limit, said.remaining - in_flight, reset_at, next_at)


class HostBudget:
    """The queue of one host: FIFO, woken by a loop timer, never polled."""

    def __init__(
        self, host: str, budgets: Budgets, rate: float | None = None, burst: int = 1
    ) -> None:
        self.host = host
        self._budgets = budgets
        self.rate, self.burst = rate, burst
        self._bucket: TokenBucket | None = None
        self.window: ServerWindow | None = None
        self.in_flight = 0
        self._sent = 0  # requests granted so far: the ticket of the last one
        self._heard = 0  # the ticket of the latest request whose answer the window is from
        self._queue: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def _wait(self, now: float) -> float:
        wait = 0.0
        if self.rate is not None:
            if self._bucket is None:
                self._bucket = TokenBucket.full(self.rate, self.burst, now)
            wait = self._bucket.wait(now)
        if self.window is not None:
            if self.window.expired(now):
                self.window = self.window.rolled(self.in_flight)
            wait = max(wait, self.window.wait(now, self._budgets.low_water, self.in_flight))
        return wait

    def _grant(self, now: float) -> int:
        if self._bucket is not None:
            self._bucket.take(now)
        if self.window is not None:
            self.window.sent(now, self._budgets.low_water, self._budgets.cap)
        self.in_flight += 1
        self._sent += 1
        return self._sent

    def _refusal(self, now: float, method: str, url: str) -> RegistryError | None:
        """An error when the server's budget is spent until further away than `cap`."""
        window = self.window
        if window is None or window.remaining > 0 or window.reset_at is None or self.in_flight:
            return None  # not spent, or the answers still to come will say
        wait = window.reset_at - now
        if wait <= self._budgets.cap:
            return None
        return RegistryError(
            f"the request budget of {self.host} is spent (its RateLimit headers leave none of "
            f"{window.limit} for more requests); it resets in {wait:.0f}s, longer than "
            f"retry_max_delay ({self._budgets.cap:g}s)",
            method=method,
            url=url,
            retryable=False,
        )

    async def take(self, method: str, url: str) -> int:
        """Wait for this host's turn for one request, and return its ticket (for `answered`);
        raise when the turn is too far away."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        refusal = self._refusal(now, method, url)
        if refusal is not None:
            raise refusal
        if not self._queue and self._wait(now) <= 0:
            return self._grant(now)
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append(waiter)
        self._arm(loop)
        shown = _Shown(self._budgets, current_spec.get(), self.host)
        timer = loop.call_later(SHOW_WAIT, shown.show)
        started = now
        try:
            while True:
                await waiter
                # Woken at the head of the queue. The token is taken now, as this task runs on
                # to send, not when the timer fired: under load the two can be far apart, and
                # tokens taken early would reach the wire together.
                now = loop.time()
                refusal = self._refusal(now, method, url)
                if refusal is not None:
                    raise refusal
                if self._wait(now) <= 0:
                    return self._grant(now)
                waiter = self._queue[0] = loop.create_future()  # still first in line
                self._arm(loop)
        finally:
            if self._queue and self._queue[0] is waiter:
                self._queue.popleft()
            elif waiter in self._queue:  # cancelled, or refused, while waiting
                self._queue.remove(waiter)
            self._arm(loop)
            timer.cancel()
            shown.unshow()
            waited = loop.time() - started
            if waited >= SHOW_WAIT:
                log.debug("waited %.1fs for the request budget of %s", waited, self.host)
            self._budgets.waited(self.host, waited)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """A timer to wake the head of the queue when its turn comes (unless woken already)."""
        if self._timer is None and self._queue and not self._queue[0].done():
            delay = self._wait(loop.time())
            if delay < math.inf:  # else the next answer arms it
                self._timer = loop.call_later(delay, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._queue or self._queue[0].done():
            return
        if self._wait(loop.time()) > 0:  # the server's window changed meanwhile
            self._arm(loop)
            return
        self._queue[0].set_result(None)

    def answered(
        self, ticket: int, said: RateLimit | None, now: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Request `ticket` came back (`said`: its RateLimit headers, if any). The window
        follows the answer of the latest request sent: an earlier one answered late says more
        is left than there is."""
        self.in_flight = max(0, self.in_flight - 1)
        if said is None or ticket <= self._heard:
            if self.window is not None and self.window.remaining <= 0:
                self._rearm(loop)  # a request waiting for an answer may ask now
            return
        self._heard = ticket
        next_at = self.window.next_at if self.window is not None else 0.0
        self.window = window_from(said, now, self.in_flight, next_at)
        self._refuse_queue(now)
        self._rearm(loop)

    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        """The wait may be shorter or longer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm(loop)

    def _refuse_queue(self, now: float) -> None:
        """Fail every waiting request at once when the server's reset is beyond the cap."""
        refusal = self._refusal(now, "", "")
        if refusal is None:
            return
        for waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(refusal)


class _Shown:
    """One waiting request's entry in `Budgets.waiting()`, once it has waited `SHOW_WAIT`."""

    def __init__(self, budgets: Budgets, spec: str | None, host: str) -> None:
        self._budgets, self._spec, self._host = budgets, spec, host
        self._on = False

    def show(self) -> None:
        if self._spec is not None:
            self._on = True
            self._budgets.show(self._spec, self._host)

    def unshow(self) -> None:
        if self._on and self._spec is not None:
            self._on = False
            self._budgets.unshow(self._spec)


class Budgets:
    """Every host's queue in one process; `limit` sets our own budget for a host."""

    def __init__(
        self, *, cap: float = 30.0, low_water: int = 8, events: BudgetEvents | None = None
    ) -> None:
        self.cap = cap  # retry_max_delay: the longest wait for a server's reset
        self.low_water = low_water
        self._events = events
        self._hosts: dict[str, HostBudget] = {}
        self._shown: dict[str, tuple[str, int]] = {}  # spec -> (host, requests waiting)
        self._view: Mapping[str, str] = MappingProxyType({})

    def limit(self, host: str, rate: float, burst: int | None = None) -> None:
        burst = burst if burst is not None else max(1, math.ceil(rate))
        self._hosts[host] = HostBudget(host, self, rate, burst)

    def host(self, host: str) -> HostBudget:
        budget = self._hosts.get(host)
        if budget is None:
            budget = self._hosts[host] = HostBudget(host, self)
        return budget

    async def take(self, host: str, method: str, url: str) -> int:
        """Wait for one request's turn to `host`; `method` and `url` name it in an error.
        Returns the request's ticket, for `answered`."""
        return await self.host(host).take(method, url)

    def answered(self, host: str, ticket: int, headers: Mapping[str, str] | None) -> None:
        """Request `ticket` to `host` came back with `headers` (None: no answer)."""
        said = parse_ratelimit(headers) if headers is not None else None
        if said is not None and self._events is not None:
            self._events.on_ratelimit(host, said.remaining)
        loop = asyncio.get_running_loop()
        self.host(host).answered(ticket, said, loop.time(), loop)

    def waited(self, host: str, seconds: float) -> None:
        if self._events is not None and seconds > 0:
            self._events.on_budget_wait(host, seconds)

    def waiting(self) -> Mapping[str, str]:
        """Specs with a request waiting for budget, and the host: one frozen view, safe to
        read from another thread (each change publishes a new one)."""
        return self._view

    def show(self, spec: str, host: str) -> None:
        _host, count = self._shown.get(spec, (host, 0))
        self._shown[spec] = (host, count + 1)
        self._publish()

    def unshow(self, spec: str) -> None:
        host, count = self._shown.get(spec, ("", 0))
        if count <= 1:
            self._shown.pop(spec, None)
        else:
            self._shown[spec] = (host, count - 1)
        self._publish()

    def _publish(self) -> None:
        self._view = MappingProxyType({spec: host for spec, (host, _n) in self._shown.items()})
