"""What the daemon knows about each spec, served as `/status` and counted in `/metrics`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    PROGRESSING = "Progressing"
    FAILED = "Failed"
    INVALID = "Invalid"
    ORPHANED = "Orphaned"


@dataclass
class TagStatus:
    target: str
    desired: str | None
    observed: str | None


@dataclass
class SpecStatus:
    key: str  # the spec's name, or its file while it has no valid name
    file: str
    state: State = State.OUT_OF_SYNC
    tags: list[TagStatus] = field(default_factory=list)
    last_attempt: float | None = None  # wall-clock seconds
    last_success: float | None = None
    message: str | None = None
    failures: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.key,
            "file": self.file,
            "state": str(self.state),
            "tags": [
                {"target": t.target, "desired": t.desired, "observed": t.observed}
                for t in self.tags
            ],
            "lastAttempt": _iso(self.last_attempt),
            "lastSuccess": _iso(self.last_success),
            "message": self.message,
            "consecutiveFailures": self.failures,
        }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class StatusBoard:
    """Shared between the event loop (writes) and the HTTP server's threads (reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, SpecStatus] = {}
        self.ready = False
        self.started = time.time()

    def get(self, key: str, file: str | None = None) -> SpecStatus:
        """The status of `key`, created if new; `file` updates where it was read from."""
        with self._lock:
            status = self._specs.get(key)
            if status is None:
                status = self._specs[key] = SpecStatus(key, file or "")
            if file is not None:
                status.file = file
            return status

    def drop(self, key: str) -> None:
        with self._lock:
            self._specs.pop(key, None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._specs)

    def counts(self) -> dict[State, int]:
        with self._lock:
            counts = dict.fromkeys(State, 0)
            for status in self._specs.values():
                counts[status.state] += 1
            return counts

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            specs = [s.as_json() for s in sorted(self._specs.values(), key=lambda s: s.key)]
        return {"ready": self.ready, "started": _iso(self.started), "specs": specs}
