"""Crash consistency: `reconciler apply` killed with SIGKILL at random moments during pushes.

Three multi-arch specs (two tags each) are pushed into fresh repositories each round, through a
throttling proxy so that uploads last long enough to be interrupted. Each round kills several
runs once their uploads have started, walking every target tag after each kill, then lets runs
finish. What must hold, counted from the destination registry's own access log and from a walk
with plain httpx:
- after every kill, every tag that exists names a manifest or index whose children and blobs
  are all present;
- after the last kill of a round, at most two runs bring every spec in sync;
- what a run finds stored is not sent again: no run uploads a blob into a repository where that
  blob was already committed before the run started (a mount may link it again: a mount answers
  in one request what a HEAD before it would, so blobs of the same registry are not asked about).
  Requests are tied to the run that sent them by their connection, as the proxy saw it; a killed
  run's last upload can still reach the registry after the next run has started, and is counted
  as the killed run's.

Each run starts without the blob-location memory of the state directory: with it, a later round
would mount every layer from an earlier round's repositories, and no kill would land during an
upload.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from reconciler.blobmemory import FILE_NAME
from tests.conftest import Cli
from tests.support.faultproxy import FaultProxy, Seen
from tests.support.images import Image, Layer, make_layer, push_blob_only, push_layout, write_layout
from tests.support.registry import Registry, start_registry
from tests.support.report import record
from tests.support.walk import walk

KILLS = 54
ATTEMPTS_PER_ROUND = 6
SPECS = 3
SEED = 20261122
RATE = 512 * 1024  # bytes per second per connection through the proxy
KILL_WINDOW = 0.8  # seconds after the first upload request within which the kill lands


@dataclass
class Stage:
    source: Registry
    dest: Registry
    proxy: FaultProxy
    vendors: list[Layer]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("crash")
    source, dest = start_registry(), start_registry()
    shared = make_layer({"etc/os": os.urandom(300_000)})
    images = [
        Image(os_, arch, [shared, make_layer({f"lib/{arch}": os.urandom(400_000)})], variant=v)
        for os_, arch, v in (("linux", "amd64", None), ("linux", "arm64", "v8"))
    ]
    push_layout(write_layout(root / "base", images), f"{source.host}/base/multi:1")
    vendors = []
    for i in range(SPECS):
        layer = make_layer({f"opt/vendor{i}.bin": os.urandom(600_000)})
        push_blob_only(root / f"v{i}", source.host, f"vendor/v{i}", layer)
        vendors.append(layer)
    proxy = FaultProxy(dest.host, rate=RATE)
    yield Stage(source, dest, proxy, vendors)
    proxy.stop()
    source.stop()
    dest.stop()


def write_round(cli: Cli, stage: Stage, round_: int) -> list[tuple[str, str]]:
    """This round's specs; returns the (repository, tag) pairs they target."""
    for old in cli.specs.glob("*.yaml"):
        old.unlink()
    targets = []
    for i, layer in enumerate(stage.vendors):
        repo = f"crash/r{round_}/app{i}"
        cli.write_spec(
            f"app{i}.yaml",
            f"""
            base: {stage.source.host}/base/multi:1
            layers:
              - ref: {stage.source.host}/vendor/v{i}@{layer.digest}
            annotations: {{round: "{round_}"}}
            targets:
              - {stage.proxy.host}/{repo}:1
              - {stage.proxy.host}/{repo}:latest
            """,
            spec_name=f"app{i}",
        )
        targets += [(repo, "1"), (repo, "latest")]
    return targets


@dataclass
class Run:
    started: float
    ended: float = 0.0
    killed: bool = False


def forget_blob_locations(cli: Cli) -> None:
    (cli.state / FILE_NAME).unlink(missing_ok=True)


def run_and_kill(cli: Cli, stage: Stage, rng: random.Random) -> Run:
    """Start an apply, wait for its first upload request, kill -9 it a random moment later."""
    forget_blob_locations(cli)
    seen_before = len(stage.proxy.seen)
    run = Run(time.monotonic())
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply"],
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = run.started + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(s.method in ("POST", "PATCH", "PUT") for s in stage.proxy.seen[seen_before:]):
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, KILL_WINDOW))
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        run.killed = True
    process.wait()
    run.ended = time.monotonic()
    return run


def finished_run(cli: Cli) -> tuple[Run, int, str]:
    forget_blob_locations(cli)
    run = Run(time.monotonic())
    result = cli("apply")
    run.ended = time.monotonic()
    return run, result.code, result.stdout


_COMMIT = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/[^?]*\?(?:.*&)?digest=(?P<digest>[^&]+)")
_MOUNT = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/\?(?:.*&)?mount=(?P<digest>[^&]+)")


def resent(seen: list[Seen], runs: list[Run]) -> tuple[int, list[str]]:
    """Uploads of a blob already committed there (by upload or mount) before the run began.

    Returns the number of commits and the offending ones.
    """
    first_arrival: dict[tuple[str, int], float] = {}
    for s in seen:
        first_arrival.setdefault(s.client, s.arrived)

    def run_of(s: Seen) -> Run:
        opened = first_arrival[s.client]
        return next(r for r in reversed(runs) if r.started <= opened)

    committed: dict[tuple[str, str], float] = {}  # -> when the registry first answered 201
    offending = []
    total = 0
    for s in sorted(seen, key=lambda s: s.at):
        pattern = _COMMIT if s.method == "PUT" else _MOUNT if s.method == "POST" else None
        match = pattern.match(urllib.parse.unquote(s.path)) if pattern else None
        if s.status != 201 or match is None:
            continue
        total += 1
        key = (match["repo"], match["digest"])
        before = committed.get(key)
        if s.method == "PUT" and before is not None and before < run_of(s).started:
            offending.append(f"{key} re-sent by a run that began after it was stored")
        committed.setdefault(key, s.at)
    return total, offending


def test_kill_9_during_pushes_never_leaves_a_broken_tag(stage: Stage, cli: Cli) -> None:
    rng = random.Random(SEED)  # noqa: S311 - reproducible kill moments, not secrets
    seen_from = len(stage.proxy.seen)
    runs: list[Run] = []
    kills = finished_first = walks = tags_seen = rounds = 0
    runs_to_converge: list[int] = []
    while kills < KILLS:
        targets = write_round(cli, stage, rounds)
        rounds += 1
        for _ in range(ATTEMPTS_PER_ROUND):
            run = run_and_kill(cli, stage, rng)
            runs.append(run)
            for repo, tag in targets:
                found = walk(stage.dest.host, repo, tag)
                walks += 1
                tags_seen += found.tag_present
                assert found.problems == [], (rounds, repo, tag, found.problems)
            if not run.killed:
                finished_first += 1
                break
            kills += 1
        # The round's last kill is behind us: at most two runs bring everything in sync.
        for attempt in (1, 2):
            run, code, out = finished_run(cli)
            runs.append(run)
            if code == 0:
                break
            assert attempt == 1, out
        runs_to_converge.append(attempt)
        assert cli("diff").code == 0
        for repo, tag in targets:
            found = walk(stage.dest.host, repo, tag)
            assert found.tag_present and found.problems == []
    commits, offending = resent(stage.proxy.seen[seen_from:], runs)
    record(
        "crash",
        rounds=rounds,
        specs=SPECS,
        runs=len(runs),
        kills=kills,
        finished_before_kill=finished_first,
        walks=walks,
        tags_present_at_walks=tags_seen,
        broken_tags=0,
        runs_to_converge=dict(Counter(runs_to_converge)),
        blob_commits=commits,
        resent_after_stored=len(offending),
        seed=SEED,
    )
    assert kills >= KILLS
    assert offending == []
