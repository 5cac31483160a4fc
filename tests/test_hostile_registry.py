"""Registries we do not control (issue 21): one base per scripted misbehaviour, all in one
`diff` and one `apply` beside a spec whose base is served honestly by the same server.

Each misbehaving spec fails on its own (the others go on: the honest one is applied), within
its bound, with a message that names the registry (host:port) and what it did; no traceback or
internal error; nothing is written at any target; the process peaks under 300 MiB, gzip bombs
of 1 GiB included. Per-case wall time and peak RSS: bench/hostile_registry.py. The cases bounded
by time run through one daemon pass too; answers cut short are counted as fetched again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, World
from tests.support.hostile import run_reconciler
from tests.support.hostileregistry import BY_NAME, CASES, LIMITS, HostileRegistry
from tests.test_daemon import running

PEAK_LIMIT_MIB = 300


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    servers = {case.name: HostileRegistry() for case in CASES if case.alone}
    server = HostileRegistry(alone=servers)
    yield server
    for one in [server, *servers.values()]:
        one.close()


def write_specs(cli: Cli, hostile: HostileRegistry, world: World) -> str:
    run = uuid.uuid4().hex[:8]
    for name in [case.name for case in CASES] + ["good"]:
        target = f"{world.a.host}/hostile-{run}/{name}:1"
        cli.write_spec(
            f"{name}.yaml",
            f"base: {hostile.host_of(name)}/hostile/{name}:1\ntargets: [{target}]",
            spec_name=name,
        )
    return run


def outcome(stdout: str) -> dict[str, dict[str, Any]]:
    report = json.loads(stdout)
    return {spec["name"]: spec for spec in report["specs"]}


def tagged(world: World, run: str) -> list[str]:
    """The repositories of this run that hold a tag. (distribution lists a repository in its
    catalog as soon as an upload starts there; a tag is what a failed push must never leave.)"""
    answer = httpx.get(f"http://{world.a.host}/v2/_catalog?n=1000", timeout=10)
    names: list[str] = answer.json()["repositories"]
    found = []
    for name in names:
        if name.startswith(f"hostile-{run}/"):
            tags = httpx.get(f"http://{world.a.host}/v2/{name}/tags/list", timeout=10)
            if tags.status_code == 200 and tags.json().get("tags"):
                found.append(name)
    return found


def check(command: str, cli: Cli, hostile: HostileRegistry, world: World) -> None:
    run = write_specs(cli, hostile, world)
    env = {**cli.env(), **LIMITS}
    result = run_reconciler([command, "-o", "json"], env=env, cwd=cli.root, timeout=170)
    assert not result.killed, result.describe()
    assert result.code == 1, result.describe()
    peak = result.max_rss_kib >> 10
    print(f"{command}: {len(CASES)} cases in {result.seconds:.1f} s, peak {peak} MiB")
    assert (
        "Traceback" not in result.stderr and "internal error" not in result.stdout + result.stderr
    )
    assert result.max_rss_kib < PEAK_LIMIT_MIB * 1024, result.describe()
    specs = outcome(result.stdout)
    wrong = []
    for case in CASES:
        spec = specs[case.name]
        error = spec["error"] or ""
        fails = not case.ok and not (command == "diff" and case.kind == "layer")
        if not fails:
            if spec["state"] == "Failed":
                wrong.append(f"{case.name}: should not fail: {error}")
            continue
        if spec["state"] != "Failed":
            wrong.append(f"{case.name}: {spec['state']}, not Failed")
        elif hostile.host_of(case.name) not in error:
            wrong.append(f"{case.name}: the message names no registry: {error}")
        elif case.says not in error:
            wrong.append(f"{case.name}: says not {case.says!r}: {error}")
        elif "internal error" in error or "Error:" in error.split(":", 1)[0]:
            wrong.append(f"{case.name}: {error}")
    assert not wrong, "\n".join(wrong)
    good = specs["good"]
    assert good["state"] == ("OutOfSync" if command == "diff" else "Synced"), good
    written = tagged(world, run)
    expected = [f"hostile-{run}/good"] if command == "apply" else []
    expected += [f"hostile-{run}/{c.name}" for c in CASES if c.ok and command == "apply"]
    assert sorted(written) == sorted(expected)


def test_corpus_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


def test_diff_of_every_hostile_case(cli: Cli, hostile: HostileRegistry, world: World) -> None:
    check("diff", cli, hostile, world)


def test_apply_of_every_hostile_case(cli: Cli, hostile: HostileRegistry, world: World) -> None:
    check("apply", cli, hostile, world)


def test_messages_name_the_announced_size_and_registry(
    cli: Cli, hostile: HostileRegistry, tmp_path: Path
) -> None:
    """Before: `/v2/.../manifests/sha256:...: body over the 4194304-byte limit`, no registry."""
    cli.write_spec(
        "huge.yaml",
        f"base: {hostile.host}/hostile/huge-announced-manifest:1\ntargets: [r.invalid/x:1]",
    )
    result = cli("diff", env_extra=LIMITS)
    assert result.code == 1
    assert f"{hostile.host}: GET /v2/hostile/huge-announced-manifest/manifests/" in result.stdout
    assert "announced 100000000 bytes (Content-Length), over the 4194304-byte limit" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("token-answer-cut-short", "/token/token-answer-cut-short"),
        ("404-error-body-cut-short", "/v2/hostile/404-error-body-cut-short/manifests/sha256:"),
        ("401-error-body-cut-short", "/v2/hostile/401-error-body-cut-short/manifests/sha256:"),
    ],
)
@pytest.mark.parametrize("retries", [0, 1])
def test_an_answer_cut_short_is_fetched_again_then_fails_naming_the_registry(
    cli: Cli, case: str, path: str, retries: int
) -> None:
    """A token answer, or an error answer's body, cut short is fetched again within `retries`
    (counted at the server), then the spec fails saying so, naming the registry."""
    server = HostileRegistry()
    try:
        cli.write_spec(
            f"{case}.yaml", f"base: {server.host}/hostile/{case}:1\ntargets: [r.invalid/x:1]"
        )
        result = cli("diff", "-o", "json", env_extra={**LIMITS, "RECONCILER_RETRIES": str(retries)})
    finally:
        server.close()
    assert result.code == 1, result.stderr
    error = outcome(result.stdout)[case]["error"]
    assert server.host in error and BY_NAME[case].says in error, error
    assert "internal error" not in error and "Traceback" not in result.stderr
    sent = [p for method, p in server.requests if method == "GET" and p.startswith(path)]
    assert len(sent) == retries + 1, server.requests


# The cases bounded by time (the request deadline, the blob rate rule) and the endless 1xx
# (bounded by the cap on them): through a daemon pass too, where nothing ends the process.
DAEMON_CASES = [case for case in CASES if case.slow or case.name == "endless-1xx"]
DAEMON_BOUND = 15.0  # seconds from the daemon's start to each case's Failed (2 tries of 3 s)


def test_the_slow_cases_through_one_daemon_pass(
    cli: Cli, hostile: HostileRegistry, world: World
) -> None:
    """One daemon, the slow cases as specs beside an honest one: each fails within its bound,
    naming the registry and what it did; the honest one is applied; no traceback, no internal
    error, no tag at the failing targets; the daemon peaks under 300 MiB."""
    run = uuid.uuid4().hex[:8]
    names = [case.name for case in DAEMON_CASES]
    for name in [*names, "good"]:
        target = f"{world.a.host}/hostile-{run}/{name}:1"
        cli.write_spec(
            f"{name}.yaml",
            f"base: {hostile.host_of(name)}/hostile/{name}:1\ntargets: [{target}]",
            spec_name=name,
        )
    settings = {k.removeprefix("RECONCILER_").lower(): v for k, v in LIMITS.items()}
    started = time.monotonic()
    ended: dict[str, tuple[float, dict[str, Any]]] = {}
    with running(cli, **settings) as daemon:
        while len(ended) < len(names) + 1 and time.monotonic() - started < DAEMON_BOUND + 5:
            for name, spec in daemon.status().items():
                if name not in ended and spec["state"] in ("Failed", "Synced"):
                    ended[name] = (time.monotonic() - started, spec)
            time.sleep(0.05)
        peak_kib = _peak_kib(daemon.process.pid)
        log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    assert ended.get("good", (0, {}))[1].get("state") == "Synced", ended.get("good")
    wrong = []
    for case in DAEMON_CASES:
        if case.name not in ended:
            wrong.append(f"{case.name}: not ended in {DAEMON_BOUND + 5:g} s")
            continue
        seconds, spec = ended[case.name]
        message = spec["message"] or ""
        if spec["state"] != "Failed" or seconds > DAEMON_BOUND:
            wrong.append(f"{case.name}: {spec['state']} after {seconds:.1f} s: {message}")
        elif hostile.host_of(case.name) not in message or case.says not in message:
            wrong.append(f"{case.name}: names not the registry or {case.says!r}: {message}")
    assert not wrong, "\n".join(wrong)
    assert peak_kib < PEAK_LIMIT_MIB * 1024, peak_kib
    assert tagged(world, run) == [f"hostile-{run}/good"]
    timings = {name: round(ended[name][0], 2) for name in names}
    print(f"daemon pass: {timings}, peak {peak_kib >> 10} MiB")


def _peak_kib(pid: int) -> int:
    """A live process's peak resident set (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")
