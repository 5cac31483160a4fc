"""`reconciler run`: the long-lived reconciler.

- A full pass at start; `/readyz` answers 200 once it is done.
- watchdog watches the specs directory. Any event (editor rename-saves, deletes, new files,
  `..data` symlink swaps from ConfigMaps and git-sync) re-arms a debounce timer; when it fires,
  the directory is read again (in a worker thread) and offered to every spec's record: changed
  or new specs are reconciled, vanished ones become Orphaned, files that no longer parse mark
  their specs Invalid and leave the registries alone. Bursts coalesce into one read.
- apscheduler resyncs every spec on an interval with jitter, never overlapping itself: that is
  what catches drift (a tag moved by someone else) and base moves (a base tag that now names a
  new digest).
- Webhooks (http.py serves them, hooks.py reads them): a registry's push asks exactly the specs
  built on the pushed repository to run, after `hooks.debounce` (one window per burst); a git
  hook is a file event.
- Each spec's life is one `SpecRecord` (`machine.py`: its phases and transitions); this module
  only feeds it events and does the I/O they call for. Every change of a record goes through
  `_commit`, which also shows it on `/status`, wakes whoever waits for it, and starts the
  backoff timer or the prune it calls for. Every QUEUED spec is started by `_dispatch`, as one
  pass (a pass shares requests across its specs). Nothing polls: waits are futures resolved by
  `_commit`, retries are loop timers.
- Each spec's outcome is committed as soon as that spec ends, not with the pass: a spec that
  stalls on a registry never holds back what the others show. A spec past `spec_deadline` is
  cancelled by the engine (its slots freed) and fails like any other, naming the deadline.
- With `shard: i/N`, only specs whose name hashes to i are reconciled.
- SIGTERM/SIGINT: stop watching and scheduling, let in-flight passes finish within
  `shutdown_grace`, abandon the rest (pushes are ordered, so that is safe), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog import events
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from reconciler.attach import spec_key_source, writes_provenance
from reconciler.daemon.events import EventDetector, rfc3339
from reconciler.daemon.hooks import Push, SourceIndex
from reconciler.daemon.http import HookTargets, HttpServer
from reconciler.daemon.machine import Phase, SpecRecord, backoff_delay
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notify import Notifier
from reconciler.daemon.prune import Pruner, WrittenTags
from reconciler.daemon.scan import Scan, scan_specs
from reconciler.daemon.status import (
    EventNote,
    InstanceStatus,
    LineageStep,
    SpecStatus,
    StatusBoard,
    TagStatus,
    lineage_of,
)
from reconciler.engine import Engine, SpecReport, open_stores
from reconciler.errors import SettingsError, SpecError
from reconciler.model.state import SpecState
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.daemon")


# What changes a spec: never a file being opened or read. Asked of inotify itself, so reading the
# specs (every scan, every pass's lock files) raises no events: they had kept watchdog's
# threads busy, holding the interpreter lock, through a pass over 10,000 specs.
_CHANGES: list[type[FileSystemEvent]] = [
    events.DirCreatedEvent,
    events.DirDeletedEvent,
    events.DirModifiedEvent,
    events.DirMovedEvent,
    events.FileCreatedEvent,
    events.FileDeletedEvent,
    events.FileModifiedEvent,
    events.FileMovedEvent,
    events.FileClosedEvent,
]
# What changes the entry specs_dir goes through, in its parent's watch: the entry made, removed or
# moved onto (git-sync's swap of a link). Not modifications: a log written beside specs_dir
# would raise an event per line in watchdog's thread, through a whole pass.
_ENTRIES: list[type[FileSystemEvent]] = [
    events.DirCreatedEvent,
    events.DirDeletedEvent,
    events.DirMovedEvent,
    events.FileCreatedEvent,
    events.FileDeletedEvent,
    events.FileMovedEvent,
]


class _Events(FileSystemEventHandler):
    """Pokes the loop on a change; `only`: about that path alone (in the parent's watch, the
    entry specs_dir goes through: a log file written beside it must not rescan the specs at
    each line, as a daemon logging there did through a whole pass)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, poke: Callable[[], None], only: str | None = None
    ) -> None:
        self._loop = loop
        self._poke = poke
        self._only = only

    def on_any_event(self, event: FileSystemEvent) -> None:
        # No "opened" or "closed_no_write" events arrive: both watches are scheduled with an
        # event_filter (_CHANGES, _ENTRIES) that asks inotify for changes only.
        if self._only is not None and self._only not in (
            os.fsdecode(event.src_path),
            os.fsdecode(event.dest_path),
        ):
            return
        self._loop.call_soon_threadsafe(self._poke)


def tags_of(report: SpecReport) -> tuple[TagStatus, ...] | None:
    """Desired and observed digest per target; None when the pass got no desired image."""
    if report.desired is None:
        return None
    digest = str(report.desired.root.digest)
    if report.state in (SpecState.SYNCED, SpecState.BASE_MOVED):  # BaseMoved: synced to its lock
        return tuple(TagStatus(str(t), digest, digest) for t in report.desired.targets)
    observed = {t.target: t.digest for t in report.observed.tags} if report.observed else {}
    return tuple(
        TagStatus(str(t), digest, str(observed[t]) if observed.get(t) else None)
        for t in report.desired.targets
    )


# The phases a registry hook queues a spec from (asked() leaves the others alone).
_ASKABLE = (Phase.SYNCED, Phase.QUEUED, Phase.RUNNING)

# A spec's state when its fan-out instances differ: the first of these that any of them has.
_WORST = (
    SpecState.FAILED,
    SpecState.INVALID,
    SpecState.OUT_OF_SYNC,
    SpecState.BASE_MOVED,
    SpecState.SUSPENDED,
    SpecState.SYNCED,
    SpecState.PROGRESSING,
    SpecState.ORPHANED,
)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        index, _, count = settings.shard.partition("/")
        self.shard, self.shards = int(index), int(count)
        self.board = StatusBoard()
        self.board.mode, self.board.base_policy = settings.mode, settings.base_policy
        self.metrics = Metrics(self.board)
        targets = HookTargets(self._on_pushes, self._on_fs_event)
        self.server = HttpServer(settings, self.board, self.metrics, targets)
        self.written = WrittenTags(settings.state_dir / "daemon" / "written-tags.json")
        self.notifier = Notifier.from_settings(settings, self.metrics.notifications)
        self.events = EventDetector(locked=self._built_from_lock)
        self._records: dict[str, SpecRecord] = {}  # every spec this replica knows, by name
        self._policy_split: tuple[int, int] | None = None  # specs (locked, following) last told
        self._last_settled: dict[
            str, SpecState
        ] = {}  # observe mode: each spec's last settled state
        self._waiters: list[tuple[frozenset[str], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scanning = asyncio.Lock()  # reads of the directory apply in the order they ran
        self._debounce: asyncio.TimerHandle | None = None
        self._hooked: set[str] = set()  # specs registry hooks asked for, until _hook_timer
        self._hook_timer: asyncio.TimerHandle | None = None
        self._sources = SourceIndex()
        self._stopping = asyncio.Event()
        self._dispatching = False  # a _dispatch is scheduled for this turn of the loop
        self._registries: Stores | None = None
        self._observer: BaseObserver | None = None
        self._handler: _Events | None = None
        self._watched: ObservedWatch | None = None
        self._watched_real: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if not self.settings.specs_dir.is_dir():
            log.error("specs_dir %s is not a directory", self.settings.specs_dir)
            return 1
        if (problem := self.notifier.check()) is not None:
            log.error("%s", problem)
            return 1
        self.notifier.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        try:
            port = self.server.open()
        except (SettingsError, OSError) as exc:
            log.error("cannot serve HTTP on %s: %s", self.settings.listen, exc)
            return 1
        serving = asyncio.ensure_future(self.server.serve())
        log.info("serving /healthz /readyz /metrics /status /hooks on port %d", port)
        stores = open_stores(self.settings, self.metrics.on_response, on_budget=self.metrics)
        async with stores as registries:
            self._registries = registries
            self.board.waiting = registries.budgets.waiting  # specs waiting for request budget
            observer = self._start_watching(loop)
            scheduler = AsyncIOScheduler()
            interval = self.settings.resync_interval
            job = scheduler.add_job(
                self.resync,
                "interval",
                seconds=interval,
                jitter=interval * self.settings.resync_jitter,
                max_instances=1,
                coalesce=True,
            )

            def next_resync() -> float | None:
                due = getattr(job, "next_run_time", None)
                return due.timestamp() if due is not None else None

            self.board.next_resync = next_resync
            try:
                await self._serve(scheduler)
            finally:
                log.info("stopping: no new work; waiting up to %ss", self.settings.shutdown_grace)
                observer.stop()
                if scheduler.running:
                    scheduler.shutdown(wait=False)
                await self._drain()
                observer.join(timeout=5)
        await self.notifier.close(self.settings.notification_flush)
        self.server.stop()
        await serving
        log.info("stopped")
        return 0

    def _start_watching(self, loop: asyncio.AbstractEventLoop) -> BaseObserver:
        observer = Observer()
        self._observer, self._handler = observer, _Events(loop, self._on_fs_event)
        # The parent too: git-sync swaps the link that specs_dir goes through there.
        entry = self.settings.specs_dir.absolute()
        swaps = _Events(loop, self._on_fs_event, only=str(entry))
        observer.schedule(swaps, str(entry.parent), recursive=False, event_filter=_ENTRIES)
        self._watch_specs()
        observer.start()
        return observer

    async def _serve(self, scheduler: AsyncIOScheduler) -> None:
        """The first full pass, then resyncs on schedule, until SIGTERM."""
        first = asyncio.ensure_future(self.resync())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({first, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self._stopping.is_set():
                return  # `first` may have returned early for it: that is no full pass
            first.result()
            self.board.ready = True
            log.info("first full pass done; ready")
            scheduler.start()
            await stop
        finally:
            first.cancel()
            stop.cancel()

    def _stop(self) -> None:
        self._stopping.set()
        if self._debounce is not None:
            self._debounce.cancel()
        if self._hook_timer is not None:
            self._hook_timer.cancel()
        for _names, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _drain(self) -> None:
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("abandoned %d in-flight task(s) at shutdown", len(late))
                await asyncio.wait(late, timeout=5)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- records: the one place they change ----------------------------------------------

    def _commit(
        self,
        records: Iterable[SpecRecord],
        reports: Mapping[str, list[SpecReport]] | None = None,
    ) -> None:
        """Store new records, show them on /status at once, do what entering a phase asks, and
        notify what the change means (`reports`: of the pass that made it, by spec name)."""
        changed = []
        for record in records:
            old = self._records.get(record.name)
            if record is old:
                continue  # the transition did not apply to its phase
            self._records[record.name] = record
            changed.append(record)
            self._notify(old, record, (reports or {}).get(record.name, []))
            if old is None or old.phase is not record.phase:
                self._entered(record)
            self._observed(record)
        if changed:
            self.board.update(r.status() for r in changed)
        self._wake_waiters()

    def _notify(
        self, old: SpecRecord | None, record: SpecRecord, reports: list[SpecReport]
    ) -> None:
        for event in self.events.observe(old, record, reports):
            self.notifier.emit(event)  # never blocks: deliveries run in their own tasks
            note = EventNote(event.kind, rfc3339(event.time), str(event.state), event.message)
            self.board.noted(record.name, note)

    def _observed(self, record: SpecRecord) -> None:
        """In observe mode, a settled spec turning OutOfSync, and back, is said: nothing is
        written, so the log is where an operator learns of it."""
        if self.settings.mode != "observe" or record.phase is not Phase.SYNCED:
            return
        now = record.shown or SpecState.SYNCED
        before = self._last_settled.get(record.name)  # the last settled state, across passes
        self._last_settled[record.name] = now
        if now is before:
            return
        if now is SpecState.OUT_OF_SYNC:
            plan = record.plan
            changes = (
                f"{len(plan.blobs)} blob(s), {len(plan.manifests)} manifest(s), "
                f"{len(plan.tags)} tag(s) to push"
                if plan is not None
                else "changes to push"
            )
            log.warning("%s is OutOfSync (observe mode, nothing written): %s", record.name, changes)
        elif now is SpecState.SYNCED and before is SpecState.OUT_OF_SYNC:
            log.info("%s is in sync again (observe mode)", record.name)

    def _entered(self, record: SpecRecord) -> None:
        name, stopping = record.name, self._stopping.is_set()
        if record.phase is Phase.BACKOFF and not stopping:
            loop = asyncio.get_running_loop()
            log.warning(
                "%s failed %d time(s) in a row; next try in %.1fs",
                name,
                record.failures,
                record.retry_at - loop.time(),
            )
            loop.call_at(record.retry_at, self._retry, name, record.retry_at)
        elif record.phase is Phase.INVALID:
            log.error("%s is invalid now; its tags are left alone: %s", name, record.message)
        elif record.phase is Phase.ORPHANED:
            log.warning("%s: spec deleted; now Orphaned", name)
            if self.settings.prune and not stopping:
                self._start(self._prune(name))

    def _retry(self, name: str, at: float) -> None:
        record = self._records.get(name)
        if record is not None:
            self._commit([record.retry(at)])
            self._dispatch()

    def _dispatch(self) -> None:
        """Start one pass over every QUEUED spec."""
        if self._stopping.is_set():
            return
        wall = time.time()
        started = [r.started(wall) for r in self._records.values() if r.phase is Phase.QUEUED]
        if started:
            self._commit(started)
            self._start(self._pass(tuple(r.spec for r in started)))

    def _wake_waiters(self) -> None:
        waiting = []
        for names, waiter in self._waiters:
            if waiter.done():
                continue  # its waiter was cancelled
            if all(self._settled(n) for n in names):
                waiter.set_result(None)
            else:
                waiting.append((names, waiter))
        self._waiters = waiting

    def _settled(self, name: str) -> bool:
        record = self._records.get(name)
        return record is None or record.settled

    async def _until_settled(self, names: Iterable[str]) -> None:
        pending = frozenset(n for n in names if not self._settled(n))
        if not pending or self._stopping.is_set():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((pending, waiter))
        await waiter

    # -- what to reconcile ---------------------------------------------------------------

    def _watch_specs(self) -> None:
        """Watch where specs_dir leads now; follow it when a link swap moves it."""
        real = self.settings.specs_dir.resolve()
        if self._observer is None or self._handler is None:
            return
        if real == self._watched_real or not real.is_dir():
            return
        if self._watched is not None:
            self._observer.unschedule(self._watched)
        self._watched = self._observer.schedule(
            self._handler, str(real), recursive=True, event_filter=_CHANGES
        )
        self._watched_real = real

    def _spec_hosts(self, limit: int = 8) -> list[str]:
        """The registry hosts this replica's specs take bases from (for a hook that matched
        none of them)."""
        hosts: set[str] = set()
        for record in self._records.values():
            address = record.spec.base_address()
            if address is not None and address.location.is_registry:
                hosts.add(address.location.authority)
        shown = sorted(hosts)
        return shown[:limit] + (["..."] if len(shown) > limit else [])

    async def _on_pushes(self, pushes: Sequence[Push]) -> int:
        """A registry hook: queue the specs the pushes concern, once the burst is over; how
        many. Matching reads the specs only, so events about anything else cost no request;
        it runs in a thread (the first match after a change of many specs parses them all)."""
        if self._stopping.is_set():
            return 0
        specs = [(r.spec, r.fingerprint) for r in self._records.values() if r.phase in _ASKABLE]
        names = await asyncio.to_thread(self._sources.wanting, specs, pushes)
        if self._stopping.is_set():
            return 0
        shown = ", ".join(str(p) for p in pushes[:5]) + (" ..." if len(pushes) > 5 else "")
        if names or not pushes:
            log.info("registry hook: %s; %d spec(s) queued", shown or "no push", len(names))
        else:
            # Said at INFO with the hosts compared: a registry that reports itself as localhost
            # while the specs name 127.0.0.1 is found here in a minute.
            log.info(
                "registry hook: %s; no spec of this replica uses it (pushed to %s; the specs "
                "name %s)",
                shown,
                ", ".join(sorted({p.host for p in pushes})),
                ", ".join(self._spec_hosts()) or "no registry",
            )
        if names:
            self._hooked.update(names)
            if self._hook_timer is None:  # a fixed window from the burst's first event
                loop = asyncio.get_running_loop()
                self._hook_timer = loop.call_later(self.settings.hooks.debounce, self._run_hooked)
        return len(names)

    def _run_hooked(self) -> None:
        self._hook_timer = None
        names, self._hooked = self._hooked, set()
        self._commit([self._records[n].asked() for n in names if n in self._records])
        self._dispatch()

    def _on_fs_event(self) -> None:
        if self._stopping.is_set():
            return
        if self._debounce is not None:
            self._debounce.cancel()
        loop = asyncio.get_running_loop()
        self._debounce = loop.call_later(self.settings.debounce, self._rescan_soon)

    def _rescan_soon(self) -> None:
        self._debounce = None
        self._start(self._rescan_and_dispatch())

    async def _rescan_and_dispatch(self) -> None:
        await self.rescan()
        self._dispatch()

    async def rescan(self) -> None:
        """Read the specs directory again and offer what it holds to every record."""
        async with self._scanning:
            self._watch_specs()
            dir_ = self.settings.specs_dir
            locked = self.settings.uses_locks
            scan = await asyncio.to_thread(scan_specs, dir_, self.shard, self.shards, locked)
            self._apply_scan(scan)

    def _apply_scan(self, scan: Scan) -> None:
        bad_files = scan.bad_files
        mine = {s.spec.name: s for s in scan.specs}
        self._show_policy({name: s.locked for name, s in mine.items()})
        updates = [
            self._records[name].loaded(s.spec, s.fingerprint)
            if name in self._records
            else SpecRecord.new(s.spec, s.fingerprint)
            for name, s in mine.items()
        ]
        gone = "spec deleted; tags left in place" + (" (pruning)" if self.settings.prune else "")
        for name, record in self._records.items():
            if name in mine:
                continue
            error = bad_files.get(record.spec.file)
            # A broken file keeps its specs known: once it is fixed they come back unchanged.
            updates.append(record.deleted(gone) if error is None else record.invalid(str(error)))
        self._commit(updates)
        self._show_bad_files(bad_files)

    def _built_from_lock(self, name: str) -> bool:
        policy = self.settings.base_policy
        return policy == "locked" or (
            policy == "auto" and self.board.policies.get(name) == "locked"
        )

    def _show_policy(self, locked: dict[str, bool]) -> None:
        """Which specs are built from their lock: on /status, and in the log when it changes
        (the first scan included)."""
        policy = self.settings.base_policy
        self.board.policies = {n: "locked" if on else "follow" for n, on in locked.items()}
        split = (sum(locked.values()), len(locked) - sum(locked.values()))
        if split == self._policy_split:
            return
        self._policy_split = split
        held, following = split
        if policy == "follow":
            log.info(
                "base_policy follow: %d spec(s) follow their tags; locks are not read", following
            )
        elif policy == "locked":
            log.info(
                "base_policy locked: %d spec(s) built from their reconciler.lock; %d have none "
                "and fail until it is written",
                held,
                following,
            )
        else:
            log.info(
                "base_policy auto: %d spec(s) built from their reconciler.lock (a moved tag is "
                "reported as BaseMoved, not rebuilt); %d follow their tags (no lock)",
                held,
                following,
            )

    def _show_bad_files(self, bad_files: dict[str, SpecError]) -> None:
        """Files with no spec known from them still show on /status, by file."""
        known = {r.spec.file for r in self._records.values() if r.phase is not Phase.ORPHANED}
        stale = [k for k in self.board.names() if k.startswith("file:") and k[5:] not in bad_files]
        shown = [
            SpecStatus(f"file:{file}", file, SpecState.INVALID, message=str(error))
            for file, error in bad_files.items()
            if file not in known
        ]
        self.board.update(shown, drop=stale)
        if shown:
            self.metrics.reconciles.labels("invalid").inc(len(shown))

    async def resync(self) -> None:
        """Everything again: the specs directory, then every spec against the registries."""
        began, wall = time.monotonic(), time.time()
        self.board.resync(wall)
        await self.rescan()
        self._commit([r.asked() for r in self._records.values()])
        self._dispatch()
        # Wait for the runs this resync asked for; a spec backing off runs when its time comes.
        await self._until_settled(list(self._records))
        if self.board.last_resync == wall:  # not overtaken by a later one
            self.board.resync(wall, time.monotonic() - began)

    # -- one pass ------------------------------------------------------------------------

    async def _pass(self, specs: tuple[LoadedSpec, ...]) -> None:
        assert self._registries is not None  # noqa: S101 - set before any pass starts
        # The specs of this pass not yet committed: one that ended early may be running in a
        # later pass by the time this one ends, and is no longer this pass's to touch.
        names = dict.fromkeys(spec.name for spec in specs)  # a set, in the pass's order
        started = time.monotonic()

        def ended(name: str, reports: list[SpecReport]) -> None:
            if name in names:
                del names[name]
                self._end_pass([name], reports)
                self._dispatch_soon()  # asked again meanwhile: it need not wait for the pass

        try:
            locked = self.settings.uses_locks
            engine = Engine(
                self.settings,
                self._registries,
                use_locks=locked,
                watch_locked_bases=locked,
                require_locks=self.settings.base_policy == "locked",
                spec_deadline=self.settings.spec_deadline,
                on_spec=ended,
            )
            apply = self.settings.mode == "apply"
            with self.metrics.counting_pass():
                report = await engine.run(LoadResult(specs, (), len(specs)), apply=apply)
        except asyncio.CancelledError:
            self._commit(self._records[n].abandoned("abandoned at shutdown") for n in names)
            raise
        else:
            self._end_pass(list(names), report.specs)
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
            # Only a bug gets here with specs still RUNNING; they must not stay so for ever.
            now = asyncio.get_running_loop().time()
            delay = backoff_delay(1, self.settings.resync_interval)
            error = "the reconcile pass stopped unexpectedly; see the daemon's log"
            self._commit(self._records[n].failed(error, None, now, delay) for n in names)
        self._dispatch()

    def _dispatch_soon(self) -> None:
        """One `_dispatch` for the specs that end in one turn of the loop (a batch, not a pass
        per spec)."""
        if not self._dispatching:
            self._dispatching = True
            asyncio.get_running_loop().call_soon(self._dispatch_now)

    def _dispatch_now(self) -> None:
        self._dispatching = False
        self._dispatch()

    def _end_pass(self, names: list[str], reports: Iterable[SpecReport]) -> None:
        by_name: dict[str, list[SpecReport]] = {}
        for report in reports:  # a fan-out spec's instances report under the spec's name
            by_name.setdefault(report.group or report.name or "", []).append(report)
        now, wall = asyncio.get_running_loop().time(), time.time()
        self._commit(
            [
                self._outcome(self._records[name], by_name[name], now, wall)
                for name in names
                if name in by_name
            ],
            by_name,
        )

    def _outcome(
        self, record: SpecRecord, reports: list[SpecReport], now: float, wall: float
    ) -> SpecRecord:
        state = min((r.state for r in reports), key=_WORST.index)
        tags = tuple(t for r in reports for t in tags_of(r) or ())
        errors = [r.error for r in reports if r.error and r.state is state]
        if len(reports) > 1:  # name the instance each message is about
            errors = [f"{r.name}: {r.error}" for r in reports if r.error and r.state is state]
        error = "; ".join(errors) or None
        if len(reports) == 1 and reports[0].group is None:
            self.board.traced(record.name, self._lineage(record.spec, reports[0]))
        # A fan-out spec's images under the names the CLI gives them (`py[3.12.2-slim]`).
        instances = tuple(
            InstanceStatus(r.name or "", r.state, tags_of(r) or (), r.error)
            for r in reports
            if r.group is not None
        )
        if state in (SpecState.FAILED, SpecState.INVALID):
            self.metrics.reconciles.labels("failed").inc()
            if any(r.overdue for r in reports):
                self.metrics.spec_deadlines.inc()
            delay = backoff_delay(record.failures + 1, self.settings.resync_interval)
            delay *= random.uniform(1.0, 1.2)  # noqa: S311 - jitter, so failures spread out
            return record.failed(error, tags or None, now, delay, instances)
        self.metrics.reconciles.labels("synced").inc()
        for report in reports:
            self._count(record.name, report)
        if state is SpecState.SYNCED:
            return record.succeeded(tags or None, wall, instances=instances)
        # Observe mode's OutOfSync keeps its plan for /status (one plan: a fan-out spec's
        # instances show their tags, and `diff` their plans); BaseMoved says what moved.
        plans = [r.plan for r in reports if r.state is SpecState.OUT_OF_SYNC]
        plan = plans[0] if len(reports) == 1 and plans else None
        return record.succeeded(tags or None, wall, state, plan, error, instances)

    def _lineage(self, spec: LoadedSpec, report: SpecReport) -> tuple[LineageStep, ...]:
        """What the spec's page draws: its image from source to what stands beside it."""
        desired = report.desired
        signed = (
            spec_key_source(spec, self.settings.key_source()) is not None
            and desired is not None
            and any(t.location.is_registry for t in desired.targets)
        )
        attested = signed and self.settings.provenance.enabled and writes_provenance(spec)
        return lineage_of(report, spec.body.base, signed=signed, attested=attested)

    def _count(self, name: str, report: SpecReport) -> None:
        """Metrics of what a report's apply did, and the tags it wrote (for prune)."""
        if report.plan is None or report.result is None:
            return
        result = report.result
        for action, count in (
            ("mounted", result.mounted),
            ("copied", result.copied),
            ("uploaded", result.uploaded),
            ("skipped", result.skipped),
        ):
            self.metrics.blobs.labels(action).inc(count)
        self.metrics.bytes.inc(result.bytes_pushed)
        self.written.add(name, [(str(t.target), str(t.new)) for t in report.plan.tags])

    async def _prune(self, name: str) -> None:
        assert self._registries is not None  # noqa: S101 - set before any pass starts
        message = await Pruner(self._registries, self.written).prune(name)
        record = self._records.get(name)
        if record is not None and record.phase is Phase.ORPHANED:  # not back meanwhile
            self._commit([record.note(message)])


def run_daemon(settings: Settings) -> int:
    return asyncio.run(Daemon(settings).run())
