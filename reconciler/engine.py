"""One reconcile pass over a set of specs: resolve -> build -> observe -> plan -> execute.

The CLI (`diff`, `apply`) and the daemon call this same engine. Specs run concurrently and
independently: a spec that fails is reported as Failed, and never stops the others. Requests
are shared across specs within one pass (a base tag is resolved once, a digest checked once,
a blob pushed once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from reconciler.cache import ContentCache
from reconciler.errors import ReconcilerError, SpecError
from reconciler.execute import Executor, Progress
from reconciler.lockfile import LockSet
from reconciler.logs import current_spec
from reconciler.model.desired import DesiredImage, build_desired
from reconciler.model.plan import build_plan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.observe import Observer
from reconciler.render import describe_applied
from reconciler.resolve import Resolver
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.engine")

__all__ = ["Engine", "RunReport", "SpecReport", "SpecState", "open_stores", "resolve_desired"]


def open_stores(
    settings: Settings,
    on_response: Callable[[str, str, int], None] | None = None,
    *,
    one_shot: bool = False,
) -> Stores:
    """The stores the process settings describe (per-registry options, limits, retries).

    `one_shot` for a command that runs once (diff, apply): a host that refuses its very first
    connection fails fast (Settings.retry_policy)."""
    return Stores(
        settings.registry_options(),
        timeout=settings.timeout,
        concurrency=settings.concurrency,
        retry=settings.retry_policy(one_shot=one_shot),
        on_response=on_response,
    )


class Engine:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        progress: Progress | None = None,
        *,
        use_locks: bool = True,
        watch_locked_bases: bool = False,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.cache = ContentCache(settings.state_dir)
        self.progress = progress
        self.use_locks = use_locks  # base tags from the lock files beside the specs
        self.watch_locked_bases = watch_locked_bases  # and say when a locked tag moved

    async def run(self, loaded: LoadResult, *, apply: bool) -> RunReport:
        """One pass: every valid spec reconciled (or planned), every invalid one reported."""
        locks = LockSet() if self.use_locks else None
        resolver = Resolver(self.stores, self.cache, self.settings.max_uncompressed, locks)
        observer = Observer(self.stores)
        executor = Executor(self.stores, self.progress) if apply else None
        expanded = await asyncio.gather(*(self._expand(spec, resolver) for spec in loaded.specs))
        failed = [e for e in expanded if isinstance(e, SpecReport)]
        specs = [one for e in expanded if not isinstance(e, SpecReport) for one in e]
        clashes = _clashes(specs)
        failed += [
            SpecReport(s.file, SpecState.FAILED, s.name, error=clashes[s.name], group=s.group)
            for s in specs
            if s.name in clashes
        ]
        reports = await asyncio.gather(
            *(
                self._one(spec, resolver, observer, executor)
                for spec in specs
                if spec.name not in clashes
            )
        )
        invalid = tuple(_invalid(error) for error in loaded.errors)
        ordered = sorted([*reports, *failed], key=lambda r: (r.file, r.name or ""))
        return RunReport(tuple(ordered) + invalid, apply)

    async def _expand(self, spec: LoadedSpec, resolver: Resolver) -> list[LoadedSpec] | SpecReport:
        """The specs a spec runs as: itself, or one per instance of a fan-out spec."""
        if not spec.body.fans_out or spec.body.suspend:
            return [spec]
        current_spec.set(spec.name)
        try:
            return list(await resolver.fan_out(spec))
        except ReconcilerError as exc:
            log.error("%s: %s", spec.name, exc)
            return SpecReport(spec.file, SpecState.FAILED, spec.name, error=str(exc))

    async def _one(
        self,
        spec: LoadedSpec,
        resolver: Resolver,
        observer: Observer,
        executor: Executor | None,
    ) -> SpecReport:
        desired = observed = plan = None
        current_spec.set(spec.name)  # this task's log lines carry the spec's name
        if spec.body.suspend:
            return SpecReport(spec.file, SpecState.SUSPENDED, spec.name)
        try:
            desired = await resolve_desired(spec, resolver)
            observed = await observer.observe(desired)
            plan = build_plan(desired, observed)
            result = None
            if executor is not None and not plan.in_sync:
                result = await executor.execute(plan)
                log.info("%s: applied: %s", spec.name, describe_applied(plan, result))
            elif executor is not None:
                log.info("%s: in sync", spec.name)
            applied = result is not None
            state = SpecState.SYNCED if plan.in_sync or applied else SpecState.OUT_OF_SYNC
            moved = await self._base_moved(spec, resolver) if state is SpecState.SYNCED else None
            if moved is not None:
                log.warning("%s: %s", spec.name, moved)
                state = SpecState.BASE_MOVED
            return SpecReport(
                spec.file,
                state,
                spec.name,
                desired,
                observed,
                plan,
                result,
                error=moved,
                group=spec.group,
            )
        except (ReconcilerError, OSError) as exc:
            message = str(exc)
        except Exception as exc:
            log.debug("%s: unexpected error", spec.name, exc_info=True)
            message = f"internal error ({type(exc).__name__}: {exc}); please report it"
        log.error("%s: %s", spec.name, message)
        return SpecReport(
            spec.file,
            SpecState.FAILED,
            spec.name,
            desired,
            observed,
            plan,
            error=message,
            group=spec.group,
        )

    async def _base_moved(self, spec: LoadedSpec, resolver: Resolver) -> str | None:
        """What to say when a locked base tag names another digest upstream now."""
        if not self.watch_locked_bases:
            return None
        moved = await resolver.base_moved(spec)
        locked = resolver.locked_base(spec) if moved is not None else None
        if moved is None or locked is None:
            return None
        return (
            f"base {spec.body.base} now names {moved.short} (locked: {locked.digest.short}); "
            "not rebuilt until the lock is updated in git"
        )


async def resolve_desired(spec: LoadedSpec, resolver: Resolver) -> DesiredImage:
    """A spec's desired image: its sources resolved, then built (shared with `save`)."""
    base = await resolver.resolve_base(spec)
    layers = await asyncio.gather(
        *(resolver.resolve_layer(spec, i) for i in range(len(spec.body.layers)))
    )
    return build_desired(spec, base, layers)


def _clashes(specs: list[LoadedSpec]) -> dict[str, str]:
    """Fan-out instances whose rendered target is another spec's target too: each fails with a
    message naming the other (specs without fan-out were checked when loaded)."""
    writers: dict[str, list[LoadedSpec]] = {}
    for spec in specs:
        for target in spec.body.targets:
            writers.setdefault(str(target), []).append(spec)
    clashes: dict[str, str] = {}
    for written, by in writers.items():
        if len(by) > 1 and any(s.group is not None for s in by):
            for spec in by:
                others = ", ".join(o.name for o in by if o is not spec)
                clashes[spec.name] = f"target {written} is written by {others} too; neither runs"
    return clashes


def _invalid(error: SpecError) -> SpecReport:
    return SpecReport(error.location.file, SpecState.INVALID, error.spec_name, error=str(error))
