"""The daemon's webhooks and HTTP limits, against a real process: a real docker-registry notifies
the daemon of pushes (its `notifications: endpoints:`), forged and oversized calls are refused,
and stalled clients neither delay /healthz nor stay connected."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.guard import HookAuth
from reconciler.daemon.http import HookTargets, _App
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.status import StatusBoard
from reconciler.settings import Settings
from tests.conftest import Cli, World
from tests.support.images import skopeo
from tests.support.registry import Registry, start_registry
from tests.support.report import record
from tests.test_daemon import Daemon, copy_tag, running, spec_text, tag_digest, wait_for

D1 = "sha256:" + "1" * 64


def notifying(port: int, token: str) -> str:
    """A registry config section: notify the daemon on `port` of every event, with its token."""
    return (
        "notifications:\n"
        "  endpoints:\n"
        "    - name: reconciler\n"
        f"      url: http://127.0.0.1:{port}/hooks/registry\n"
        "      headers:\n"
        f"        Authorization: [Bearer {token}]\n"
        "      timeout: 2s\n"
        "      threshold: 3\n"
        "      backoff: 1s\n"
    )


def requests_sent(daemon: Daemon) -> float:
    """Every request the daemon has had answered by any registry (its own count)."""
    text = daemon.get("/metrics").text
    return sum(
        float(v)
        for v in re.findall(r"^reconciler_registry_requests_total\{.*\} (\S+)$", text, re.M)
    )


def agents(registry: Registry, since: int) -> set[str]:
    """The clients (user agents, without versions) of the requests logged since a mark."""
    registry.requests(since=since)  # waits for a sentinel: every earlier line is written
    with registry.log_path.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    found = re.findall(
        r'^\S+ - \S+ \[[^\]]+\] "[A-Z]+ (\S+) [^"]*" \d+ \S+ "[^"]*" "([^"/ ]*)', text, re.M
    )
    return {agent for path, agent in found if "reconciler-sentinel" not in path}


def metric(daemon: Daemon, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", daemon.get("/metrics").text, re.M)
    return float(match[1]) if match else 0.0


def post(daemon: Daemon, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{daemon.port}{path}", content=content, headers=headers, timeout=5
    )


@dataclass
class Hooked:
    daemon: Daemon
    registry: Registry  # holds the base and the target, and notifies the daemon
    first: str  # the target's digest after the first build


@pytest.fixture
def hooked(world: World, cli: Cli, tmp_path: Path) -> Iterator[Hooked]:
    token = "tok-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    token_file = tmp_path / "hook-token"
    token_file.write_text(token + "\n")
    settings = {
        "resync_interval": "600",
        "hooks__token_file": str(token_file),
        "log_level": "debug",
    }
    with ExitStack() as stack, running(cli, ready=True, **settings) as daemon:
        # The daemon listens first: the registry needs its URL, and sends once pushed to.
        registry = start_registry(notifying(daemon.port, token))
        stack.callback(registry.stop)
        r = registry.host
        copy_tag(f"{world.a.host}/base/single:1", f"{r}/hooked/base:1")
        (cli.specs / "app.yaml").write_text(
            spec_text("app", f"{r}/hooked/base:1", f"{r}/hooked/app:1", "h")
        )
        first, _ = wait_for("the first build", lambda: tag_digest(r, "hooked/app", "1"))
        wait_for("Synced", lambda: daemon.status().get("app", {}).get("state") == "Synced")
        yield Hooked(daemon, registry, first)
        assert token not in daemon.log.read_text()  # the secret is never logged


def test_a_pushed_base_is_rebuilt_at_once(world: World, hooked: Hooked) -> None:
    r, daemon = hooked.registry.host, hooked.daemon
    accepted = metric(daemon, 'reconciler_hooks_received_total{hook="registry",result="accepted"}')
    assert accepted >= 1  # the first push of the base, and the first build's own pushes
    # The base tag moves to a two-platform index; no resync will come (600 s): only the hook.
    copy_tag(f"{world.a.host}/base/multi:1", f"{r}/hooked/base:1")
    pushed = time.monotonic()
    wait_for(
        "the rebuild",
        lambda: (d := tag_digest(r, "hooked/app", "1")) is not None and d != hooked.first,
        timeout=10,
    )
    latency = time.monotonic() - pushed
    target = f"docker://{r}/hooked/app:1"
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", target))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    base = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{r}/hooked/base:1")
    )
    assert {m["digest"] for m in base["manifests"]} != {m["digest"] for m in index["manifests"]}
    assert metric(daemon, "reconciler_hook_specs_queued_total") >= 1
    # The pass a hook started asks only what the spec needs: its base tag, its target, and
    # what a new two-platform image pushes.
    spent = wait_for(
        "the pass's request count",
        lambda: metric(daemon, f'reconciler_pass_requests{{host="{r}"}}') or None,
    )[0]
    record("hooks", push_to_rebuilt_seconds=round(latency, 3), pass_requests=spent)
    print(f"push -> rebuilt: {latency:.3f} s; that pass sent {spent:.0f} requests")
    assert latency < 2.0


def test_a_push_elsewhere_costs_no_request(world: World, hooked: Hooked) -> None:
    registry, daemon = hooked.registry, hooked.daemon
    r = registry.host
    before = requests_sent(daemon)
    mark, mark_a = registry.mark(), world.a.mark()
    copy_tag(f"{world.a.host}/base/single:1", f"{r}/elsewhere/thing:1")
    # The sentinel: the daemon decides what a hook queues while it handles the call.
    # Said at INFO with the hosts compared (before: DEBUG, and no hosts).
    line = re.compile(
        rf"INFO .*registry hook: {re.escape(r)}/elsewhere/thing:1@sha256:[0-9a-f]+; no spec of "
        rf"this replica uses it \(pushed to {re.escape(r)}; the specs name {re.escape(r)}\)"
    )
    wait_for("the hook of that push", lambda: line.search(daemon.log.read_text()))
    assert requests_sent(daemon) == before
    # Only skopeo's requests: the copy's reads from a, its writes to elsewhere/thing.
    # The registries' own logs: every request since is skopeo's (the copy), none the daemon's.
    assert agents(registry, mark) == {"skopeo"}
    assert agents(world.a, mark_a) == {"skopeo"}
    assert tag_digest(r, "hooked/app", "1") == hooked.first


def envelope(host: str, repository: str, tag: str) -> bytes:
    event = {
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": D1,
            "repository": repository,
            "url": f"http://{host}/v2/{repository}/manifests/{D1}",
            "tag": tag,
        },
        "request": {"host": host},
    }
    return json.dumps({"events": [event]}).encode()


def test_forged_oversized_and_malformed_calls_are_refused(
    world: World, cli: Cli, tmp_path: Path
) -> None:
    a = world.a.host
    (tmp_path / "token").write_text("right-token")
    (tmp_path / "hmac").write_text("hmac-key")
    settings = {
        "resync_interval": "600",
        "hooks__token_file": str(tmp_path / "token"),
        "hooks__hmac_secret_file": str(tmp_path / "hmac"),
        "hooks__max_body_bytes": "2048",
        "hooks__max_per_minute": "20",
        "http_read_timeout": "2",
    }
    (cli.specs / "app.yaml").write_text(
        spec_text("app", f"{a}/base/single:1", f"{a}/hooks/forged:1", "f")
    )
    with running(cli, ready=True, **settings) as daemon:
        wait_for("Synced", lambda: daemon.status().get("app", {}).get("state") == "Synced")
        concerning = envelope(a, "base/single", "1")  # a push the spec would follow
        wrong_hmac = "sha256=" + hmac.new(b"not-the-key", concerning, hashlib.sha256).hexdigest()
        for headers in (
            {"Authorization": "Bearer wrong-token"},
            {"X-Hub-Signature-256": wrong_hmac},
            {},
        ):
            response = post(daemon, "/hooks/registry", concerning, **headers)
            assert response.status_code == 401, headers
        assert (
            metric(daemon, 'reconciler_hooks_received_total{hook="registry",result="unauthorized"}')
            == 3
        )
        assert metric(daemon, "reconciler_hook_specs_queued_total") == 0
        log = daemon.log.read_text()
        assert log.count("refused a call of /hooks/registry from 127.0.0.1") == 3
        assert "a wrong bearer token" in log and "a signature that does not match" in log
        assert "right-token" not in log and "hmac-key" not in log

        # Too large: declared (refused before reading), and streamed without a length.
        big = b" " * 4096
        assert (
            post(daemon, "/hooks/registry", big, Authorization="Bearer right-token").status_code
            == 413
        )
        chunked = httpx.post(
            f"http://127.0.0.1:{daemon.port}/hooks/registry",
            content=iter([b" " * 1024] * 4),
            headers={"Authorization": "Bearer right-token"},
            timeout=5,
        )
        assert chunked.status_code == 413
        assert dribbled_body(daemon.port).startswith(b"HTTP/1.1 408 ")  # 2 s for the body
        bad = post(daemon, "/hooks/registry", b"{nope", Authorization="Bearer right-token")
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
        unknown = post(daemon, "/hooks/registry", b'{"x": 1}', Authorization="Bearer right-token")
        assert unknown.status_code == 400 and "top-level keys: x" in unknown.json()["error"]
        assert daemon.get("/hooks/nothing").status_code == 404
        assert daemon.get("/nothing").status_code == 404
        assert daemon.get("/hooks/registry").status_code == 405
        assert post(daemon, "/healthz", b"").status_code == 405
        assert daemon.status()["app"]["state"] == "Synced"
        assert metric(daemon, "reconciler_hook_specs_queued_total") == 0

        # The same push, signed (as GitHub signs) and with the token: it queues the spec.
        signed = "sha256=" + hmac.new(b"hmac-key", concerning, hashlib.sha256).hexdigest()
        accepted = post(daemon, "/hooks/registry", concerning, **{"X-Hub-Signature-256": signed})
        assert accepted.status_code == 202 and accepted.json() == {"pushes": 1, "queued": 1}
        by_token = post(daemon, "/hooks/registry", concerning, Authorization="Bearer right-token")
        assert by_token.status_code == 202 and by_token.json()["queued"] == 1
        git = post(daemon, "/hooks/git", b"", Authorization="Bearer right-token")
        assert git.status_code == 202 and git.json() == {"rescan": 1}
        assert (
            metric(daemon, 'reconciler_hooks_received_total{hook="registry",result="too_large"}')
            == 2
        )
        assert (
            metric(daemon, 'reconciler_hooks_received_total{hook="registry",result="bad_request"}')
            == 3
        )

        # The rate bound: 20 a minute per hook, and 10 registry calls so far (refills: 1 per 3 s).
        statuses = [post(daemon, "/hooks/registry", b"{}").status_code for _ in range(16)]
        assert 429 in statuses and 10 <= statuses.index(429) <= 14, statuses
        assert set(statuses[: statuses.index(429)]) == {401}
        assert (
            metric(daemon, 'reconciler_hooks_received_total{hook="registry",result="rate_limited"}')
            >= 1
        )


def dribbled_body(port: int) -> bytes:
    """A hook call whose body comes a byte every half second: what the server answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    sock.sendall(
        b"POST /hooks/registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right-token\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    answer = b""
    with sock:
        for _ in range(20):  # 10 s at most
            try:
                sock.sendall(b" ")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    return answer


def half_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /hooks/registry HTTP/1.1\r\nHost: x\r\nContent-Le")
    return sock


def test_stalled_clients_do_not_delay_healthz_and_are_cut_off(cli: Cli) -> None:
    settings = {"http_read_timeout": "1", "http_max_connections": "300", "resync_interval": "600"}
    with running(cli, ready=True, **settings) as daemon:
        assert post(daemon, "/hooks/registry", b"{}").status_code == 404  # no secret: hooks off
        opened = time.monotonic()
        stalled = [half_request(daemon.port) for _ in range(100)]
        timings = []
        for _ in range(5):
            started = time.monotonic()
            assert daemon.get("/healthz").status_code == 200
            timings.append(time.monotonic() - started)
        for sock in stalled:
            while sock.recv(4096):  # whatever the server says, then EOF (b"")
                pass
            sock.close()
        cut_off = time.monotonic() - opened
        print(f"/healthz with 100 stalled clients: {[round(t * 1000, 1) for t in timings]} ms; "
              f"all cut off after {cut_off:.2f} s")  # fmt: skip
        record("hooks", healthz_ms_with_100_stalled=max(round(t * 1000, 1) for t in timings))
        assert max(timings) < 0.1
        assert cut_off < 5.0  # a read timeout of 1 s, not the sockets' own 10 s
        assert "Traceback" not in daemon.log.read_text()


def test_connections_beyond_the_bound_are_answered_503(cli: Cli) -> None:
    settings = {"http_read_timeout": "30", "http_max_connections": "20", "resync_interval": "600"}
    with running(cli, ready=True, **settings) as daemon:
        idle = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10) for _ in range(20)]
        extra = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        answer = b""
        while chunk := extra.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ")
        idle.pop().close()

        def healthy() -> bool:
            try:
                return daemon.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("a free connection", healthy, timeout=10)
        assert "Traceback" not in daemon.log.read_text()
        for sock in idle:
            sock.close()


def close_waits(port: int) -> int:
    """Sockets of the daemon's port whose peer has closed and which the daemon has not."""
    out = subprocess.run(
        ["ss", "-Htan", "state", "close-wait", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_a_burst_of_short_lived_hook_calls_leaves_no_close_wait(
    world: World, cli: Cli, tmp_path: Path
) -> None:
    """As a registry's notifier calls: a connection per few events, closed by the caller once
    answered. Before: those connections sat in CLOSE-WAIT until the keep-alive timeout, held
    slots of http_max_connections, and new calls were answered 503 in bursts."""
    (tmp_path / "token").write_text("burst-token")
    settings = {
        "resync_interval": "600",
        "hooks__token_file": str(tmp_path / "token"),
        "hooks__max_per_minute": "100000",
        "http_max_connections": "64",
        "http_keep_alive_timeout": "30",
        "http_read_timeout": "30",
    }
    a = world.a.host
    (cli.specs / "app.yaml").write_text(
        spec_text("app", f"{a}/base/single:1", f"{a}/hooks/burst:1", "b")
    )
    body = envelope(a, "elsewhere/unrelated", "1")
    request = (
        b"POST /hooks/registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer burst-token\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with running(cli, ready=True, **settings) as daemon:
        statuses: list[bytes] = []
        for _ in range(1000):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
                sock.sendall(request)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                statuses.append(answer[9:12])
        assert statuses.count(b"202") == 1000, sorted(set(statuses))
        time.sleep(1)
        assert close_waits(daemon.port) == 0


def test_git_sync_reaches_the_git_hook_from_loopback_only(cli: Cli, tmp_path: Path) -> None:
    """hooks.git_from_loopback: a sidecar (git-sync) calls /hooks/git without credentials;
    /hooks/registry still wants the token, and so does /hooks/git from anywhere else."""
    token_file = tmp_path / "hook-token"
    token_file.write_text("secret-token-0123456789\n")
    settings = {
        "resync_interval": "600",
        "hooks__token_file": str(token_file),
        "hooks__git_from_loopback": "true",
    }
    with running(cli, ready=True, **settings) as daemon:
        assert post(daemon, "/hooks/git", b"").status_code == 202
        assert post(daemon, "/hooks/registry", b"{}").status_code == 401
        (cli.specs / "late.yaml").write_text(
            spec_text("late", "x.invalid/b:1", "x.invalid/t:1", "l")
        )
        assert post(daemon, "/hooks/git", b"").json() == {"rescan": 1}
        wait_for("the rescanned spec", lambda: "late" in daemon.status(), timeout=5)
    # Without the setting, the same call is refused.
    with running(
        cli, ready=True, name="strict", **{**settings, "hooks__git_from_loopback": "false"}
    ) as daemon:
        assert post(daemon, "/hooks/git", b"").status_code == 401
    # With no secret at all, only /hooks/git answers (from loopback), /hooks/registry is off.
    del settings["hooks__token_file"]
    with running(cli, ready=True, name="open", **settings) as daemon:
        assert post(daemon, "/hooks/git", b"").status_code == 202
        assert post(daemon, "/hooks/registry", b"{}").status_code == 404


def test_the_git_hook_refuses_a_non_loopback_caller_without_credentials(tmp_path: Path) -> None:
    """The address check, on the server's application with a client address hypercorn would
    give for a caller from another pod (no second interface is needed)."""
    rescans: list[int] = []

    async def pushes(_: object) -> int:
        return 0

    settings = Settings.model_validate({"hooks": {"git_from_loopback": True}})
    board = StatusBoard()
    app = _App(settings, board, Metrics(board), HookTargets(pushes, lambda: rescans.append(1)))
    app.auth = HookAuth(token=b"t")

    async def call(client: str) -> int:
        sent: list[dict[str, object]] = []
        scope = {"type": "http", "path": "/hooks/git", "method": "POST", "headers": [],
                 "client": (client, 40000)}  # fmt: skip

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])  # type: ignore[call-overload]

    statuses = {
        c: asyncio.run(call(c)) for c in ("10.1.2.3", "::ffff:127.0.0.1", "::1", "127.0.0.9")
    }
    assert statuses == {"10.1.2.3": 401, "::ffff:127.0.0.1": 202, "::1": 202, "127.0.0.9": 202}
    assert len(rescans) == 3
