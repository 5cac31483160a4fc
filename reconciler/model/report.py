"""What a pass tells about each spec: its state, what was desired, observed, planned and done."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model.desired import DesiredImage
from reconciler.model.observed import ObservedImage
from reconciler.model.plan import SpecPlan
from reconciler.model.state import SpecState


@dataclass(frozen=True)
class ExecResult:
    """What executing one plan did."""

    mounted: int = 0
    copied: int = 0
    uploaded: int = 0
    skipped: int = 0
    bytes_pushed: int = 0
    manifests: int = 0  # the image's own: its manifests and index
    tags: int = 0  # the image's target tags set
    artifacts: int = 0  # artifacts written beside it: signatures, carried tags, referrers


@dataclass(frozen=True)
class SpecReport:
    file: str
    state: SpecState
    name: str | None = None
    desired: DesiredImage | None = None
    observed: ObservedImage | None = None
    plan: SpecPlan | None = None
    result: ExecResult | None = None
    error: str | None = None
    group: str | None = None  # a fan-out instance: the name of the spec it was expanded from
    overdue: bool = False  # cancelled at the daemon's spec_deadline


@dataclass(frozen=True, repr=False)
class RunReport:
    specs: tuple[SpecReport, ...]
    applied: bool

    def __repr__(self) -> str:
        # Short: asyncio.run builds the repr of its main task, result included, when it puts
        # back the SIGINT handler; every spec's desired image and plan there was a string of
        # about 20 KiB per spec, made at the end of each `apply` (the run's peak memory).
        return f"RunReport({len(self.specs)} specs, applied={self.applied})"

    def count(self, state: SpecState) -> int:
        return sum(1 for s in self.specs if s.state is state)

    @property
    def ok(self) -> bool:
        return not (self.count(SpecState.FAILED) or self.count(SpecState.INVALID))
