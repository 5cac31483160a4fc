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
from reconciler.logs import current_spec
from reconciler.model.desired import DesiredImage, build_desired
from reconciler.model.plan import build_plan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.observe import Observer
from reconciler.resolve import Resolver
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.engine")

__all__ = ["Engine", "RunReport", "SpecReport", "SpecState", "open_stores", "resolve_desired"]


def open_stores(
    settings: Settings, on_response: Callable[[str, str, int], None] | None = None
) -> Stores:
    """The stores the process settings describe (per-registry options, limits, retries)."""
    return Stores(
        settings.registry_options(),
        timeout=settings.timeout,
        concurrency=settings.concurrency,
        retry=settings.retry_policy(),
        on_response=on_response,
    )


class Engine:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.cache = ContentCache(settings.state_dir)
        self.progress = progress

    async def run(self, loaded: LoadResult, *, apply: bool) -> RunReport:
        """One pass: every valid spec reconciled (or planned), every invalid one reported."""
        resolver = Resolver(self.stores, self.cache, self.settings.max_uncompressed)
        observer = Observer(self.stores)
        executor = Executor(self.stores, self.progress) if apply else None
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
            log.info("%s: applied (%s)", spec.name, result.summary())
            return SpecReport(
                spec.file, SpecState.SYNCED, spec.name, desired, observed, plan, result
            )
        except (ReconcilerError, OSError) as exc:
            message = str(exc)
        except Exception as exc:
            log.debug("%s: unexpected error", spec.name, exc_info=True)
            message = f"internal error ({type(exc).__name__}: {exc}); please report it"
        log.error("%s: %s", spec.name, message)
        return SpecReport(
            spec.file, SpecState.FAILED, spec.name, desired, observed, plan, error=message
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
