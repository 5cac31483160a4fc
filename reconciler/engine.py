"""One reconcile pass over a set of specs: resolve -> build -> observe -> plan -> execute.

The CLI (`diff`, `apply`) and the daemon call this same engine. Specs run concurrently and
independently: a spec that fails is reported as Failed, and never stops the others. Requests
are shared across specs within one pass (a base tag is resolved once, a digest checked once,
a blob pushed once).

With a `spec_deadline` (the daemon's), each spec's reconcile (a fan-out spec's expansion, and
each of its instances) runs against a clock of its own, started when a worker takes it up:
past it, its work is cancelled, and with it whatever it started that no other spec waits for
(memo.Shared), so the concurrency slots, connections and budget turns it held are freed; it is
reported Failed, naming the deadline and the registry requests it was waiting on, and the other
specs go on. `on_spec` hears each spec's reports as soon as they are all in, so that a daemon
shows a finished spec without waiting for the slowest of its pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.attach import KEYS, Attacher, Provenance
from reconciler.blobmemory import BlobMemory
from reconciler.cache import ContentCache
from reconciler.errors import ReconcilerError, SettingsError, SpecError
from reconciler.lockfile import LockSet
from reconciler.logs import current_spec
from reconciler.model.desired import DesiredImage, build_desired
from reconciler.model.plan import build_plan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.sources import ResolvedBase, ResolvedLayer
from reconciler.model.state import SpecState
from reconciler.observe import Observer
from reconciler.render import describe_applied
from reconciler.resolve import Resolver
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult
from reconciler.store.open import Stores
from reconciler.store.registry.budget import BudgetEvents
from reconciler.trust.config import PolicySource
from reconciler.verify import Verifier

if TYPE_CHECKING:
    from reconciler.execute import Executor, Progress

log = logging.getLogger("reconciler.engine")

T = TypeVar("T")
# Specs in flight at once, per unit of `concurrency` (requests at once per registry): enough to
# keep every registry's slots busy, few enough that memory does not grow with the spec count.
SPECS_PER_SLOT = 16

__all__ = [
    "Engine",
    "RunReport",
    "SpecReport",
    "SpecState",
    "open_stores",
    "resolve_desired",
    "resolve_sources",
]


def open_stores(
    settings: Settings,
    on_response: Callable[[str, str, int], None] | None = None,
    *,
    one_shot: bool = False,
    on_budget: BudgetEvents | None = None,
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
        on_budget=on_budget,
        limits=settings.wire_limits(),
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
        require_locks: bool = False,
        last_pass: bool = False,
        spec_deadline: float | None = None,
        on_spec: Callable[[str, list[SpecReport]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.cache = ContentCache(settings.state_dir)
        self.progress = progress
        self.use_locks = use_locks  # base tags from the lock files beside the specs
        self.watch_locked_bases = watch_locked_bases  # and say when a locked tag moved
        self.require_locks = require_locks  # and fail a spec that no lock covers
        # The process ends after this pass (a one-shot command): what it leaves is not collected.
        self.last_pass = last_pass
        self.spec_deadline = spec_deadline  # seconds each spec may take (the daemon's)
        self.on_spec = on_spec  # told (spec name, its reports) as each spec ends

    def _provenance(self) -> Provenance | None:
        """What this run's provenance statements say about it; None without signing or with
        provenance turned off."""
        settings = self.settings
        if settings.signing is None or not settings.provenance.enabled:
            return None
        internal = {"basePolicy": settings.base_policy if self.use_locks else "follow"}
        return Provenance(settings.provenance.builder_id, settings.specs_dir, internal)

    async def run(self, loaded: LoadResult, *, apply: bool) -> RunReport:
        """One pass: every valid spec reconciled (or planned), every invalid one reported."""
        with _FROZEN_HEAP.held(collect=not self.last_pass):
            return await self._run(loaded, apply=apply)

    async def _run(self, loaded: LoadResult, *, apply: bool) -> RunReport:
        locks = LockSet() if self.use_locks else None
        resolver = Resolver(
            self.stores,
            self.cache,
            self.settings.max_uncompressed,
            locks,
            require_locks=self.require_locks,
        )
        memory = BlobMemory.in_state_dir(self.settings.state_dir)  # where blobs were seen
        observer = Observer(self.stores, memory)
        executor = None
        if apply:  # a diff never loads the executor (nor what it imports)
            from reconciler.execute import Executor

            executor = Executor(self.stores, self.progress, memory)
        try:
            trust: PolicySource | SettingsError | None = self.settings.trust_source()
        except SettingsError as exc:  # every spec it guards fails with it; none runs unchecked
            trust = exc
        verifier = Verifier(self.stores, self.cache, resolver, trust)
        attacher = Attacher(
            self.stores,
            resolver,
            observer,
            self.cache,
            KEYS,
            self.settings.key_source(),
            apply=apply,
            provenance=self._provenance(),
        )
        at_once = self.settings.concurrency * SPECS_PER_SLOT
        expanded = await _bounded(
            (self._expand_by_deadline(s, resolver) for s in loaded.specs),
            min(at_once, len(loaded.specs)),
        )
        failed = [e for e in expanded if isinstance(e, SpecReport)]
        specs = [one for e in expanded if not isinstance(e, SpecReport) for one in e]
        clashes = _clashes(specs)
        failed += [
            SpecReport(s.file, SpecState.FAILED, s.name, error=clashes[s.name], group=s.group)
            for s in specs
            if s.name in clashes
        ]
        told = _Told(self.on_spec, specs)  # a spec with a clash is told with the pass

        async def one(spec: LoadedSpec) -> SpecReport:
            work = self._one(spec, resolver, verifier, observer, attacher, executor)
            report = await self._by_deadline(spec, work)
            told.add(spec, report)
            return report

        try:
            reports = await _bounded(
                (one(spec) for spec in specs if spec.name not in clashes),
                min(at_once, len(specs)),  # no idle workers for a run of one spec
            )
        finally:
            memory.save()  # what this pass learned, merged into the file (atomic)
        invalid = tuple(_invalid(error) for error in loaded.errors)
        ordered = sorted([*reports, *failed], key=lambda r: (r.file, r.name or ""))
        return RunReport(tuple(ordered) + invalid, apply)

    async def _expand_by_deadline(
        self, spec: LoadedSpec, resolver: Resolver
    ) -> list[LoadedSpec] | SpecReport:
        return await self._by_deadline(spec, self._expand(spec, resolver))

    async def _by_deadline(self, spec: LoadedSpec, work: Coroutine[Any, Any, T]) -> T | SpecReport:
        """`work` for `spec`, within spec_deadline (when there is one); past it, cancelled and
        a Failed report naming the deadline and what the spec was waiting on."""
        seconds = self.spec_deadline
        if seconds is None:
            return await work
        loop = asyncio.get_running_loop()
        waited: list[str] = []

        def expire() -> None:
            # Asked before the cancellation unwinds the requests in flight.
            waited.extend(self.stores.waiting_on(spec.name))
            timer.reschedule(loop.time())

        current_spec.set(spec.name)  # the requests it sends are its own (waiting_on)
        try:
            async with asyncio.timeout(None) as timer:
                alarm = loop.call_later(seconds, expire)
                try:
                    return await work
                finally:
                    alarm.cancel()
        except TimeoutError:
            if not timer.expired():
                raise  # not ours: the work's own (it reports those itself)
        on = (
            f"it was waiting on {'; '.join(waited)}"
            if waited
            else "no request of its own on the wire: it was waiting for a concurrency slot, or "
            "for work another spec started"
        )
        message = (
            f"spec {spec.name}: pass over spec_deadline ({seconds:g} s), cancelled ({on}); "
            "its concurrency slots are free, and the next pass tries it again"
        )
        log.error("%s", message)  # it names the spec
        return SpecReport(
            spec.file, SpecState.FAILED, spec.name, error=message, group=spec.group, overdue=True
        )

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
        verifier: Verifier,
        observer: Observer,
        attacher: Attacher,
        executor: Executor | None,
    ) -> SpecReport:
        desired = observed = plan = None
        current_spec.set(spec.name)  # this task's log lines carry the spec's name
        if spec.body.suspend:
            return SpecReport(spec.file, SpecState.SUSPENDED, spec.name)
        try:
            base, layers = await resolve_sources(spec, resolver)
            await verifier.verify_sources(spec, base, layers)  # before anything is built
            desired = build_desired(spec, base, layers)
            observed = await observer.observe(desired)
            plan = build_plan(desired, observed)
            result = None
            async with attacher.claim(spec, desired):  # its artifact tags: one writer at a time
                artifacts = await attacher.plan(spec, desired, base)
                if artifacts:
                    plan = replace(plan, artifacts=artifacts)
                if executor is not None and not plan.in_sync:
                    try:
                        result = await executor.execute(plan)
                    except BaseException:
                        attacher.unsure(plan)  # the next claimant asks the store again
                        raise
                    attacher.pushed(plan)
            if result is not None:
                log.info("%s: applied: %s", spec.name, describe_applied(plan, result))
            elif executor is not None:
                log.info("%s: in sync", spec.name)
            applied = result is not None
            state = SpecState.SYNCED if plan.in_sync or applied else SpecState.OUT_OF_SYNC
            synced = state is SpecState.SYNCED
            moved = await self._base_moved(spec, resolver, applied) if synced else None
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
            field = _target_of(exc, spec) if desired is not None else None
            if field is not None and not message.startswith(spec.file):
                message = f"{spec.location(field)}: {message}"
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

    async def _base_moved(self, spec: LoadedSpec, resolver: Resolver, applied: bool) -> str | None:
        """What to say when a locked base tag names another digest upstream now, and what
        this pass did about it (`applied`: it wrote the locked build's tags back)."""
        if not self.watch_locked_bases:
            return None
        moved = await resolver.base_moved(spec)
        locked = resolver.locked_base(spec) if moved is not None else None
        if moved is None or locked is None:
            return None
        did = (
            "put the tags back on the build from the locked digest"
            if applied
            else "the tags stay on the build from the locked digest"
        )
        return (
            f"base {spec.body.base} now names {moved.short} (locked: {locked.digest.short}); "
            f"{did} until the lock is updated in git"
        )


async def resolve_sources(
    spec: LoadedSpec, resolver: Resolver
) -> tuple[ResolvedBase | None, list[ResolvedLayer]]:
    """A spec's base and layers, resolved. An error names the spec's file, line and field."""
    try:
        base = await resolver.resolve_base(spec)
    except ReconcilerError as exc:
        raise located(exc, spec, ("base",)) from None

    async def layer(index: int) -> ResolvedLayer:
        try:
            return await resolver.resolve_layer(spec, index)
        except ReconcilerError as exc:
            raise located(exc, spec, ("layers", index)) from None

    layers = await asyncio.gather(*(layer(i) for i in range(len(spec.body.layers))))
    return base, list(layers)


def located(
    exc: ReconcilerError, spec: LoadedSpec, field: tuple[str | int, ...]
) -> ReconcilerError:
    """`exc`, its message led by where in the spec it comes from (file:line: spec.field),
    unless it names its place already."""
    text = str(exc)
    if not text.startswith(spec.file):
        exc.args = (f"{spec.location(field)}: {text}",)
    return exc


def _target_of(exc: BaseException, spec: LoadedSpec) -> tuple[str | int, ...] | None:
    """The target field an error of the observe or push phase is about: the one whose
    registry (and repository) its message names."""
    text = str(exc)
    base = spec.base_address()
    source_host = base.location.authority if base is not None else None
    best: tuple[int, tuple[str | int, ...]] | None = None
    for index, target in enumerate(spec.body.targets):
        location = target.location
        host, repository = location.authority, location.repository
        named = f"{host}/{repository}" in text or f"{host}/v2/{repository}/" in text
        # The host alone only where no source lives on it: a copy's failure is not a target's.
        score = 2 if named else (1 if host in text and host != source_host else 0)
        if score and (best is None or score > best[0]):
            best = (score, ("targets", index))
    return best[1] if best is not None else None


async def resolve_desired(spec: LoadedSpec, resolver: Resolver) -> DesiredImage:
    """A spec's desired image, its sources resolved (unverified: the engine and `save` verify
    between the two steps)."""
    base, layers = await resolve_sources(spec, resolver)
    return build_desired(spec, base, layers)


class _FrozenHeap:
    """Passes with what existed before them (specs, settings, caches, modules) out of the
    garbage collector's sight: a collection of the older generations walked all of it, again
    and again (over 10,000 specs, a no-op took 19.4 s of CPU with the collector, 16.3 s with
    it off). What a pass creates is collected as usual. When the last pass running ends (a
    daemon's may overlap), the heap is handed back and collected once, whole: what a pass left
    in reference cycles, and what a reload dropped, is freed before the next pass freezes the
    heap again. A one-shot command's pass (`collect=False`) skips that collection: the process
    exits next, and over 10,000 specs it was 0.3 s of wall."""

    def __init__(self) -> None:
        self.running = 0

    @contextlib.contextmanager
    def held(self, collect: bool = True) -> Iterator[None]:
        if self.running == 0:
            gc.freeze()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0:
                gc.unfreeze()
                if collect:
                    gc.collect()


_FROZEN_HEAP = _FrozenHeap()


async def _bounded(works: Iterable[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Await `works` (made lazily, as the iterable is read) at most `limit` at a time; their
    results in their order. Ten thousand specs are not ten thousand tasks and coroutines alive
    at once, each with its frames and requests: the registries' slots bound what runs anyway,
    and a spec only waits on work that a started spec began (memo tasks, first copies)."""
    results: dict[int, T] = {}
    items = enumerate(works)

    async def worker() -> None:
        for i, work in items:  # one iterator, shared: each item is taken once
            results[i] = await work

    await asyncio.gather(*(worker() for _ in range(limit)))
    return [results[i] for i in range(len(results))]


class _Told:
    """Tells `on_spec` each spec's reports as soon as all of them are in (a fan-out spec's
    instances report under the spec's name)."""

    def __init__(
        self, on_spec: Callable[[str, list[SpecReport]], None] | None, specs: list[LoadedSpec]
    ) -> None:
        self._on_spec = on_spec
        self._left: dict[str, int] = {}
        self._reports: dict[str, list[SpecReport]] = {}
        for spec in specs:
            name = spec.group or spec.name
            self._left[name] = self._left.get(name, 0) + 1

    def add(self, spec: LoadedSpec, report: SpecReport) -> None:
        if self._on_spec is None:
            return
        name = spec.group or spec.name
        self._reports.setdefault(name, []).append(report)
        self._left[name] -= 1
        if self._left[name] == 0:
            self._on_spec(name, self._reports.pop(name))


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
