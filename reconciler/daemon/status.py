"""What the daemon shows about each spec, served as `/status` and counted in `/metrics`.

The event loop writes, the HTTP server's threads read. Instead of a lock around mutable
entries, every `SpecStatus` is frozen and replaced whole, and each write publishes a new sorted
tuple of them (`BoardView`) with one reference assignment; a reader takes that reference once
and works on a view that nothing changes under it, so it never sees half of an update.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.model.desired import BASE_DIGEST
from reconciler.model.plan import SpecPlan
from reconciler.model.report import SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.document import IndexDocument
from reconciler.oci.location import Location
from reconciler.oci.reference import Reference
from reconciler.render import plan_json
from reconciler.spec import LoadedSpec

PENDING = ("blobs", "bytes", "manifests", "tags")


@dataclass(frozen=True)
class TagStatus:
    target: str
    desired: str | None
    observed: str | None


def _tags_json(tags: tuple[TagStatus, ...]) -> list[dict[str, str | None]]:
    return [{"target": t.target, "desired": t.desired, "observed": t.observed} for t in tags]


@dataclass(frozen=True)
class InstanceStatus:
    """One image of a fan-out spec, named as the CLI names it (`py[3.12.2-slim]`)."""

    name: str
    state: SpecState
    tags: tuple[TagStatus, ...] = ()
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": str(self.state),
            "tags": _tags_json(self.tags),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class EventNote:
    """An event the daemon made for a spec (docs/notifications.md), as its page lists it."""

    kind: str  # applied, failed, recovered, drift_repaired, base_moved, orphaned
    time: str  # RFC 3339, UTC
    state: str
    message: str


EVENTS_KEPT = 10  # per spec, the newest: what its page shows


@dataclass(frozen=True, slots=True)  # one list of them per spec: 10,000 in a large daemon
class LineageStep:
    """One step from source to what runs, as a spec's page draws it: the base, a layer and
    where it comes from, the image built and its children, what stands beside it."""

    kind: str  # base, base layers, layer, path layer, index, manifest, child, beside
    name: str
    digest: str | None = None
    detail: str = ""  # a platform, a size, a tag


def lineage_of(
    report: SpecReport, base: str, *, signed: bool = False, attested: bool = False
) -> tuple[LineageStep, ...]:
    """The lineage of one image from its last pass (`base` as the spec writes it)."""
    desired = report.desired
    if desired is None:
        return ()
    root = desired.root
    notes = (
        root.index.annotations if isinstance(root, IndexDocument) else root.manifest.annotations
    ) or {}
    if not notes.get(BASE_DIGEST) and desired.manifests:
        notes = desired.manifests[0].document.manifest.annotations or {}
    steps = [LineageStep("base", base, notes.get(BASE_DIGEST))]
    try:
        base_repo = str(Location.of(Reference.parse(base)))
    except ReconcilerError:  # scratch, a local store: none of its layers comes from a registry
        base_repo = None
    seen: set[str] = set()
    inherited = 0
    for manifest in desired.manifests:
        for blob in manifest.blobs:
            digest = str(blob.descriptor.digest)
            if blob.role != "layer" or digest in seen:
                continue
            seen.add(digest)
            size = f"{blob.descriptor.size:,} bytes"
            if blob.source is None:
                steps.append(LineageStep("path layer", "built here from files", digest, size))
            elif str(blob.source) == base_repo or (
                base_repo is None and not blob.source.is_registry
            ):
                inherited += 1
            else:
                steps.append(LineageStep("layer", str(blob.source), digest, size))
    if inherited:
        steps.insert(1, LineageStep("base layers", f"{inherited} from the base"))
    kind = "index" if isinstance(root, IndexDocument) else "manifest"
    steps.append(LineageStep(kind, desired.name, str(root.digest)))
    if isinstance(root, IndexDocument):
        steps += [
            LineageStep("child", str(m.platform or ""), str(m.document.digest))
            for m in desired.manifests
        ]
    tag = f"{root.digest.algorithm}-{root.digest.hex}"
    if signed:
        steps.append(LineageStep("beside", "cosign signature", None, f"{tag}.sig"))
    if attested:
        steps.append(LineageStep("beside", "SLSA provenance (signed)", None, f"{tag}.att"))
    if report.plan is not None:
        steps += [
            LineageStep("beside", f"{a.kind}: {a.label}", None, "to push")
            for a in report.plan.artifacts
        ]
    return tuple(steps)


@dataclass(frozen=True)
class SpecStatus:
    key: str  # the spec's name, or "file:<file>" while the file has no valid spec
    file: str
    state: SpecState = SpecState.OUT_OF_SYNC
    tags: tuple[TagStatus, ...] = ()
    last_attempt: float | None = None  # wall-clock seconds
    last_success: float | None = None
    message: str | None = None
    failures: int = 0
    plan: SpecPlan | None = None  # what the spec still needs (observe mode), as diff shows it
    instances: tuple[InstanceStatus, ...] = ()  # a fan-out spec's images, as of its last pass
    # The last valid spec, for the status page's spec page (not in /status; not compared).
    spec: LoadedSpec | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"plan": plan_json(self.plan)} if self.plan is not None else {}
        if self.instances:
            shown["instances"] = [i.as_json() for i in self.instances]
        return shown | {
            "name": self.key,
            "file": self.file,
            "state": str(self.state),
            "tags": _tags_json(self.tags),
            "lastAttempt": _iso(self.last_attempt),
            "lastSuccess": _iso(self.last_success),
            "message": self.message,
            "consecutiveFailures": self.failures,
        }

    def pending(self) -> dict[str, int]:
        """What its plan would push: blobs, bytes, manifests and tags (0 when in sync)."""
        plan = self.plan
        if plan is None:
            return dict.fromkeys(PENDING, 0)
        return {
            "blobs": len(plan.blobs),
            "bytes": plan.bytes_to_push,
            "manifests": len(plan.manifests),
            "tags": len(plan.tags),
        }


@dataclass(frozen=True)
class BoardView:
    """Every spec's status at one moment, sorted by key."""

    specs: tuple[SpecStatus, ...] = ()

    def counts(self) -> dict[SpecState, int]:
        counts = dict.fromkeys(SpecState, 0)
        for status in self.specs:
            counts[status.state] += 1
        return counts

    def pending(self) -> dict[str, int]:
        """What every spec's plan would push, added up (observe mode)."""
        total = dict.fromkeys(PENDING, 0)
        for status in self.specs:
            for kind, count in status.pending().items():
                total[kind] += count
        return total


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class StatusBoard:
    """Written from the event loop only; read from any thread through `view`."""

    def __init__(self) -> None:
        self._specs: dict[str, SpecStatus] = {}  # the loop's own copy, never shared
        self.view = BoardView()
        self._generation = 0  # one more at each change of what a snapshot shows
        self._ready = False
        self.started = time.time()
        # Spec name -> host, for specs with a request waiting on a request budget (set by the
        # daemon to the transport's frozen view; read once per snapshot).
        self.waiting: Callable[[], Mapping[str, str]] = dict
        # Spec name -> "locked" or "follow": whether its build comes from a lock file. Replaced
        # whole by the daemon at each read of the specs directory.
        self._policies: Mapping[str, str] = {}
        self.mode = "apply"
        self.base_policy = "auto"
        # The resyncs, for the status page: when the last began and how long it took (None
        # until one ended), and when the next is due (set by the daemon to its scheduler's).
        self.last_resync: float | None = None
        self.last_resync_seconds: float | None = None
        self.next_resync: Callable[[], float | None] = lambda: None
        self._events: dict[str, tuple[EventNote, ...]] = {}  # spec name -> newest last
        self._lineages: dict[str, tuple[LineageStep, ...]] = {}  # spec name -> its last pass's

    @property
    def ready(self) -> bool:
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        self._generation += 1

    @property
    def policies(self) -> Mapping[str, str]:
        return self._policies

    @policies.setter
    def policies(self, value: Mapping[str, str]) -> None:
        self._policies = value
        self._generation += 1

    def noted(self, spec: str, note: EventNote) -> None:
        """An event of `spec`: its page shows the last EVENTS_KEPT."""
        self._events[spec] = (*self._events.get(spec, ())[-(EVENTS_KEPT - 1) :], note)
        self._generation += 1

    def traced(self, spec: str, steps: tuple[LineageStep, ...]) -> None:
        """A spec's lineage as its last pass saw it (kept when a pass got no image)."""
        if steps and steps != self._lineages.get(spec):
            self._lineages[spec] = steps
            self._generation += 1

    def lineage(self, spec: str) -> tuple[LineageStep, ...]:
        return self._lineages.get(spec, ())

    def events(self, spec: str) -> tuple[EventNote, ...]:
        """The spec's last events, the newest first."""
        return tuple(reversed(self._events.get(spec, ())))

    def resync(self, began: float, seconds: float | None = None) -> None:
        """A resync began at `began` (wall clock), or ended after `seconds`."""
        self.last_resync, self.last_resync_seconds = began, seconds
        self._generation += 1

    def version(self) -> str:
        """A tag for what `snapshot` would show now, for ETags: it changes whenever the view,
        readiness, the policies or the specs waiting for a request budget do. Read it before
        the snapshot: a view landing between the two then costs one more full answer, never
        a stale 304."""
        waiting = sorted(self.waiting().items())
        mark = hashlib.blake2b(repr(waiting).encode(), digest_size=6).hexdigest()
        return f"{int(self.started * 1000):x}-{self._generation}-{mark}"

    def names(self) -> list[str]:
        return list(self._specs)

    def update(self, statuses: Iterable[SpecStatus] = (), drop: Iterable[str] = ()) -> None:
        """Replace (or add) `statuses` and remove `drop`, then publish one new view."""
        for key in drop:
            self._specs.pop(key, None)
        for status in statuses:
            self._specs[status.key] = status
        self.view = BoardView(tuple(sorted(self._specs.values(), key=lambda s: s.key)))
        self._generation += 1

    def counts(self) -> dict[SpecState, int]:
        return self.view.counts()

    def pending(self) -> dict[str, int]:
        return self.view.pending()

    def snapshot(self) -> dict[str, Any]:
        view = self.view  # one read: the rest works on this view even if a new one lands
        waiting = self.waiting()
        policies = self.policies
        return {
            "ready": self.ready,
            "started": _iso(self.started),
            "mode": self.mode,
            "basePolicy": self.base_policy,
            "specs": [
                s.as_json()
                | ({"basePolicy": policies[s.key]} if s.key in policies else {})
                | ({"waiting": f"request budget of {waiting[s.key]}"} if s.key in waiting else {})
                for s in view.specs
            ],
        }
