"""The daemon's modes against real registries: observe never writes and shows the plan in
/status and /metrics; base_policy locked (and auto, where a lock exists) builds what the lock
says and reports a moved base as BaseMoved without rebuilding; a suspended spec is validated and
never pushed."""

from __future__ import annotations

import uuid

from tests.conftest import Cli, World
from tests.test_daemon import copy_tag, running, spec_text, tag_digest, wait_for

WRITES = ("PUT", "POST", "PATCH", "DELETE")


def test_observe_mode_never_writes_and_shows_the_plan(world: World, cli: Cli) -> None:
    a = world.a.host
    repo = f"observe/{uuid.uuid4().hex[:8]}"
    cli.write("app.yaml", spec_text("app", f"{a}/base/single:1", f"{a}/{repo}:1", "observed"))
    diff = cli("diff", "-o", "json")
    assert diff.code == 2
    planned = next(s for s in diff.json()["specs"] if s["name"] == "app")  # type: ignore[union-attr, index]
    mark = world.a.mark()
    with running(cli, ready=True, mode="observe") as daemon:
        status, _ = wait_for(
            "OutOfSync with a plan",
            lambda: (s := daemon.status().get("app")) and s["state"] == "OutOfSync" and s,
        )
        # diff and /status agree on the plan, field for field.
        for key in ("blobs", "manifests", "tags"):
            assert status["plan"][key] == planned[key], key
        metrics = daemon.get("/metrics").text
        assert f'reconciler_pending{{kind="tags"}} {len(planned["tags"])}.0' in metrics
        assert 'reconciler_specs{state="OutOfSync"} 1.0' in metrics
        # Still observed, and still nothing written, after a resync has run it again.
        first = status["lastAttempt"]
        again, _ = wait_for(
            "a resync that ended",
            lambda: (
                (s := daemon.status()["app"])["lastAttempt"] != first
                and s["state"] != "Progressing"
                and s
            ),
            20,
        )
        assert again["state"] == "OutOfSync"
        writes = [r for r in world.a.requests(since=mark) if r.method in WRITES]
        assert writes == []
        assert tag_digest(a, repo, "1") is None
        # Said in the log (before: nothing), once however many resyncs see it again.
        log = daemon.log.read_text()
        assert log.count("app is OutOfSync (observe mode, nothing written): ") == 1, log
        assert "tag(s) to push" in log
        # Someone applies; the daemon sees it in sync, and says that too.
        assert cli("apply").code == 0
        wait_for("Synced", lambda: daemon.status()["app"]["state"] == "Synced", 20)
        wait_for(
            "the log line", lambda: "app is in sync again (observe mode)" in daemon.log.read_text()
        )


def test_locked_daemon_reports_a_moved_base_and_pushes_nothing(world: World, cli: Cli) -> None:
    a = world.a.host
    name = uuid.uuid4().hex[:8]
    base, repo = f"{a}/locked-base/{name}:1", f"locked/{name}"
    copy_tag(f"{a}/base/single:1", base)
    cli.write("app.yaml", spec_text("app", base, f"{a}/{repo}:1", "locked"))
    assert cli("lock").code == 0
    with running(cli, ready=True, base_policy="locked") as daemon:
        wait_for("Synced", lambda: daemon.status().get("app", {}).get("state") == "Synced")
        pushed = tag_digest(a, repo, "1")
        assert pushed is not None
        copy_tag(f"{a}/base/multi:1", base)  # the tag moves upstream, with no commit
        mark = world.a.mark()
        status, _ = wait_for(
            "BaseMoved",
            lambda: (s := daemon.status().get("app")) and s["state"] == "BaseMoved" and s,
        )
        assert "now names" in status["message"] and "lock" in status["message"]
        assert 'reconciler_specs{state="BaseMoved"} 1.0' in daemon.get("/metrics").text
        assert tag_digest(a, repo, "1") == pushed
        writes = [r for r in world.a.requests(since=mark) if r.method in WRITES]
        assert writes == []
        # The lock moves in git: the spec is rebuilt on the new base.
        assert cli("lock", "--update").code == 0
        wait_for("rebuilt", lambda: tag_digest(a, repo, "1") not in (None, pushed))
        wait_for("Synced", lambda: daemon.status().get("app", {}).get("state") == "Synced")


def test_the_default_daemon_keeps_a_committed_lock(world: World, cli: Cli) -> None:
    """base_policy auto (the default): a spec a reconciler.lock covers is built as locked, one
    without follows its tag; /status and the log say which; a daemon that followed a moved
    tag before puts the tags back on the locked build, and says so."""
    a = world.a.host
    name = uuid.uuid4().hex[:8]
    locked_base, free_base = f"{a}/auto-base/{name}-l:1", f"{a}/auto-base/{name}-f:1"
    kept, free = f"auto/{name}-kept", f"auto/{name}-free"
    for base in (locked_base, free_base):
        copy_tag(f"{a}/base/single:1", base)
    cli.write("app.yaml", spec_text("kept", locked_base, f"{a}/{kept}:1", "auto"))
    assert cli("lock").code == 0  # specs/reconciler.lock covers specs/app.yaml only
    cli.write("free/free.yaml", spec_text("free", free_base, f"{a}/{free}:1", "auto"))
    with running(cli, ready=True) as daemon:
        status = daemon.get("/status").json()
        assert status["basePolicy"] == "auto"
        policies = {s["name"]: s["basePolicy"] for s in status["specs"]}
        assert policies == {"kept": "locked", "free": "follow"}
        assert (
            "base_policy auto: 1 spec(s) built from their reconciler.lock (a moved tag is "
            "reported as BaseMoved, not rebuilt); 1 follow their tags (no lock)"
        ) in daemon.log.read_text()
        first = {r: tag_digest(a, r, "1") for r in (kept, free)}
        for base in (locked_base, free_base):
            copy_tag(f"{a}/base/multi:1", base)  # both tags move upstream, with no commit
        wait_for("the free spec rebuilt", lambda: tag_digest(a, free, "1") != first[free])
        moved, _ = wait_for(
            "BaseMoved",
            lambda: (s := daemon.status().get("kept")) and s["state"] == "BaseMoved" and s,
        )
        assert "the tags stay on the build from the locked digest" in moved["message"]
        assert tag_digest(a, kept, "1") == first[kept]
    # A daemon told to follow moves the locked spec's tag; the default one puts it back.
    with running(cli, ready=True, name="follow", base_policy="follow") as daemon:
        wait_for("followed", lambda: tag_digest(a, kept, "1") != first[kept])
        assert "base_policy follow: 2 spec(s) follow their tags" in daemon.log.read_text()
    with running(cli, ready=True, name="auto-again") as daemon:
        wait_for("put back", lambda: tag_digest(a, kept, "1") == first[kept])
        wait_for("BaseMoved", lambda: daemon.status()["kept"]["state"] == "BaseMoved")
        log = daemon.log.read_text()
        assert "put the tags back on the build from the locked digest" in log
        assert "until the lock is updated in git" in log


def test_a_locked_daemon_fails_a_spec_no_lock_covers(world: World, cli: Cli) -> None:
    a = world.a.host
    repo = f"strict/{uuid.uuid4().hex[:8]}"
    cli.write("app.yaml", spec_text("app", f"{a}/base/single:1", f"{a}/{repo}:1", "strict"))
    with running(cli, ready=True, base_policy="locked") as daemon:
        failed, _ = wait_for(
            "Failed", lambda: (s := daemon.status().get("app")) and s["state"] == "Failed" and s
        )
        lock = cli.specs.absolute() / "reconciler.lock"
        assert failed["message"] == (
            f"{cli.specs / 'app.yaml'}:5: spec.base: base_policy is locked and no lock covers "
            f"this spec (no {lock}); run `reconciler lock` and commit it, or set "
            "base_policy: auto"
        )
        assert tag_digest(a, repo, "1") is None


def test_a_suspended_spec_is_validated_and_never_pushed(world: World, cli: Cli) -> None:
    a = world.a.host
    repo = f"suspended/{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "held.yaml", f"base: {a}/base/single:1\nsuspend: true\ntargets: [{a}/{repo}:1]\n"
    )
    mark = world.a.mark()
    diff = cli("diff", "-o", "json")
    assert diff.code == 0, diff.stdout
    (spec,) = diff.json()["specs"]  # type: ignore[misc]
    assert spec["state"] == "Suspended"  # type: ignore[index]
    assert cli("apply").code == 0
    assert world.a.requests(since=mark) == []  # not even a HEAD
    cli.write_spec(
        "held.yaml", f"base: {a}/base/single:1\nsuspend: yes-please\ntargets: [{a}/{repo}:1]\n"
    )
    invalid = cli("validate")
    assert invalid.code == 1 and "spec.suspend" in invalid.stderr + invalid.stdout


def test_the_daemon_builds_a_new_matching_release_on_its_next_pass(world: World, cli: Cli) -> None:
    a = world.a.host
    name = uuid.uuid4().hex[:8]
    base, repo = f"{a}/fanout-base/{name}", f"fanout-daemon/{name}"
    for tag in ("1.0.0", "1.1.0"):
        copy_tag(f"{a}/base/single:1", f"{base}:{tag}")
    cli.write_spec(
        "app.yaml",
        f'base: {base}\nbaseTags: {{semver: ">=1", keep: 2}}\ntargets: ["{a}/{repo}:{{tag}}"]\n',
        spec_name="app",
    )
    with running(cli, ready=True) as daemon:
        wait_for(
            "both releases", lambda: tag_digest(a, repo, "1.0.0") and tag_digest(a, repo, "1.1.0")
        )
        assert daemon.status()["app"]["state"] == "Synced"
        assert len(daemon.status()["app"]["tags"]) == 2
        copy_tag(f"{a}/base/single:1", f"{base}:1.2.0")  # a new release upstream
        wait_for("the new release", lambda: tag_digest(a, repo, "1.2.0"), timeout=30)
        wait_for(
            "Synced over the new selection",
            lambda: (
                (s := daemon.status()["app"])["state"] == "Synced"
                and {t["target"].rsplit(":", 1)[1] for t in s["tags"]} == {"1.2.0", "1.1.0"}
            ),
        )
