"""One reconcile pass over a set of specs: resolve -> build -> observe -> plan -> execute.

The CLI (`diff`, `apply`) and the daemon call this same engine. Specs run concurrently and
independently: a spec that fails is reported as Failed, and never stops the others. Requests
are shared across specs within one pass (a base tag is resolved once, a digest checked once,
a blob pushed once).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

from reconciler.cache import ContentCache
from reconciler.desired import DesiredImage, build_desired
from reconciler.errors import ReconcilerError, SpecError
from reconciler.execute import ExecResult, Executor, Progress
from reconciler.logs import current_spec
from reconciler.observe import ObservedImage, Observer
from reconciler.plan import SpecPlan, build_plan
from reconciler.registry.client import Registries
from reconciler.resolve import Resolver
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult

log = logging.getLogger("reconciler.engine")


class SpecState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    FAILED = "Failed"
    INVALID = "Invalid"


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


@dataclass(frozen=True)
class RunReport:
    specs: tuple[SpecReport, ...]
    applied: bool

    def count(self, state: SpecState) -> int:
        return sum(1 for s in self.specs if s.state is state)

    @property
    def ok(self) -> bool:
        return not (self.count(SpecState.FAILED) or self.count(SpecState.INVALID))


class Engine:
    def __init__(
        self,
        settings: Settings,
        registries: Registries,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.registries = registries
        self.cache = ContentCache(settings.state_dir)
        self.progress = progress

    async def run(self, loaded: LoadResult, *, apply: bool) -> RunReport:
        """One pass: every valid spec reconciled (or planned), every invalid one reported."""
        resolver = Resolver(self.registries, self.cache, self.settings.max_uncompressed)
        observer = Observer(self.registries)
        executor = Executor(self.registries, self.progress) if apply else None
        reports = await asyncio.gather(
            *(self._one(spec, resolver, observer, executor) for spec in loaded.specs)
        )
        invalid = tuple(_invalid(error) for error in loaded.errors)
        ordered = sorted(reports, key=lambda r: (r.file, r.name or ""))
        return RunReport(tuple(ordered) + invalid, apply)

    async def _one(
        self,
        spec: LoadedSpec,
        resolver: Resolver,
        observer: Observer,
        executor: Executor | None,
    ) -> SpecReport:
        desired = observed = plan = None
        current_spec.set(spec.name)  # this task's log lines carry the spec's name
        try:
            desired = await resolve_desired(spec, resolver)
            observed = await observer.observe(desired)
            plan = build_plan(desired, observed)
            if executor is None or plan.in_sync:
                state = SpecState.SYNCED if plan.in_sync else SpecState.OUT_OF_SYNC
                return SpecReport(spec.file, state, spec.name, desired, observed, plan)
            result = await executor.execute(plan)
            log.info("%s: applied (%s)", spec.name, _summary(result))
            return SpecReport(
                spec.file, SpecState.SYNCED, spec.name, desired, observed, plan, result
            )
        except (ReconcilerError, OSError) as exc:
            log.error("%s: %s", spec.name, exc)
            return SpecReport(
                spec.file, SpecState.FAILED, spec.name, desired, observed, plan, error=str(exc)
            )


async def resolve_desired(spec: LoadedSpec, resolver: Resolver) -> DesiredImage:
    """A spec's desired image: its sources resolved, then built (shared with `save`)."""
    base = await resolver.resolve_base(spec)
    layers = await asyncio.gather(
        *(resolver.resolve_layer(spec, i) for i in range(len(spec.body.layers)))
    )
    return build_desired(spec, base, layers)


def _invalid(error: SpecError) -> SpecReport:
    return SpecReport(error.location.file, SpecState.INVALID, error=str(error))


def _summary(result: ExecResult) -> str:
    return (
        f"{result.mounted} mounted, {result.copied} copied, {result.uploaded} uploaded, "
        f"{result.manifests} manifests, {result.tags} tags"
    )
