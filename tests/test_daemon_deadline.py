"""The daemon's spec_deadline (issue 21): a spec stalled on a registry we do not control is
cancelled at its deadline, frees the concurrency slots it held, fails naming the deadline and
the request it was waiting on, and never holds back the other specs of its pass; the next pass
tries it again.

The stalls are tests/support/hostileregistry.py's trickles, under a request_deadline and a
transfer rate rule set out of reach, so that only spec_deadline can end them.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cli, World
from tests.support.hostileregistry import HostileRegistry, image_for
from tests.support.report import record
from tests.test_daemon import Daemon, running, tag_digest, wait_for

DEADLINE = 4  # seconds: spec_deadline
# Only spec_deadline ends a trickle: a request may take an hour, a blob may come at any rate,
# and a byte every 0.3-0.4 s keeps the read timeout from firing.
OUT_OF_REACH = {
    "request_deadline": "3600",
    "min_transfer_rate": "0",
    "timeout": "5",
    "retries": "1",
    "spec_deadline": str(DEADLINE),
}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry()
    yield server
    server.close()


def write(cli: Cli, name: str, base: str, target: str) -> None:
    cli.write_spec(f"{name}.yaml", f"base: {base}\ntargets: [{target}]", spec_name=name)


def state(daemon: Daemon, name: str) -> str | None:
    spec: dict[str, Any] = daemon.status().get(name, {})
    return spec.get("state")


def clean_log(daemon: Daemon) -> None:
    text = daemon.log.read_text(errors="replace")
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]


def test_a_stalled_spec_fails_at_its_deadline_and_never_holds_back_the_others(
    world: World, cli: Cli, hostile: HostileRegistry
) -> None:
    a, run = world.a.host, uuid.uuid4().hex[:8]
    stalled = {"head-trickle": "stalled-head", "layer-trickle": "stalled-layer"}
    for case, name in stalled.items():
        write(cli, name, f"{hostile.host}/hostile/{case}:1", f"{a}/deadline-{run}/{name}:1")
    for name in ("up-1", "up-2"):
        write(cli, name, f"{a}/base/single:1", f"{a}/deadline-{run}/{name}:1")
    started = time.monotonic()
    with running(cli, **OUT_OF_REACH) as daemon:

        def honest_synced() -> bool:
            return all(state(daemon, n) == "Synced" for n in ("up-1", "up-2"))

        _, honest = wait_for("the honest specs Synced", honest_synced, timeout=DEADLINE)
        # Shown at once, while the stalled specs of the same pass are still stalled.
        assert {state(daemon, n) for n in stalled.values()} == {"Progressing"}
        assert tag_digest(a, f"deadline-{run}/up-1", "1") is not None

        def failed() -> bool:
            return all(state(daemon, n) == "Failed" for n in stalled.values())

        wait_for("the stalled specs Failed", failed, timeout=DEADLINE + 6)
        failed_after = time.monotonic() - started
        status = daemon.status()
        for case, name in stalled.items():
            message = status[name]["message"]
            assert message.startswith(f"spec {name}: pass over spec_deadline ({DEADLINE} s)")
            # The request it was waiting on: the trickling GET, on the hostile registry.
            assert f"waiting on GET http://{hostile.host}/v2/hostile/{case}/" in message, message
        layer = image_for("layer-trickle").layers[0].digest
        assert f"/blobs/{layer}" in status["stalled-layer"]["message"]
        assert daemon.get("/readyz").status_code == 200  # the first full pass is over
        metrics = daemon.get("/metrics").text
        assert re.search(r"^reconciler_spec_deadlines_total 2\.0$", metrics, re.M), metrics

        # The next pass tries it again, after its backoff, and it fails the same way.
        def retried() -> bool:
            return int(daemon.status()["stalled-head"]["consecutiveFailures"]) >= 2

        wait_for("a second try", retried, timeout=2.4 + DEADLINE + 4)
        assert daemon.status()["stalled-head"]["message"].startswith(
            "spec stalled-head: pass over spec_deadline"
        )
        assert state(daemon, "up-1") == "Synced"
        clean_log(daemon)
    for name in stalled.values():
        assert tag_digest(a, f"deadline-{run}/{name}", "1") is None
    record(
        "spec_deadline", honest_synced_s=round(honest, 2), stalled_failed_s=round(failed_after, 2)
    )
    print(f"honest specs Synced in {honest:.2f} s; stalled ones Failed at {failed_after:.2f} s")


def test_the_slot_a_stalled_copy_held_is_free_at_its_deadline(
    world: World, cli: Cli, hostile: HostileRegistry
) -> None:
    """One slot per registry: a copy from a trickling source holds the target registry's only
    slot. Once the spec is past its deadline, the copy is cancelled and the slot is free: a
    spec waiting for it goes on then, not when the trickle ends (116 bytes at 0.3 s each)."""
    a, run = world.a.host, uuid.uuid4().hex[:8]
    write(cli, "stalled", f"{hostile.host}/hostile/layer-trickle:1", f"{a}/slot-{run}/stalled:1")
    layer = image_for("layer-trickle").layers[0].digest
    blob = f"/v2/hostile/layer-trickle/blobs/{layer}"
    with running(cli, concurrency="1", **OUT_OF_REACH) as daemon:
        wait_for("the trickle to start", lambda: ("GET", blob) in hostile.requests, timeout=10)
        write(cli, "waits", f"{a}/base/single:1", f"{a}/slot-{run}/waits:1")
        _, took = wait_for(
            "the waiting spec Synced", lambda: state(daemon, "waits") == "Synced", timeout=15
        )
        # It waited for the slot until the stalled copy was cancelled, and no longer.
        assert state(daemon, "stalled") == "Failed"
        assert took < DEADLINE + 3, took
        assert "pass over spec_deadline" in daemon.status()["stalled"]["message"]
        clean_log(daemon)
    assert tag_digest(a, f"slot-{run}/waits", "1") is not None
    assert tag_digest(a, f"slot-{run}/stalled", "1") is None
    record("spec_deadline", slot_freed_waiting_spec_synced_s=round(took, 2))
    print(f"the spec waiting for the slot was Synced {took:.2f} s after it was written")
