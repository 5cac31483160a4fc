"""Daemon parts without the process: each spec's record and its transitions, shards, reading
the specs directory, the status board, the record of written tags, and pruning against a real
registry."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from reconciler.daemon.machine import Phase, SpecRecord, backoff_delay
from reconciler.daemon.prune import Pruner, WrittenTags
from reconciler.daemon.scan import fingerprint, scan_specs, shard_of
from reconciler.daemon.status import SpecStatus, StatusBoard, TagStatus
from reconciler.model.state import SpecState
from reconciler.spec import ImageSpecBody, LoadedSpec
from reconciler.store.open import Stores
from reconciler.yamlsource import YamlDocument
from tests.conftest import World
from tests.support.images import skopeo
from tests.support.walk import walk

HEADER = "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
TAGS = (TagStatus("t.io/team/app:1", "sha256:" + "a" * 64, "sha256:" + "a" * 64),)


def spec(note: str = "one", name: str = "app", file: str = "app.yaml") -> LoadedSpec:
    body = ImageSpecBody.model_validate(
        {"base": "r.io/library/base:1", "targets": ["t.io/team/app:1"], "annotations": {"n": note}}
    )
    return LoadedSpec(name, file, 1, body, YamlDocument(file, 0, 1, {}, {}))


def record(
    phase: Phase = Phase.QUEUED,
    *,
    then: Phase | None = None,
    failures: int = 0,
    message: str | None = None,
) -> SpecRecord:
    loaded = spec()
    return SpecRecord(
        loaded.name, loaded, fingerprint(loaded), phase, then, failures, message=message
    )


def running(then: Phase | None = None, failures: int = 0) -> SpecRecord:
    return record(Phase.RUNNING, then=then, failures=failures, message="before")


# -- the record's transitions: (name, before, event, expected phase, expected then) --------

CHANGED = spec("two")
SAME = spec("one", file="moved.yaml")
EVENTS = {
    "changed": lambda r: r.loaded(CHANGED, fingerprint(CHANGED)),
    "same": lambda r: r.loaded(SAME, fingerprint(SAME)),
    "asked": lambda r: r.asked(),
    "invalid": lambda r: r.invalid("app.yaml:3: bad"),
    "deleted": lambda r: r.deleted("spec deleted"),
    "started": lambda r: r.started(100.0),
    "succeeded": lambda r: r.succeeded(TAGS, 200.0),
    "failed": lambda r: r.failed("refused", None, 10.0, 2.0),
    "abandoned": lambda r: r.abandoned("abandoned at shutdown"),
}
TABLE = [
    # A new or changed spec, or one that comes back, runs.
    ("new spec waits for its run", record(), "asked", Phase.QUEUED, None),
    ("synced, changed", record(Phase.SYNCED), "changed", Phase.QUEUED, None),
    ("synced, unchanged", record(Phase.SYNCED), "same", Phase.SYNCED, None),
    ("backoff, changed: no waiting", record(Phase.BACKOFF), "changed", Phase.QUEUED, None),
    ("backoff, unchanged", record(Phase.BACKOFF), "same", Phase.BACKOFF, None),
    ("invalid, fixed unchanged", record(Phase.INVALID), "same", Phase.QUEUED, None),
    ("orphaned, back", record(Phase.ORPHANED), "same", Phase.QUEUED, None),
    # A resync runs what is synced, and nothing else.
    ("synced, resync", record(Phase.SYNCED), "asked", Phase.QUEUED, None),
    ("backoff, resync waits", record(Phase.BACKOFF), "asked", Phase.BACKOFF, None),
    ("invalid, resync leaves it", record(Phase.INVALID), "asked", Phase.INVALID, None),
    ("orphaned, resync", record(Phase.ORPHANED), "asked", Phase.ORPHANED, None),
    # Only a queued spec starts: one reconcile of a spec at a time.
    ("queued starts", record(), "started", Phase.RUNNING, None),
    ("running does not start", running(), "started", Phase.RUNNING, None),
    ("synced does not start", record(Phase.SYNCED), "started", Phase.SYNCED, None),
    # What comes while running waits for the run's end.
    ("running, resync", running(), "asked", Phase.RUNNING, Phase.QUEUED),
    ("running, changed", running(), "changed", Phase.RUNNING, Phase.QUEUED),
    ("running, unchanged", running(), "same", Phase.RUNNING, None),
    ("running, invalid", running(), "invalid", Phase.RUNNING, Phase.INVALID),
    ("running, deleted", running(), "deleted", Phase.RUNNING, Phase.ORPHANED),
    ("running invalid, fixed", running(Phase.INVALID), "same", Phase.RUNNING, None),
    ("running invalid, changed", running(Phase.INVALID), "changed", Phase.RUNNING, Phase.QUEUED),
    ("running deleted, back", running(Phase.ORPHANED), "same", Phase.RUNNING, None),
    # A run's end.
    ("succeeded", running(), "succeeded", Phase.SYNCED, None),
    ("succeeded, asked again", running(Phase.QUEUED), "succeeded", Phase.QUEUED, None),
    ("succeeded, invalid meanwhile", running(Phase.INVALID), "succeeded", Phase.INVALID, None),
    ("succeeded, deleted meanwhile", running(Phase.ORPHANED), "succeeded", Phase.ORPHANED, None),
    ("failed", running(), "failed", Phase.BACKOFF, None),
    ("failed, asked again: backoff", running(Phase.QUEUED), "failed", Phase.BACKOFF, None),
    ("failed, deleted meanwhile", running(Phase.ORPHANED), "failed", Phase.ORPHANED, None),
    ("abandoned", running(), "abandoned", Phase.BACKOFF, None),
    ("abandoned, deleted meanwhile", running(Phase.ORPHANED), "abandoned", Phase.ORPHANED, None),
    ("no run, no end", record(Phase.SYNCED), "failed", Phase.SYNCED, None),
    # The directory.
    ("synced, invalid", record(Phase.SYNCED), "invalid", Phase.INVALID, None),
    ("backoff, deleted", record(Phase.BACKOFF), "deleted", Phase.ORPHANED, None),
    ("orphaned, invalid file", record(Phase.ORPHANED), "invalid", Phase.ORPHANED, None),
]


@pytest.mark.parametrize(
    ("before", "event", "phase", "then"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_record_transitions(
    before: SpecRecord, event: str, phase: Phase, then: Phase | None
) -> None:
    after = EVENTS[event](before)
    assert (after.phase, after.then) == (phase, then)


def test_a_transition_that_does_not_apply_returns_the_same_record() -> None:
    # The daemon skips publishing exactly these (`record is old`).
    for before in (record(Phase.SYNCED), record(Phase.INVALID), record(Phase.ORPHANED)):
        assert before.started(1.0) is before
        assert before.succeeded(TAGS, 1.0) is before
        assert before.retry(0.0) is before
    orphaned = record(Phase.ORPHANED)
    assert orphaned.deleted("again") is orphaned  # so pruning starts once


def test_failures_count_and_back_off_until_a_change() -> None:
    first = running().failed("refused", None, now=10.0, delay=2.0)
    assert (first.phase, first.failures, first.retry_at, first.message) == (
        Phase.BACKOFF,
        1,
        12.0,
        "refused",
    )
    assert first.status().state is SpecState.FAILED
    assert first.status().failures == 1
    assert first.retry(11.0) is first  # an older backoff's timer
    again = first.retry(12.0)
    assert again.phase is Phase.QUEUED
    second = again.started(50.0).failed("refused", None, now=20.0, delay=4.0)
    assert (second.failures, second.retry_at) == (2, 24.0)
    assert second.status().last_attempt == 50.0
    assert second.loaded(CHANGED, fingerprint(CHANGED)).failures == 0  # the operator touched it
    synced = second.retry(24.0).started(60.0).succeeded(TAGS, 70.0)
    assert (synced.phase, synced.failures, synced.message) == (Phase.SYNCED, 0, None)
    assert synced.status() == SpecStatus(
        "app", "app.yaml", SpecState.SYNCED, TAGS, 60.0, 70.0, None, 0
    )


def test_a_spec_changed_while_running_runs_the_new_spec_after() -> None:
    during = running(failures=3).loaded(CHANGED, fingerprint(CHANGED))
    assert during.spec is CHANGED and during.failures == 0
    after = during.succeeded(TAGS, 1.0)
    assert after.phase is Phase.QUEUED and after.started(2.0).spec is CHANGED


def test_invalid_and_deleted_keep_their_message_through_the_run() -> None:
    ended = running().invalid("app.yaml:3: bad").succeeded(TAGS, 1.0)
    assert ended.status().state is SpecState.INVALID
    assert ended.status().message == "app.yaml:3: bad"
    assert ended.tags == TAGS  # what the run found is still shown
    gone = running().deleted("spec deleted").failed("refused", None, 1.0, 2.0)
    assert (gone.status().state, gone.message) == (SpecState.ORPHANED, "spec deleted")


def test_moving_a_spec_to_another_file_is_no_change() -> None:
    moved = record(Phase.SYNCED).loaded(SAME, fingerprint(SAME))
    assert moved.phase is Phase.SYNCED
    assert moved.status().file == "moved.yaml"


def test_settled_means_nothing_to_wait_for() -> None:
    assert {p for p in Phase if record(p).settled} == {
        Phase.SYNCED,
        Phase.BACKOFF,
        Phase.INVALID,
        Phase.ORPHANED,
    }


def test_backoff_doubles_from_2s_and_stops_at_the_cap() -> None:
    assert [backoff_delay(n, 300.0) for n in range(1, 11)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
        300.0,
    ]
    assert backoff_delay(5000, 300.0) == 300.0  # days of failures do not overflow


# -- the status board --------------------------------------------------------------------


def test_the_board_publishes_whole_views() -> None:
    board = StatusBoard()
    board.update([SpecStatus("web", "web.yaml"), SpecStatus("api", "api.yaml")])
    before = board.view
    board.update([SpecStatus("web", "web.yaml", SpecState.SYNCED)], drop=["api"])
    # A reader holding the older view sees it whole and unchanged.
    assert [(s.key, s.state) for s in before.specs] == [
        ("api", SpecState.OUT_OF_SYNC),
        ("web", SpecState.OUT_OF_SYNC),
    ]
    assert [(s.key, s.state) for s in board.view.specs] == [("web", SpecState.SYNCED)]
    assert board.counts()[SpecState.SYNCED] == 1
    assert board.counts()[SpecState.ORPHANED] == 0
    snapshot = board.snapshot()
    assert snapshot["specs"][0]["name"] == "web"
    assert snapshot["specs"][0]["state"] == "Synced"


# -- shards and the specs directory ------------------------------------------------------


def test_shards_are_pinned_and_spread() -> None:
    # Expected values: the first 8 bytes of sha256(name), big-endian, modulo the count; e.g.
    # sha256(b"web") starts 4b5e57f6eb2f42b9, which is 1 mod 4, 6 mod 7 and 0 mod 3.
    pinned = {
        ("web", 4): 1,
        ("web", 7): 6,
        ("web", 3): 0,
        ("api", 4): 1,
        ("api", 7): 5,
        ("team-0/app-0", 4): 1,
        ("team-19/app-24", 4): 2,
        ("payments", 4): 0,
        ("payments", 7): 1,
        ("web", 1): 0,
    }
    assert {key: shard_of(*key) for key in pinned} == pinned
    names = [f"team-{i}/app-{j}" for i in range(20) for j in range(25)]
    spread = Counter(shard_of(n, 4) for n in names)
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 500 / 4 * 0.7  # no shard starves


def test_a_scan_keeps_this_shards_specs_and_every_bad_file(tmp_path: Path) -> None:
    for name in ("web", "api", "payments"):
        (tmp_path / f"{name}.yaml").write_text(
            HEADER
            + f"metadata: {{name: {name}}}\nspec:\n  base: r.io/b:1\n  targets: [r.io/{name}:1]\n"
        )
    (tmp_path / "broken.yaml").write_text(HEADER + "spec:\n  base: [unclosed\n")
    scan = scan_specs(tmp_path, 1, 4)  # web and api are shard 1 of 4, payments is 0
    assert sorted(s.spec.name for s in scan.specs) == ["api", "web"]
    assert list(scan.bad_files) == [str(tmp_path / "broken.yaml")]
    again = scan_specs(tmp_path, 1, 4)
    assert [s.fingerprint for s in again.specs] == [s.fingerprint for s in scan.specs]


def test_written_tags_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "daemon" / "written-tags.json"
    first = WrittenTags(path)
    first.add("web", [("r.io/web:1", "sha256:" + "a" * 64), ("r.io/web:2", "sha256:" + "b" * 64)])
    first.add("api", [("r.io/api:1", "sha256:" + "c" * 64)])
    again = WrittenTags(path)
    assert again.of("web") == {
        "r.io/web:1": "sha256:" + "a" * 64,
        "r.io/web:2": "sha256:" + "b" * 64,
    }
    again.forget("r.io/web:1")
    assert set(WrittenTags(path).of("web")) == {"r.io/web:2"}
    path.write_text("{damaged")
    assert WrittenTags(path).of("web") == {}


def test_prune_deletes_only_what_it_wrote_and_still_names(world: World, tmp_path: Path) -> None:
    a = world.a.host
    src = f"docker://{a}/base/single:1"
    for tag in ("ours", "moved", "shared", "theirs"):
        skopeo(
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            src,
            f"docker://{a}/prune/x:{tag}",
        )
    single = walk(a, "prune/x", "ours").root
    assert single is not None
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{a}/base/multi:1",
        f"docker://{a}/prune/y:ours",
    )
    multi = walk(a, "prune/y", "ours").root
    assert multi is not None
    written = WrittenTags(tmp_path / "written.json")
    written.add(
        "gone",
        [
            (f"{a}/prune/x:ours", single),  # shares its manifest with :theirs -> kept
            (f"{a}/prune/x:moved", "sha256:" + "0" * 64),  # moved since we wrote it -> kept
            (f"{a}/prune/y:ours", multi),  # the only tag on its index -> deleted
        ],
    )

    async def go() -> str:
        async with Stores(env={"DOCKER_CONFIG": str(tmp_path)}) as stores:
            return await Pruner(stores, written).prune("gone")

    message = asyncio.run(go())
    assert "pruned 1 tag(s)" in message
    assert "moved by someone else" in message and "manifest also tagged" in message
    assert walk(a, "prune/y", "ours").tag_present is False
    for tag in ("ours", "moved", "shared", "theirs"):
        assert walk(a, "prune/x", tag).tag_present, tag
    assert set(written.of("gone")) == {f"{a}/prune/x:ours", f"{a}/prune/x:moved"}


def test_the_parent_watch_pokes_only_for_the_entry_specs_dir_goes_through(tmp_path: Path) -> None:
    """A log written beside specs_dir must not rescan the specs at each line; git-sync's swap of
    the link (a move onto the entry) and the entry's removal must."""
    from watchdog.events import FileCreatedEvent, FileModifiedEvent, FileMovedEvent

    from reconciler.daemon.runner import _Events

    pokes: list[object] = []

    class Loop:
        def call_soon_threadsafe(self, callback: object) -> None:
            pokes.append(callback)

    entry = str(tmp_path / "specs")
    swaps = _Events(Loop(), lambda: None, only=entry)  # type: ignore[arg-type]
    swaps.on_any_event(FileModifiedEvent(str(tmp_path / "daemon.log")))
    swaps.on_any_event(FileCreatedEvent(str(tmp_path / ".specs.tmp")))
    assert pokes == []
    swaps.on_any_event(FileMovedEvent(str(tmp_path / ".specs.tmp"), entry))
    swaps.on_any_event(FileModifiedEvent(entry))
    assert len(pokes) == 2
    everything = _Events(Loop(), lambda: None)  # type: ignore[arg-type]
    everything.on_any_event(FileModifiedEvent(str(tmp_path / "specs" / "app.yaml")))
    assert len(pokes) == 3


def test_the_parent_watch_asks_inotify_for_entry_changes_only(tmp_path: Path) -> None:
    """Lines written to a log beside specs_dir raise no event at all (not even one to ignore):
    the parent's watch asks for entries made, removed and moved, and a swap still arrives."""
    import threading

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from reconciler.daemon.runner import _ENTRIES

    seen: list[FileSystemEvent] = []
    swapped = threading.Event()
    entry = tmp_path / "specs"
    (tmp_path / "v1").mkdir()
    entry.symlink_to(tmp_path / "v1")
    log = (tmp_path / "daemon.log").open("w")

    class Record(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.append(event)
            if event.event_type == "moved" and event.dest_path == str(entry):
                swapped.set()

    observer = Observer()
    observer.schedule(Record(), str(tmp_path), recursive=False, event_filter=_ENTRIES)
    observer.start()
    try:
        for i in range(200):
            log.write(f"line {i}\n")
            log.flush()
        (tmp_path / "v2").mkdir()
        (tmp_path / ".specs.tmp").symlink_to(tmp_path / "v2")
        (tmp_path / ".specs.tmp").rename(entry)  # git-sync's swap
        assert swapped.wait(10), seen
    finally:
        observer.stop()
        observer.join(10)
        log.close()
    assert not [e for e in seen if e.event_type == "modified"], seen
    assert all("daemon.log" not in e.src_path for e in seen), seen
