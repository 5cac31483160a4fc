"""Bounds on every answer, in time, beyond the read timeout (docs/reliability.md, "Registries
you do not control").

The read timeout bounds one wait for bytes; a server that sends one byte per second never trips
it. So each request also has a deadline for its head and, for the small documents read whole
(manifests, configs, tokens, error bodies), for its body too; and a blob's body must keep up a
minimum rate over a sliding window, so that a slow but honest transfer of a 10 GiB layer goes
through and a trickle does not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WireLimits:
    deadline: float = 120.0  # seconds: an answer's head; a document's head and body together
    min_rate: int = 16 * 1024  # bytes per second a blob body keeps up, over each window
    window: float = 30.0  # seconds the rate is measured over (and the grace at the start)


class TooSlow(Exception):
    """A body under its minimum rate: how much came in how long."""

    def __init__(self, received: int, seconds: float, limits: WireLimits) -> None:
        self.received = received
        self.seconds = seconds
        super().__init__(
            f"{received} bytes in the last {seconds:.0f} s, under the minimum of "
            f"{limits.min_rate} bytes/s (min_transfer_rate) over {limits.window:g} s"
        )


class Progress:
    """The minimum-rate rule for one body: `add` each chunk as it arrives; TooSlow when, over
    the last `window` seconds, fewer than `min_rate * window` bytes came. The first window is
    measured at its end, so a body that ends within one window is never judged. No bytes at
    all for the read timeout is the read timeout's to end; this catches bytes that come often
    enough to keep that timer from firing, and too few to matter."""

    def __init__(self, limits: WireLimits) -> None:
        self._limits = limits
        self._mark = time.monotonic()  # start of the window being measured
        self._since_mark = 0

    def add(self, size: int) -> None:
        now = time.monotonic()
        self._since_mark += size
        limits = self._limits
        elapsed = now - self._mark
        if elapsed < limits.window:
            return
        if self._since_mark < limits.min_rate * elapsed:
            raise TooSlow(self._since_mark, elapsed, limits)
        self._mark, self._since_mark = now, 0
