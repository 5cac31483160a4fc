"""What the daemon tells notification endpoints, told from the changes of spec records.

No I/O here: `EventDetector.observe` is given a record before and after a change (and the
reports of the pass that made it, if a pass did) and returns the events it makes, remembering
per spec only what it needs to tell a transition from a repetition:

- **applied**: a pass pushed tags (old and new digest per tag, from its plan).
- **failed**: a spec starts failing (Failed or Invalid); retries while it still fails say nothing.
- **recovered**: a failing spec's pass succeeded again.
- **drift_repaired**: a pass moved a tag back to the digest the last good pass left there, so
  the desired image had not changed: someone else moved (or deleted) the tag.
- **base_moved**: a spec built from its lock enters BaseMoved; a spec that follows its tags: a
  pass pushed because the base digest the image is built on is not the last good pass's.
- **orphaned**: the spec's file is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.daemon.machine import Phase, SpecRecord
from reconciler.model.desired import BASE_DIGEST, DesiredImage
from reconciler.model.plan import SpecPlan
from reconciler.model.report import ExecResult, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.document import IndexDocument
from reconciler.render import describe_applied
from reconciler.settings import NotificationEvent

_FAILED = (SpecState.FAILED, SpecState.INVALID)


@dataclass(frozen=True)
class EventTag:
    """A target tag: for applied, drift_repaired and base_moved (follow) the digest it named
    before the push and the one it names now; for the other events, the digest it was last
    seen naming and the one the spec wants (null when not known)."""

    target: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Event:
    kind: NotificationEvent
    spec: str
    file: str
    state: SpecState
    message: str
    tags: tuple[EventTag, ...]
    time: datetime  # UTC
    id: str

    def as_json(self) -> dict[str, Any]:
        """The plain shape (docs/notifications.md); CloudEvents carry it as `data`."""
        return {
            "id": self.id,
            "type": self.kind,
            "spec": self.spec,
            "file": self.file,
            "state": str(self.state),
            "message": self.message,
            "tags": [{"target": t.target, "old": t.old, "new": t.new} for t in self.tags],
            "time": rfc3339(self.time),
        }


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def base_digest(desired: DesiredImage) -> str | None:
    """The digest of the base an image is built on, when the image says it: a mirror is its
    base; otherwise the base digest annotation (absent with `baseAnnotations: false`)."""
    root = desired.root
    if desired.mirror:
        return str(root.digest)
    if isinstance(root, IndexDocument):
        return (root.index.annotations or {}).get(BASE_DIGEST)
    return (root.manifest.annotations or {}).get(BASE_DIGEST)


@dataclass(frozen=True)
class _Applied:
    """A report of a pass that pushed, with its plan and result."""

    report: SpecReport
    plan: SpecPlan
    result: ExecResult

    @property
    def tags(self) -> tuple[EventTag, ...]:
        return tuple(
            EventTag(str(t.target), str(t.old) if t.old else None, str(t.new))
            for t in self.plan.tags
        )


@dataclass
class _Memory:
    """Per spec: whether it is failing or reported BaseMoved, and what the last good pass left."""

    failing: bool = False
    base_moved: bool = False
    held: dict[str, str] = field(default_factory=dict)  # target -> digest
    bases: dict[str, str] = field(default_factory=dict)  # instance name -> base digest


def _now() -> datetime:
    return datetime.now(UTC)


class EventDetector:
    def __init__(
        self, *, locked: bool | Callable[[str], bool], clock: Callable[[], datetime] = _now
    ) -> None:
        # Whether a spec is built from its lock (base_policy locked, or auto with a lock):
        # then its BaseMoved reports are events; else its rebuilds on a moved base are.
        self._locked = locked if callable(locked) else (lambda _: locked)
        self._clock = clock
        self._memory: dict[str, _Memory] = {}

    def observe(
        self, old: SpecRecord | None, new: SpecRecord, reports: Sequence[SpecReport] = ()
    ) -> list[Event]:
        """The events of one record's change; `reports` when a pass's outcome made it."""
        memory = self._memory.setdefault(new.name, _Memory())
        events: list[Event] = []
        failed_pass = any(r.state in _FAILED for r in reports)
        if reports and not failed_pass:
            events += self._succeeded(memory, new, reports)
        entered = old is None or old.phase is not new.phase
        starts_failing = (
            failed_pass
            or (entered and new.phase is Phase.INVALID)
            or (new.phase is Phase.BACKOFF and old is not None and new.failures > old.failures)
        )
        if new.phase is Phase.ORPHANED:
            if entered:
                events.append(self._make("orphaned", new, new.message or "spec deleted"))
                del self._memory[new.name]  # a spec of that name coming back starts afresh
        elif starts_failing and not memory.failing:
            memory.failing = True
            memory.base_moved = False
            errors = [r.error for r in reports if r.error and r.state in _FAILED]
            message = new.message or "; ".join(errors) or "failed"
            events.append(self._make("failed", new, message))
        return events

    def _succeeded(
        self, memory: _Memory, new: SpecRecord, reports: Sequence[SpecReport]
    ) -> Iterable[Event]:
        if memory.failing:
            memory.failing = False
            yield self._make("recovered", new, "reconciled again after failing")
        applied = [
            _Applied(r, r.plan, r.result)
            for r in reports
            if r.plan is not None and r.result is not None
        ]
        pushed = tuple(tag for a in applied for tag in a.tags)
        if pushed:
            what = "; ".join(describe_applied(a.plan, a.result) for a in applied)
            yield self._make("applied", new, f"applied: {what}", pushed)
        drifted = tuple(t for t in pushed if memory.held.get(t.target) == t.new)
        if drifted:
            names = ", ".join(t.target for t in drifted)
            message = f"{names}: moved or deleted by someone else; put back"
            yield self._make("drift_repaired", new, message, drifted)
        yield from self._base_moved(memory, new, reports, applied)
        for report in reports:
            if report.desired is None or report.state not in (
                SpecState.SYNCED,
                SpecState.BASE_MOVED,
            ):
                continue  # observe mode's OutOfSync left the tags where they were
            for target in report.desired.targets:
                memory.held[str(target)] = str(report.desired.root.digest)
            base = base_digest(report.desired)
            if base is not None:
                memory.bases[report.name or new.name] = base

    def _base_moved(
        self,
        memory: _Memory,
        new: SpecRecord,
        reports: Sequence[SpecReport],
        applied: Sequence[_Applied],
    ) -> Iterable[Event]:
        if self._locked(new.name):
            moved = [r for r in reports if r.state is SpecState.BASE_MOVED]
            if moved and not memory.base_moved:
                message = "; ".join(r.error or "base moved" for r in moved)
                yield self._make("base_moved", new, message)
            memory.base_moved = bool(moved)
            return
        for pushed in applied:
            report = pushed.report
            before = memory.bases.get(report.name or new.name)
            now = base_digest(report.desired) if report.desired is not None else None
            if before is None or now is None or before == now:
                continue
            base = new.spec.body.base or "the base"
            message = f"{base} moved from {before} to {now}; rebuilt"
            yield self._make("base_moved", new, message, pushed.tags)

    def _make(
        self,
        kind: NotificationEvent,
        record: SpecRecord,
        message: str,
        tags: tuple[EventTag, ...] | None = None,
    ) -> Event:
        if tags is None:
            tags = tuple(EventTag(t.target, t.observed, t.desired) for t in record.tags)
        status = record.status()
        return Event(
            kind,
            record.name,
            record.spec.file,
            status.state,
            message,
            tags,
            self._clock(),
            str(uuid.uuid4()),
        )
