"""Each spec's life in the daemon, as one frozen record and its transitions (no I/O, no clock).

```
            loaded (new, changed, or back)                      retry (its timer fired)
  (none) ------------------------------> QUEUED <------------------------------------+
                  asked (resync)           |                                          |
  SYNCED --------------------------------->|  started                                 |
    ^                                      v                                          |
    +-------------- succeeded --------- RUNNING ---------- failed -------------> BACKOFF
                                           |                                   (retry_at)
       INVALID <-- invalid ---- (any phase but ORPHANED) ---- deleted --> ORPHANED
```

- One reconcile of a spec at a time: only a QUEUED record starts, and a RUNNING one never
  starts again. What happens to a RUNNING record meanwhile is kept in `then` and takes effect
  when its run ends: QUEUED (asked again or changed: it runs once more after), INVALID or
  ORPHANED (its file broke or went away). A state seen in `/status` therefore changes only
  between runs, and pruning never races a push of the same spec.
- A failure backs off exponentially: 2 s doubling, capped at the resync interval. A resync
  does not cut a backoff short; a changed spec does (the operator touched it).
- INVALID leaves the registries alone: resyncs do not run the last valid spec of a broken file.
  When the file parses again the spec runs again, changed or not, so that its state is fresh.
- A record whose spec is deleted stays ORPHANED (its tags stay, unless prune is on) until a spec
  of that name comes back.

Transitions that do not apply to a record's phase return it unchanged, so the daemon can offer
an event to every record without checking phases first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from reconciler.daemon.status import InstanceStatus, SpecStatus, TagStatus
from reconciler.model.plan import SpecPlan
from reconciler.model.state import SpecState
from reconciler.spec import LoadedSpec

BACKOFF_BASE = 2.0


class Phase(StrEnum):
    QUEUED = "queued"  # wants a run; starts as soon as the daemon takes work
    RUNNING = "running"  # a reconcile is in flight
    SYNCED = "synced"  # the last run left the registries as the spec says
    BACKOFF = "backoff"  # the last run failed; runs again at retry_at
    INVALID = "invalid"  # its file no longer parses
    ORPHANED = "orphaned"  # its file is gone


_SHOWN = {
    Phase.QUEUED: SpecState.OUT_OF_SYNC,
    Phase.RUNNING: SpecState.PROGRESSING,
    Phase.SYNCED: SpecState.SYNCED,
    Phase.BACKOFF: SpecState.FAILED,
    Phase.INVALID: SpecState.INVALID,
    Phase.ORPHANED: SpecState.ORPHANED,
}


def backoff_delay(failures: int, cap: float) -> float:
    """Seconds before the next try after `failures` failures in a row."""
    # The exponent is bounded: 2.0 * 2**1100 does not fit a float, and the cap wins long before.
    return min(cap, BACKOFF_BASE * 2.0 ** min(max(failures - 1, 0), 64))


@dataclass(frozen=True)
class SpecRecord:
    name: str
    spec: LoadedSpec  # the last valid spec (still kept while INVALID or ORPHANED)
    fingerprint: str  # of the spec's body: a change of file or line alone is no change
    phase: Phase = Phase.QUEUED
    then: Phase | None = None  # RUNNING only: what it becomes when the run ends, if not its outcome
    failures: int = 0  # in a row
    retry_at: float = 0.0  # BACKOFF only: monotonic seconds
    message: str | None = None
    tags: tuple[TagStatus, ...] = ()
    last_attempt: float | None = None  # wall-clock seconds
    last_success: float | None = None
    # SYNCED only: what the last run reported, when it is not plain Synced (OutOfSync in
    # observe mode, Suspended, BaseMoved), and the plan it left to do.
    shown: SpecState | None = None
    plan: SpecPlan | None = None
    instances: tuple[InstanceStatus, ...] = ()  # a fan-out spec's images, as of its last pass

    @classmethod
    def new(cls, spec: LoadedSpec, fingerprint: str) -> SpecRecord:
        return cls(spec.name, spec, fingerprint)

    @property
    def settled(self) -> bool:
        """Nothing to do until an event comes (a BACKOFF's retry is one)."""
        return self.phase not in (Phase.QUEUED, Phase.RUNNING)

    def status(self) -> SpecStatus:
        settled = self.phase is Phase.SYNCED
        return SpecStatus(
            self.name,
            self.spec.file,
            (self.shown if settled else None) or _SHOWN[self.phase],
            self.tags,
            self.last_attempt,
            self.last_success,
            self.message,
            self.failures,
            self.plan if settled else None,
            self.instances,
            self.spec,
        )

    # -- events from the specs directory -------------------------------------------------

    def loaded(self, spec: LoadedSpec, fingerprint: str) -> SpecRecord:
        """The spec is in the directory (maybe in another file now)."""
        changed = fingerprint != self.fingerprint
        if self.phase is Phase.RUNNING:
            if changed or self.then is Phase.QUEUED:
                then: Phase | None = Phase.QUEUED
            else:
                then = None  # back, unchanged: the run in flight is of this very spec
            failures = 0 if changed else self.failures
            return replace(self, spec=spec, fingerprint=fingerprint, then=then, failures=failures)
        if changed or self.phase in (Phase.INVALID, Phase.ORPHANED):
            return replace(self, spec=spec, fingerprint=fingerprint, phase=Phase.QUEUED, failures=0)
        return replace(self, spec=spec)

    def invalid(self, error: str) -> SpecRecord:
        """Its file no longer parses: leave the registries alone, keep the last valid spec."""
        if self.phase is Phase.ORPHANED:
            return self
        if self.phase is Phase.RUNNING:
            return replace(self, then=Phase.INVALID, message=error)
        return replace(self, phase=Phase.INVALID, message=error)

    def deleted(self, message: str) -> SpecRecord:
        if self.phase is Phase.ORPHANED:
            return self
        if self.phase is Phase.RUNNING:
            return replace(self, then=Phase.ORPHANED, message=message)
        return replace(self, phase=Phase.ORPHANED, message=message)

    def note(self, message: str) -> SpecRecord:
        """A message that changes no phase (what pruning did)."""
        return replace(self, message=message)

    # -- events from the schedule ----------------------------------------------------------

    def asked(self) -> SpecRecord:
        """A resync: run again unless already going to, failing (backoff) or left alone."""
        if self.phase is Phase.SYNCED:
            return replace(self, phase=Phase.QUEUED)
        if self.phase is Phase.RUNNING and self.then is None:
            return replace(self, then=Phase.QUEUED)
        return self

    def retry(self, at: float) -> SpecRecord:
        """The backoff timer set for `at` fired; timers of earlier backoffs change nothing."""
        if self.phase is Phase.BACKOFF and self.retry_at == at:
            return replace(self, phase=Phase.QUEUED)
        return self

    # -- events from a pass ----------------------------------------------------------------

    def started(self, wall: float) -> SpecRecord:
        if self.phase is not Phase.QUEUED:
            return self
        return replace(self, phase=Phase.RUNNING, then=None, last_attempt=wall)

    def succeeded(
        self,
        tags: tuple[TagStatus, ...] | None,
        wall: float,
        shown: SpecState | None = None,
        plan: SpecPlan | None = None,
        message: str | None = None,
        instances: tuple[InstanceStatus, ...] | None = None,
    ) -> SpecRecord:
        """The run ended without error: Synced, or what it reported instead (`shown`: OutOfSync
        in observe mode with the `plan` left to do, Suspended, BaseMoved with a `message`)."""
        if self.phase is not Phase.RUNNING:
            return self
        ended = self.then or Phase.SYNCED
        keep = ended in (Phase.INVALID, Phase.ORPHANED)
        return replace(
            self,
            phase=ended,
            then=None,
            failures=0,
            message=self.message if keep else message,
            tags=self.tags if tags is None else tags,
            last_success=wall,
            shown=shown,
            plan=plan,
            instances=self.instances if instances is None else instances,
        )

    def failed(
        self,
        error: str | None,
        tags: tuple[TagStatus, ...] | None,
        now: float,
        delay: float,
        instances: tuple[InstanceStatus, ...] | None = None,
    ) -> SpecRecord:
        """The run failed; `delay` is `backoff_delay(failures + 1, ...)`, with any jitter."""
        if self.phase is not Phase.RUNNING:
            return self
        tags = self.tags if tags is None else tags
        instances = self.instances if instances is None else instances
        if self.then in (Phase.INVALID, Phase.ORPHANED):
            return replace(
                self,
                phase=self.then,
                then=None,
                failures=self.failures + 1,
                tags=tags,
                instances=instances,
            )
        # Asked again meanwhile (a resync or a change): the retry after the backoff is that run.
        # A change has reset `failures`, so its wait is the first, shortest one.
        return replace(
            self,
            phase=Phase.BACKOFF,
            then=None,
            failures=self.failures + 1,
            retry_at=now + delay,
            message=error,
            tags=tags,
            instances=instances,
        )

    def abandoned(self, message: str) -> SpecRecord:
        """The run was cancelled (shutdown): it did not finish, and nothing will retry it."""
        if self.phase is not Phase.RUNNING:
            return self
        ended = self.then if self.then in (Phase.INVALID, Phase.ORPHANED) else Phase.BACKOFF
        return replace(self, phase=ended, then=None, message=message)
