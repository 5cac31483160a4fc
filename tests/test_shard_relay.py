"""Shards share events (issue 25): three daemon processes on loopback as the replicas of a
sharded StatefulSet, a real docker-registry notifying only the first. A push of a base that
specs of every shard are built on rebuilds all of them, through the first replica's relay."""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack
from pathlib import Path

from reconciler.daemon.scan import shard_of
from tests.conftest import Cli, World
from tests.support.registry import start_registry
from tests.test_daemon import copy_tag, running, spec_text, tag_digest, wait_for
from tests.test_daemon_hooks import metric, notifying

SHARDS = 3


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def names_per_shard() -> list[str]:
    """One spec name for each shard (shard_of is the daemon's own hash)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        name = f"relay-{n}"
        found.setdefault(shard_of(name, SHARDS), name)
        n += 1
    return [found[i] for i in range(SHARDS)]


def test_a_push_told_to_one_replica_rebuilds_the_specs_of_every_shard(
    world: World, cli: Cli, tmp_path: Path
) -> None:
    token = "relay-token"
    (tmp_path / "token").write_text(token)
    ports = free_ports(SHARDS)
    peers = json.dumps([f"http://127.0.0.1:{port}" for port in ports])
    with ExitStack() as stack:
        registry = start_registry(notifying(ports[0], token))
        stack.callback(registry.stop)
        r = registry.host
        copy_tag(f"{world.a.host}/base/single:1", f"{r}/relay/base:1")
        names = names_per_shard()
        for name in names:
            (cli.specs / f"{name}.yaml").write_text(
                spec_text(name, f"{r}/relay/base:1", f"{r}/relay/{name}:1", name)
            )
        daemons = [
            stack.enter_context(
                running(
                    cli,
                    ready=True,
                    name=f"replica-{i}",
                    listen=f"127.0.0.1:{port}",
                    shard=f"{i}/{SHARDS}",
                    state_dir=str(tmp_path / f"state-{i}"),
                    resync_interval="600",
                    hooks__token_file=str(tmp_path / "token"),
                    hooks__peers=peers,
                    log_level="debug",
                )
            )
            for i, port in enumerate(ports)
        ]
        first = {
            name: wait_for(
                f"{name}'s first build", lambda n=name: tag_digest(r, f"relay/{n}", "1")
            )[0]  # type: ignore[misc]
            for name in names
        }
        time.sleep(1)  # the first builds' own pushes notified replica 0 too: let them settle
        copy_tag(f"{world.a.host}/base/multi:1", f"{r}/relay/base:1")
        pushed = time.monotonic()

        def all_rebuilt() -> bool:
            return all(tag_digest(r, f"relay/{n}", "1") not in (None, first[n]) for n in names)

        wait_for("every shard's rebuild", all_rebuilt, timeout=10)
        latency = time.monotonic() - pushed
        print(f"push -> every shard rebuilt: {latency:.3f} s")
        assert latency < 3.0
        for i, daemon in enumerate(daemons[1:], start=1):
            peer = f"http://127.0.0.1:{ports[i]}"
            sent = metric(
                daemons[0], f'reconciler_hook_relays_total{{peer="{peer}",result="sent"}}'
            )
            assert sent >= 1
            # A replica relays only what it was told first-hand: nothing comes back.
            assert metric(daemon, "reconciler_hook_relays_total") == 0
            assert "relayed by" in daemon.log.read_text()
        for daemon in daemons:
            assert token not in daemon.log.read_text()
            assert "Traceback" not in daemon.log.read_text()
