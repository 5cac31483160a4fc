"""`reconciler run` as a real process against real registries: file events, resyncs that repair
drift and follow base moves, the HTTP surface, and a prompt, clean SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, World
from tests.support.images import skopeo
from tests.support.report import record

HEADER = "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def status(self) -> dict[str, Any]:
        return {s["name"]: s for s in self.get("/status").json()["specs"]}


def tag_digest(host: str, repository: str, tag: str) -> str | None:
    response = httpx.head(
        f"http://{host}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=5
    )
    return response.headers["Docker-Content-Digest"] if response.status_code == 200 else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> tuple[Any, float]:
    """Poll `check` until it returns something truthy; returns it and the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = check()
        if value:
            return value, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def copy_tag(source: str, target: str) -> None:
    """Point `target` at what `source` names, with skopeo (digests preserved)."""
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{source}",
        f"docker://{target}",
    )


def spec_text(name: str, base: str, target: str, note: str) -> str:
    return HEADER + textwrap.dedent(
        f"""\
        metadata: {{name: {name}}}
        spec:
          base: {base}
          annotations: {{note: "{note}"}}
          targets: [{target}]
        """
    )


def invalid_file_is_left_alone(
    world: World, cli: Cli, daemon: Daemon, spec: Path, pushed: str
) -> None:
    a = world.a.host
    mark = world.a.mark()
    spec.write_text(HEADER + "metadata: {name: app}\nspec:\n  base: [unclosed\n")
    wait_for("Invalid", lambda: daemon.status().get("app", {}).get("state") == "Invalid")
    # The sentinel: a spec written after the broken file is pushed only by a later read of the
    # directory and a later pass, so by then the daemon has had every chance to touch app.
    probe = cli.specs / "probe.yaml"
    probe.write_text(spec_text("probe", f"{a}/daemon/base:1", f"{a}/daemon/probe:1", "probe"))
    wait_for("the probe's tag", lambda: tag_digest(a, "daemon/probe", "1"))
    assert tag_digest(a, "daemon/app", "1") == pushed
    writes = [
        r
        for r in world.a.requests(since=mark)
        if r.path.startswith("/v2/daemon/app/") and r.method not in ("GET", "HEAD")
    ]
    assert writes == []


@contextmanager
def running(
    cli: Cli, *, ready: bool = False, name: str = "daemon", **settings: str
) -> Iterator[Daemon]:
    """`reconciler run` as a process with the suite's short intervals and `settings`
    (RECONCILER_<NAME>), until the block ends; with `ready`, once /readyz says so. `name`
    names its log (several daemons beside one another)."""
    log = cli.root / f"{name}.log"
    env = {
        **cli.env(),
        "RECONCILER_LISTEN": "127.0.0.1:0",
        "RECONCILER_DEBOUNCE": "0.2",
        "RECONCILER_RESYNC_INTERVAL": "5",
        "RECONCILER_RESYNC_JITTER": "0",
        **{f"RECONCILER_{k.upper()}": v for k, v in settings.items()},
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run"], env=env, stdout=out, stderr=out
        )

    def port() -> int | None:
        match = re.search(r"on port (\d+)", log.read_text(errors="replace"))
        return int(match[1]) if match else None

    try:
        found, _ = wait_for("the daemon's port", port, timeout=20)
        daemon = Daemon(process, log, found)
        if ready:
            wait_for("/readyz", lambda: daemon.get("/readyz").status_code == 200)
        yield daemon
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def daemon(world: World, cli: Cli) -> Iterator[Daemon]:
    with running(cli, log_format="json") as started:
        yield started


def test_daemon_follows_files_drift_and_base_moves(world: World, cli: Cli, daemon: Daemon) -> None:
    a = world.a.host
    copy_tag(f"{a}/base/single:1", f"{a}/daemon/base:1")
    base, target = f"{a}/daemon/base:1", f"{a}/daemon/app:1"
    wait_for("/readyz", lambda: daemon.get("/readyz").status_code == 200)
    assert daemon.get("/healthz").status_code == 200
    timings: dict[str, float] = {}

    def moved(old: str | None) -> Callable[[], str | None]:
        def check() -> str | None:
            now = tag_digest(a, "daemon/app", "1")
            return now if now and now != old else None

        return check

    # A new file: the tag appears.
    spec = cli.specs / "app.yaml"
    spec.write_text(spec_text("app", base, target, "one"))
    first, timings["new file -> tag pushed"] = wait_for("the tag", moved(None))

    # An edit in place.
    spec.write_text(spec_text("app", base, target, "two"))
    second, timings["edit in place -> tag moved"] = wait_for("the edit", moved(first))

    # An editor's save: write a temporary file, rename it over the spec.
    tmp = cli.specs / ".app.yaml.swp"
    tmp.write_text(spec_text("app", base, target, "three"))
    os.replace(tmp, spec)
    third, timings["rename-save -> tag moved"] = wait_for("the rename-save", moved(second))

    # A half-written, invalid file: the spec is Invalid and its tag stays where it was.
    invalid_file_is_left_alone(world, cli, daemon, spec, third)
    spec.write_text(spec_text("app", base, target, "three"))
    wait_for("Synced again", lambda: daemon.status().get("app", {}).get("state") == "Synced")

    # A ConfigMap-style directory: files are links through `..data`, swapped atomically.
    cm = cli.specs / "cm"
    (cm / "..v1").mkdir(parents=True)
    cm_target = f"{a}/daemon/cm:1"
    (cm / "..v1" / "cm.yaml").write_text(spec_text("cm", base, cm_target, "v1"))
    os.symlink("..v1", cm / "..data")
    os.symlink("..data/cm.yaml", cm / "cm.yaml")
    cm_first, _ = wait_for("the cm tag", lambda: tag_digest(a, "daemon/cm", "1"))
    (cm / "..v2").mkdir()
    (cm / "..v2" / "cm.yaml").write_text(spec_text("cm", base, cm_target, "v2"))
    os.symlink("..v2", cm / "..data_tmp")
    os.replace(cm / "..data_tmp", cm / "..data")
    _, timings["..data swap -> tag moved"] = wait_for(
        "the swap", lambda: (d := tag_digest(a, "daemon/cm", "1")) and d != cm_first
    )

    # Drift: someone moves the tag by hand; the resync puts it back.
    copy_tag(f"{a}/base/single:1", target)
    drifted = tag_digest(a, "daemon/app", "1")
    assert drifted != third
    _, timings["drift -> repaired by resync"] = wait_for(
        "the drift repair", lambda: tag_digest(a, "daemon/app", "1") == third, timeout=20
    )

    # The base moves: its tag now names a multi-platform index; the resync rebuilds.
    copy_tag(f"{a}/base/multi:1", base)
    rebuilt, timings["base move -> rebuilt by resync"] = wait_for(
        "the rebuild", moved(third), timeout=20
    )
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))
    assert len(index["manifests"]) == 2

    # Deleting the spec leaves the tag, and says Orphaned.
    spec.unlink()
    wait_for("Orphaned", lambda: daemon.status().get("app", {}).get("state") == "Orphaned")
    assert tag_digest(a, "daemon/app", "1") == rebuilt

    status = daemon.status()
    assert status["cm"]["state"] == "Synced"
    assert status["cm"]["tags"][0]["target"] == cm_target
    assert status["cm"]["tags"][0]["desired"] == status["cm"]["tags"][0]["observed"]
    assert status["cm"]["lastSuccess"] is not None
    metrics = daemon.get("/metrics").text
    assert re.search(r'reconciler_reconciles_total\{result="synced"\} [1-9]', metrics)
    assert re.search(r'reconciler_blobs_total\{action="mounted"\} [1-9]', metrics)
    assert re.search(
        r'reconciler_registry_requests_total\{host="127\.0\.0\.1:\d+",'
        r'method="HEAD",status="200"\} [1-9]',
        metrics,
    )
    assert 'reconciler_specs{state="Orphaned"} 1.0' in metrics

    # Every log line is JSON; lines about a spec carry its name.
    lines = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    assert any(line["spec"] == "app" and "applied" in line["message"] for line in lines)

    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    timings["SIGTERM -> exit 0"] = time.monotonic() - started
    record("daemon", **{k: round(v, 2) for k, v in timings.items()})
    print(timings)


@pytest.fixture
def failing_spec(world: World, cli: Cli) -> Path:
    """A spec in place before the daemon starts, whose every pass fails, quickly: port 1 on
    loopback refuses connections. (Requested before `daemon`, so it is written first.)"""
    path = cli.specs / "down.yaml"
    path.write_text(spec_text("down", f"{world.a.host}/base/single:1", "127.0.0.1:1/x/down:1", "d"))
    return path


def test_daemon_backs_off_a_failing_spec_and_serves_the_others(
    world: World, cli: Cli, failing_spec: Path, daemon: Daemon
) -> None:
    a = world.a.host
    # The first full pass is done once every spec has had its run, failed or not.
    wait_for("/readyz", lambda: daemon.get("/readyz").status_code == 200)
    assert daemon.status()["down"]["consecutiveFailures"] >= 1
    (cli.specs / "up.yaml").write_text(
        spec_text("up", f"{a}/base/single:1", f"{a}/daemon/up:1", "u")
    )
    wait_for("up's tag", lambda: tag_digest(a, "daemon/up", "1"))

    def failures() -> int:
        return int(daemon.status()["down"]["consecutiveFailures"])

    wait_for("a retry after the backoff", lambda: failures() >= 2)
    assert daemon.status()["down"]["state"] in ("Failed", "Progressing")
    assert daemon.status()["up"]["state"] == "Synced"
    lines = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    waits = [
        float(match[1])
        for line in lines
        if (
            match := re.fullmatch(
                r"down failed \d+ time\(s\) in a row; next try in ([\d.]+)s", line["message"]
            )
        )
    ]
    assert 2.0 <= waits[0] <= 2.4 and 4.0 <= waits[1] <= 4.8  # 2 s doubling, jitter up to 20 %

    # A failing spec does not keep the daemon from stopping promptly and cleanly.
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
