"""`reconciler run`: the long-lived reconciler.

- A full pass at start; `/readyz` answers 200 once it is done.
- watchdog watches the specs directory. Any event (editor rename-saves, deletes, new files,
  `..data` symlink swaps from ConfigMaps and git-sync) re-arms a debounce timer; when it fires,
  the directory is loaded again and compared with what is known, spec by spec: changed or new
  specs are reconciled, vanished ones become Orphaned, files that no longer parse mark their
  specs Invalid and leave the registries alone. Bursts coalesce into one load.
- apscheduler resyncs every spec on an interval with jitter, never overlapping itself: that is
  what catches drift (a tag moved by someone else) and base moves (a base tag that now names a
  new digest).
- One reconcile of a spec at a time: a spec asked for again while in flight runs once more
  after. A failing spec backs off exponentially (2 s doubling, capped at the resync interval);
  other specs go on.
- With `shard: i/N`, only specs whose name hashes to i are reconciled.
- SIGTERM/SIGINT: stop watching and scheduling, let in-flight passes finish within
  `shutdown_grace`, abandon the rest (pushes are ordered, so that is safe), exit 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from reconciler.daemon.http import Metrics, StatusServer
from reconciler.daemon.prune import Pruner, WrittenTags
from reconciler.daemon.status import State, StatusBoard, TagStatus
from reconciler.engine import Engine, SpecReport, SpecState
from reconciler.registry.client import Registries
from reconciler.settings import Settings
from reconciler.spec import LoadedSpec, LoadResult, load_specs

log = logging.getLogger("reconciler.daemon")

BACKOFF_BASE = 2.0


def shard_of(name: str, shards: int) -> int:
    """A stable hash of the spec's name (the same on every replica and every run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % shards


def _fingerprint(spec: LoadedSpec) -> str:
    return hashlib.sha256(spec.body.model_dump_json().encode()).hexdigest()


class _Events(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, poke: Callable[[], None]) -> None:
        self._loop = loop
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self._loop.call_soon_threadsafe(self._poke)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        index, _, count = settings.shard.partition("/")
        self.shard, self.shards = int(index), int(count)
        self.board = StatusBoard()
        self.metrics = Metrics(self.board)
        self.server = StatusServer(settings.listen, self.board, self.metrics)
        self.written = WrittenTags(settings.state_dir / "daemon" / "written-tags.json")
        self._specs: dict[str, LoadedSpec] = {}
        self._prints: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._inflight: set[str] = set()
        self._backoff_until: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._debounce: asyncio.TimerHandle | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._registries: Registries | None = None
        self._observer: BaseObserver | None = None
        self._handler: _Events | None = None
        self._watched: ObservedWatch | None = None
        self._watched_real: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        specs_dir = self.settings.specs_dir
        if not specs_dir.is_dir():
            log.error("specs_dir %s is not a directory", specs_dir)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self.server.start()
        log.info("serving /healthz /readyz /metrics /status on port %d", self.server.port)
        async with Registries.from_settings(self.settings, self.metrics.on_response) as registries:
            self._registries = registries
            observer = Observer()
            self._observer, self._handler = observer, _Events(loop, self._on_fs_event)
            # The parent too: git-sync swaps the link that specs_dir goes through there.
            observer.schedule(self._handler, str(specs_dir.absolute().parent), recursive=False)
            self._watch_specs()
            observer.start()
            scheduler = AsyncIOScheduler()
            interval = self.settings.resync_interval
            scheduler.add_job(
                self.resync,
                "interval",
                seconds=interval,
                jitter=interval * self.settings.resync_jitter,
                max_instances=1,
                coalesce=True,
            )
            try:
                first = asyncio.ensure_future(self.resync())
                stop = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({first, stop}, return_when=asyncio.FIRST_COMPLETED)
                if first.done():
                    self.board.ready = True
                    log.info("first full pass done; ready")
                    scheduler.start()
                    await stop
                else:
                    first.cancel()
            finally:
                log.info("stopping: no new work; waiting up to %ss", self.settings.shutdown_grace)
                observer.stop()
                if scheduler.running:
                    scheduler.shutdown(wait=False)
                await self._drain()
                observer.join(timeout=5)
        self.server.stop()
        log.info("stopped")
        return 0

    async def _drain(self) -> None:
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("abandoned %d in-flight reconcile(s) at shutdown", len(late))
                await asyncio.wait(late, timeout=5)

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
        self._watched = self._observer.schedule(self._handler, str(real), recursive=True)
        self._watched_real = real

    def _on_fs_event(self) -> None:
        if self._stopping.is_set():
            return
        if self._debounce is not None:
            self._debounce.cancel()
        loop = asyncio.get_running_loop()
        self._debounce = loop.call_later(self.settings.debounce, self._rescan_soon)

    def _rescan_soon(self) -> None:
        self._debounce = None
        self._kick(self.rescan())

    def rescan(self) -> list[str]:
        """Load the specs directory; return the names that changed (new or different)."""
        self._watch_specs()
        loaded = load_specs([self.settings.specs_dir])
        mine = {s.name: s for s in loaded.specs if shard_of(s.name, self.shards) == self.shard}
        bad_files = {e.location.file: e for e in loaded.errors}
        changed = []
        for name, spec in mine.items():
            print_ = _fingerprint(spec)
            if self._prints.get(name) != print_:
                changed.append(name)
                self._prints[name] = print_
                self._backoff_until.pop(name, None)
                self.board.get(name, spec.file).failures = 0
            self._specs[name] = spec
        for name in [n for n in self._specs if n not in mine]:
            old = self._specs[name]
            status = self.board.get(name, old.file)
            error = bad_files.get(old.file)
            if error is not None:
                status.state, status.message = State.INVALID, str(error)
                log.error("%s is invalid now; its tags are left alone: %s", name, error)
                continue  # keep it known: once the file is fixed it comes back unchanged
            del self._specs[name]
            self._prints.pop(name, None)
            self._dirty.discard(name)
            status.state = State.ORPHANED
            status.message = "spec deleted; tags left in place" + (
                " (pruning)" if self.settings.prune else ""
            )
            log.warning("%s: spec deleted; now Orphaned", name)
            if self.settings.prune:
                self._start(self._prune(name))
        known_files = {s.file for s in self._specs.values()}
        for key in self.board.names():
            if key.startswith("file:") and key[5:] not in bad_files:
                self.board.drop(key)
        for file, error in bad_files.items():
            if file not in known_files:
                status = self.board.get(f"file:{file}", file)
                status.state, status.message = State.INVALID, str(error)
                self.metrics.reconciles.labels("invalid").inc()
        return changed

    async def resync(self) -> None:
        """Everything again: the specs directory, then every spec against the registries."""
        self.rescan()
        self._kick(list(self._specs))
        # Wait for the specs this resync started; those backing off run when their time comes.
        now = time.monotonic()
        names = [n for n in self._specs if self._backoff_until.get(n, 0.0) <= now]
        while any(n in self._dirty or n in self._inflight for n in names):
            if self._stopping.is_set():
                return
            await asyncio.sleep(0.05)

    def _kick(self, names: Iterable[str] = ()) -> None:
        self._dirty.update(n for n in names if n in self._specs)
        if self._stopping.is_set():
            return
        now = time.monotonic()
        ready = [
            n
            for n in self._dirty
            if n not in self._inflight and self._backoff_until.get(n, 0.0) <= now
        ]
        # Specs in flight are kicked again when their pass ends; wake only for backoffs.
        waiting = [
            until
            for n in self._dirty
            if n not in self._inflight and (until := self._backoff_until.get(n, 0.0)) > now
        ]
        if waiting:
            if self._wake is not None:
                self._wake.cancel()
            delay = max(0.0, min(waiting) - now)
            self._wake = asyncio.get_running_loop().call_later(delay, self._kick)
        if ready:
            self._dirty.difference_update(ready)
            self._inflight.update(ready)
            self._start(self._pass(ready))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one pass ------------------------------------------------------------------------

    async def _pass(self, names: list[str]) -> None:
        assert self._registries is not None  # noqa: S101 - set before any pass starts
        specs = [self._specs[n] for n in names if n in self._specs]
        started, wall = time.monotonic(), time.time()
        for spec in specs:
            status = self.board.get(spec.name, spec.file)
            status.state, status.last_attempt = State.PROGRESSING, wall
        try:
            engine = Engine(self.settings, self._registries)
            report = await engine.run(LoadResult(tuple(specs), (), len(specs)), apply=True)
            for spec_report in report.specs:
                self._record(spec_report, wall)
        except asyncio.CancelledError:
            for spec in specs:
                status = self.board.get(spec.name, spec.file)
                status.state, status.message = State.FAILED, "abandoned at shutdown"
            raise
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
            self._inflight.difference_update(names)
            if not self._stopping.is_set():
                self._kick()

    def _record(self, report: SpecReport, wall: float) -> None:
        name = report.name or report.file
        status = self.board.get(name, report.file)
        if report.desired is not None:
            observed = dict(report.observed.tags) if report.observed is not None else {}
            status.tags = [
                TagStatus(
                    str(target),
                    str(report.desired.root.digest),
                    str(report.desired.root.digest)
                    if report.state is SpecState.SYNCED
                    else (str(observed[target]) if observed.get(target) else None),
                )
                for target in report.desired.targets
            ]
        if report.state is SpecState.SYNCED:
            status.state, status.message, status.failures = State.SYNCED, None, 0
            status.last_success = time.time()
            self._backoff_until.pop(name, None)
            self.metrics.reconciles.labels("synced").inc()
            if report.plan is not None and report.result is not None:
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
            return
        status.failures += 1
        status.state, status.message = State.FAILED, report.error
        delay = min(self.settings.resync_interval, BACKOFF_BASE * 2 ** (status.failures - 1))
        delay *= random.uniform(1.0, 1.2)  # noqa: S311 - jitter
        self._backoff_until[name] = time.monotonic() + delay
        self.metrics.reconciles.labels("failed").inc()
        log.warning(
            "%s failed %d time(s) in a row; next try in %.1fs", name, status.failures, delay
        )
        self._dirty.add(name)

    async def _prune(self, name: str) -> None:
        assert self._registries is not None  # noqa: S101
        pruner = Pruner(self._registries, self.written)
        message = await pruner.prune(name)
        status = self.board.get(name)
        status.message = message


def run_daemon(settings: Settings) -> int:
    return asyncio.run(Daemon(settings).run())
