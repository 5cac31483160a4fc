"""Notifications out of the daemon: event detection from record transitions, the three formats,
the queue, and a real daemon against a real registry POSTing to a real (local) sink."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from reconciler.daemon.events import Event, EventDetector, EventTag
from reconciler.daemon.machine import Phase, SpecRecord
from reconciler.daemon.notify import Notifier, build_body, build_cloudevent, build_slack
from reconciler.daemon.status import TagStatus
from reconciler.errors import SettingsError
from reconciler.model.desired import build_desired
from reconciler.model.plan import build_plan
from reconciler.model.report import ExecResult, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.digest import Digest
from reconciler.settings import NotificationSettings, load_settings
from reconciler.spec import LoadedSpec
from reconciler.store.registry.retry import RetryPolicy
from tests.conftest import Cli, World
from tests.factories import digest, make_base, make_image, make_observed, make_spec
from tests.support.images import skopeo
from tests.support.report import record
from tests.test_daemon import copy_tag, running, spec_text, tag_digest, wait_for

# -- event detection from record transitions (pure) ---------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
SPEC = make_spec("app", annotations={"note": "x"})
TARGET = "t.io/team/app:1"


def report(
    base_layers: list[int],
    observed: str | None,
    *,
    state: SpecState = SpecState.SYNCED,
    spec: LoadedSpec = SPEC,
    applied: bool = True,
    error: str | None = None,
) -> SpecReport:
    """A pass's report of `spec` on a base of `base_layers`, whose target named `observed`."""
    base = make_base([make_image("amd64", base_layers)], index=False)
    desired = build_desired(spec, base, [])
    target = desired.targets[0]
    seen = Digest.parse(observed) if observed else None
    plan = build_plan(desired, make_observed([(target, seen)]))
    result = ExecResult(tags=len(plan.tags)) if applied and plan.tags else None
    if state in (SpecState.FAILED, SpecState.INVALID):
        return SpecReport(spec.file, state, spec.name, desired, error=error)
    return SpecReport(spec.file, state, spec.name, desired, None, plan, result, error)


def root_of(r: SpecReport) -> str:
    assert r.desired is not None
    return str(r.desired.root.digest)


class Life:
    """One spec's record through its transitions, with the events each change makes."""

    def __init__(self, *, locked: bool = False) -> None:
        self.detector = EventDetector(locked=locked, clock=lambda: NOW)
        self.record = SpecRecord.new(SPEC, "fp1")
        self.events: list[Event] = []

    def change(self, new: SpecRecord, reports: list[SpecReport] | None = None) -> list[str]:
        if new is self.record:
            return []  # the daemon commits only records a transition changed
        made = self.detector.observe(self.record, new, reports or [])
        self.record = new
        self.events += made
        return [e.kind for e in made]

    def run(self, *reports: SpecReport) -> list[str]:
        self.change(self.record.asked())  # a resync, when it is Synced
        self.change(self.record.started(1.0))
        assert self.record.phase is Phase.RUNNING
        tags = (TagStatus(TARGET, root_of(reports[0]), root_of(reports[0])),)
        if any(r.state in (SpecState.FAILED, SpecState.INVALID) for r in reports):
            error = "; ".join(r.error or "" for r in reports)
            return self.change(self.record.failed(error, None, 0.0, 2.0), list(reports))
        shown = reports[0].state if reports[0].state is not SpecState.SYNCED else None
        message = reports[0].error if shown else None
        return self.change(self.record.succeeded(tags, 2.0, shown, None, message), list(reports))


def test_an_apply_says_old_and_new_digest_per_tag_and_an_in_sync_pass_says_nothing() -> None:
    life = Life()
    first = report([1], None)
    assert life.run(first) == ["applied"]
    event = life.events[-1]
    assert event.tags == (EventTag(TARGET, None, root_of(first)),)
    assert (event.spec, event.file, event.state) == ("app", "app.yaml", SpecState.SYNCED)
    assert event.message.startswith("applied: 1 tag created")
    assert life.run(report([1], root_of(first), applied=False)) == []
    assert life.run(report([1], root_of(first), applied=False)) == []


def test_a_tag_put_back_to_an_unchanged_desired_digest_is_drift_repaired() -> None:
    life = Life()
    first = report([1], None)
    life.run(first)
    assert life.run(report([1], digest(9))) == ["applied", "drift_repaired"]
    drift = life.events[-1]
    assert drift.tags == (EventTag(TARGET, digest(9), root_of(first)),)
    assert TARGET in drift.message


def test_a_new_base_digest_that_caused_an_apply_is_base_moved_not_drift() -> None:
    life = Life()
    first = report([1], None)
    life.run(first)
    rebuilt = report([1, 2], root_of(first))
    assert life.run(rebuilt) == ["applied", "base_moved"]
    moved = life.events[-1]
    assert moved.tags == (EventTag(TARGET, root_of(first), root_of(rebuilt)),)
    assert "r.io/library/base:1 moved from sha256:" in moved.message


def test_a_new_target_is_no_drift() -> None:
    life = Life()
    life.run(report([1], None))
    two = make_spec("app", annotations={"note": "x"}, targets=[TARGET, "t.io/team/app:2"])
    base = make_base([make_image("amd64", [1])], index=False)
    desired = build_desired(two, base, [])
    root = desired.root.digest
    plan = build_plan(
        desired, make_observed([(desired.targets[0], root), (desired.targets[1], None)])
    )
    pass_ = SpecReport("app.yaml", SpecState.SYNCED, "app", desired, None, plan, ExecResult(tags=1))
    assert life.run(pass_) == ["applied"]


def test_failing_is_told_once_with_its_error_then_recovered() -> None:
    life = Life()
    life.run(report([1], None))
    down = report([1], None, state=SpecState.FAILED, error="base r.io/library/base:1: not found")
    assert life.run(down) == ["failed"]
    failed = life.events[-1]
    assert failed.state is SpecState.FAILED and "not found" in failed.message
    life.change(life.record.retry(life.record.retry_at))
    assert life.run(down) == []  # still failing: the retry says nothing
    life.change(life.record.retry(life.record.retry_at))
    assert life.run(report([1], digest(9))) == ["recovered", "applied", "drift_repaired"]
    assert life.run(report([1], None, applied=False)) == []


def test_a_broken_file_is_failed_as_invalid_and_its_fix_recovered() -> None:
    life = Life()
    life.run(report([1], None))
    assert life.change(life.record.invalid("app.yaml:3: spec.base: unclosed")) == ["failed"]
    assert life.events[-1].state is SpecState.INVALID
    assert life.events[-1].message == "app.yaml:3: spec.base: unclosed"
    assert life.change(life.record.invalid("app.yaml:3: spec.base: unclosed")) == []
    assert life.change(life.record.loaded(SPEC, "fp2")) == []
    assert life.run(report([1], None, applied=False)) == ["recovered"]


def test_a_deleted_spec_is_orphaned_once() -> None:
    life = Life()
    life.run(report([1], None))
    assert life.change(life.record.deleted("spec deleted; tags left in place")) == ["orphaned"]
    orphaned = life.events[-1]
    assert orphaned.state is SpecState.ORPHANED and orphaned.message.startswith("spec deleted")
    assert orphaned.tags[0].target == TARGET
    assert life.change(life.record.note("pruned 1 tag")) == []


def test_a_run_abandoned_at_shutdown_is_no_failure() -> None:
    life = Life()
    life.run(report([1], None))
    life.change(life.record.asked())
    life.change(life.record.started(3.0))
    assert life.change(life.record.abandoned("abandoned at shutdown")) == []
    assert life.record.phase is Phase.BACKOFF


def test_locked_base_moved_is_told_when_entered() -> None:
    life = Life(locked=True)
    life.run(report([1], None))
    said = "base r.io/library/base:1 now names sha256:1234 (locked: sha256:abcd)"
    moved = report([1], None, state=SpecState.BASE_MOVED, applied=False, error=said)
    assert life.run(moved) == ["base_moved"]
    assert life.events[-1].message == said and life.events[-1].state is SpecState.BASE_MOVED
    assert life.run(moved) == []
    # The lock is updated in git: the rebuild is an apply, not a follow-mode base move.
    assert life.run(report([1, 2], None)) == ["applied"]
    assert life.run(moved) == ["base_moved"]


def test_events_have_unique_ids() -> None:
    life = Life()
    life.run(report([1], None))
    life.run(report([1], digest(9)))
    assert len({e.id for e in life.events}) == len(life.events) == 3


# -- formats ----------------------------------------------------------------------------

EVENT = Event(
    "applied",
    "app",
    "specs/app.yaml",
    SpecState.SYNCED,
    "applied: 1 tag moved <&>",
    (EventTag("r.io/team/app:1", digest(1), digest(2)),),
    NOW,
    "0f8e0b7e-0000-4000-8000-000000000001",
)
PLAIN = {
    "id": "0f8e0b7e-0000-4000-8000-000000000001",
    "type": "applied",
    "spec": "app",
    "file": "specs/app.yaml",
    "state": "Synced",
    "message": "applied: 1 tag moved <&>",
    "tags": [{"target": "r.io/team/app:1", "old": digest(1), "new": digest(2)}],
    "time": "2026-12-01T12:00:00.000Z",
}


def test_the_plain_shape() -> None:
    body, content_type = build_body(EVENT, "plain", "reconciler/host")
    assert json.loads(body) == PLAIN
    assert content_type == "application/json; charset=utf-8"


def test_cloudevents_structured_mode() -> None:
    assert build_cloudevent(EVENT, "reconciler/host") == {
        "specversion": "1.0",
        "id": EVENT.id,
        "source": "reconciler/host",
        "type": "dev.reconciler.applied",
        "subject": "app",
        "time": "2026-12-01T12:00:00.000Z",
        "datacontenttype": "application/json",
        "data": PLAIN,
    }
    _body, content_type = build_body(EVENT, "cloudevents", "reconciler/host")
    assert content_type == "application/cloudevents+json; charset=utf-8"


def test_slack_message() -> None:
    message = build_slack(EVENT)
    assert message["text"] == "app: applied (Synced)"
    section, context = message["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == (
        "*app*: applied (Synced)\napplied: 1 tag moved &lt;&amp;&gt;\n"
        f"`r.io/team/app:1`: sha256:{'0' * 12} -> sha256:{'0' * 12}"
    )
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == (
        f"specs/app.yaml | 2026-12-01T12:00:00.000Z | id {EVENT.id}"
    )
    long = Event(**{**EVENT.__dict__, "message": "x" * 5000})
    assert len(build_slack(long)["blocks"][0]["text"]["text"]) == 3000


# -- the queue --------------------------------------------------------------------------


def test_emit_never_waits_and_a_full_queue_drops_and_counts() -> None:
    registry = CollectorRegistry()
    counter = Counter("n", "n", ["endpoint", "result"], registry=registry)
    endpoints = [
        NotificationSettings(url="http://127.0.0.1:1/", format="plain", name="ops"),
        NotificationSettings(url="http://127.0.0.1:1/", format="slack", events=("failed",)),
    ]

    async def emit_three() -> None:
        notifier = Notifier(endpoints, queue=2, retry=RetryPolicy(0), counter=counter)
        for _ in range(3):
            notifier.emit(EVENT)  # not started: nothing takes events off the queues

    asyncio.run(emit_three())
    assert registry.get_sample_value("n_total", {"endpoint": "ops", "result": "dropped"}) == 1
    assert registry.get_sample_value("n_total", {"endpoint": "1", "result": "dropped"}) == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": "plain"}, "exactly one of url and url_file"),
        ({"url": "http://h/", "url_file": "/f", "format": "plain"}, "exactly one"),
        ({"url": "ftp://h/", "format": "plain"}, "notifications.0.url"),
        ({"url": "http://h/", "format": "xml"}, "notifications.0.format"),
        ({"url": "http://h/", "format": "plain", "events": ["pushed"]}, "events"),
        ({"url": "http://h/", "format": "plain", "headers": {"Authorization": "x"}}, "secret"),
        ({"url": "http://h/", "format": "plain", "headers": {"X-Api-Key": "x"}}, "secret"),
        ({"url": "http://h/", "format": "plain", "headers": {"a b": "x"}}, "header name"),
    ],
)
def test_bad_notification_settings_are_clear_errors(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"notifications": [entry]}))
    with pytest.raises(SettingsError, match=message):
        load_settings(config)


def test_endpoint_names_are_unique(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    entries = [{"url": "http://h/", "format": "plain"}, {"url": "http://h/", "format": "plain"}]
    config.write_text(json.dumps({"notifications": [*entries, {**entries[0], "name": "1"}]}))
    with pytest.raises(SettingsError, match="'1' is used twice"):
        load_settings(config)


# -- a real daemon, a real registry, a local sink ------------------------------------------


@dataclass
class Sink:
    """Records every POST (and when it came); answers each path from its script (statuses,
    or (status, Retry-After), then 200), or holds the request unanswered for `hang` seconds."""

    host: str = ""
    script: dict[str, list[int | tuple[int, str]]] = field(default_factory=dict)
    hang: float = 0.0
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    times: list[tuple[str, float]] = field(default_factory=list)
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _h, body in list(self.seen) if p == path]


@contextmanager
def sink(**options: Any) -> Iterator[Sink]:
    state = Sink(**options)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.seen.append((self.path, dict(self.headers.items()), body))
                state.times.append((self.path, time.monotonic()))
                script = state.script.get(self.path.split("?", 1)[0], [])
                answer = script.pop(0) if script else 200
            status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
            if state.hang:
                state.held += 1
                state.release.wait(state.hang)  # accepted, never answered (until teardown)
                return
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.host = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def raw_digest(reference: str) -> str:
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def metric(text: str, endpoint: str, result: str) -> float:
    pattern = rf'reconciler_notifications_total\{{endpoint="{endpoint}",result="{result}"\}} (\S+)'
    match = re.search(pattern, text)
    assert match, f"no reconciler_notifications_total for {endpoint}/{result}"
    return float(match[1])


def kinds(bodies: list[dict[str, Any]], spec: str) -> list[str]:
    return [b["data"]["type"] if "data" in b else b["type"] for b in bodies if _spec(b) == spec]


def _spec(body: dict[str, Any]) -> str | None:
    if "subject" in body:
        return str(body["subject"])
    if "spec" in body:
        return str(body["spec"])
    return None


def test_apply_failure_and_recovery_reach_cloudevents_and_slack(world: World, cli: Cli) -> None:
    a = world.a.host
    copy_tag(f"{a}/base/single:1", f"{a}/notify/base:1")
    secret = "Bearer s3cret-never-logged-7c1f"
    (cli.root / "auth").write_text(secret + "\n")
    url_secret = "hooks-path-secret-91d2"
    with sink() as out:
        (cli.root / "slack-url").write_text(f"http://{out.host}/slack/{url_secret}\n")
        endpoints = [
            {
                "name": "ce",
                "url": f"http://{out.host}/ce",
                "format": "cloudevents",
                "headers": {"X-Team": "images"},
                "headers_from_files": {"Authorization": str(cli.root / "auth")},
            },
            {"url_file": str(cli.root / "slack-url"), "format": "slack"},
        ]
        with running(
            cli, ready=True, log_level="debug", notifications=json.dumps(endpoints)
        ) as daemon:
            target = f"{a}/notify/app:1"
            spec = cli.specs / "app.yaml"
            spec.write_text(spec_text("app", f"{a}/notify/base:1", target, "one"))
            wait_for("applied", lambda: "applied" in kinds(out.bodies("/ce"), "app"))
            first = raw_digest(target)

            # The base goes missing (a new base tag that does not exist yet): Failed.
            spec.write_text(spec_text("app", f"{a}/notify/later:1", target, "one"))
            wait_for("failed", lambda: "failed" in kinds(out.bodies("/ce"), "app"))
            wait_for("a retry", lambda: daemon.status()["app"]["consecutiveFailures"] >= 2)
            copy_tag(f"{a}/base/single:1", f"{a}/notify/later:1")
            wait_for("recovered", lambda: "recovered" in kinds(out.bodies("/ce"), "app"))
            wait_for("applied again", lambda: kinds(out.bodies("/ce"), "app").count("applied") == 2)
            second = raw_digest(target)
            slack_path = f"/slack/{url_secret}"
            wait_for("slack", lambda: len(out.bodies(slack_path)) >= 4)
            metrics = daemon.get("/metrics").text
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=20) == 0
        log = daemon.log.read_text()

    ce = [b for b in out.bodies("/ce") if b["subject"] == "app"]
    assert [b["type"] for b in ce] == [
        "dev.reconciler.applied",
        "dev.reconciler.failed",
        "dev.reconciler.recovered",
        "dev.reconciler.applied",
    ]
    applied, failed, _recovered, again = ce
    for event in ce:
        assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
        assert event["source"].startswith("reconciler/")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])
        assert event["data"]["spec"] == "app" and event["data"]["file"] == str(spec)
        assert event["data"]["id"] == event["id"]
    assert len({e["id"] for e in ce}) == 4
    assert applied["data"]["tags"] == [{"target": target, "old": None, "new": first}]
    assert applied["data"]["state"] == "Synced"
    assert failed["data"]["state"] == "Failed"
    assert "notify/later" in failed["data"]["message"]
    assert again["data"]["tags"] == [{"target": target, "old": first, "new": second}]
    assert first != second

    slack = [b for b in out.bodies(slack_path)]
    assert [b["text"] for b in slack] == [
        "app: applied (Synced)",
        "app: failed (Failed)",
        "app: recovered (Synced)",
        "app: applied (Synced)",
    ]
    assert f"`{target}`: (none) -> {first[:19]}" in slack[0]["blocks"][0]["text"]["text"]
    assert slack[3]["blocks"][0]["text"]["text"].endswith(f"{first[:19]} -> {second[:19]}")

    ce_headers = [h for p, h, _b in out.seen if p == "/ce"]
    assert all(h["Authorization"] == secret for h in ce_headers)
    assert all(h["X-Team"] == "images" for h in ce_headers)
    assert all(h["Content-Type"].startswith("application/cloudevents+json") for h in ce_headers)
    assert metric(metrics, "ce", "delivered") == 4 and metric(metrics, "1", "delivered") == 4
    assert metric(metrics, "ce", "failed") == 0 and metric(metrics, "1", "dropped") == 0
    assert "s3cret" not in log and url_secret not in log
    assert "s3cret" not in metrics and url_secret not in metrics


def test_5xx_and_429_are_retried_and_other_4xx_fail_at_once(world: World, cli: Cli) -> None:
    a = world.a.host
    with sink(script={"/hook": [500, 503], "/gone": [410], "/busy": [(429, "1")]}) as out:
        endpoints = [
            {"name": name, "url": f"http://{out.host}/{name}", "format": "plain"}
            for name in ("hook", "gone", "busy")
        ]
        (cli.specs / "r.yaml").write_text(
            spec_text("r", f"{a}/base/single:1", f"{a}/notify/retried:1", "r")
        )
        with running(
            cli,
            ready=True,
            notifications=json.dumps(endpoints),
            notification_retry_delay="0.05",
        ) as daemon:
            wait_for(
                "delivered",
                lambda: metric(daemon.get("/metrics").text, "hook", "delivered") == 1,
            )
            wait_for("failed", lambda: metric(daemon.get("/metrics").text, "gone", "failed") == 1)
            wait_for("busy", lambda: metric(daemon.get("/metrics").text, "busy", "delivered") == 1)
            metrics = daemon.get("/metrics").text
        log = daemon.log.read_text()
    posts = out.bodies("/hook")
    assert len(posts) == 3 and posts[0] == posts[2]  # the same event, tried three times
    assert posts[0]["type"] == "applied" and posts[0]["spec"] == "r"
    assert posts[0]["tags"][0]["new"] == raw_digest(f"{a}/notify/retried:1")
    assert metric(metrics, "hook", "retried") == 2
    assert metric(metrics, "hook", "failed") == 0
    # Any other 4xx fails the event at once.
    assert len(out.bodies("/gone")) == 1 and metric(metrics, "gone", "retried") == 0
    assert "notification applied of r to gone failed: answered 410" in log
    # A 429's Retry-After sets the wait (the computed one would be under 0.05 s).
    busy = [when for path, when in out.times if path == "/busy"]
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.95
    assert metric(metrics, "busy", "retried") == 1 and metric(metrics, "busy", "delivered") == 1


def test_a_hanging_endpoint_never_slows_a_reconcile(world: World, cli: Cli) -> None:
    a = world.a.host
    timeout = 10.0
    with sink(hang=60) as out:
        endpoints = [
            {"name": "stuck", "url": f"http://{out.host}/h", "format": "plain", "timeout": timeout}
        ]
        # One pass, three applied events, each as its spec ends, then late's: one in delivery
        # (hanging), a queue of 1 keeps one more, two are dropped, whichever the order.
        for n in (1, 2, 3):
            (cli.specs / f"s{n}.yaml").write_text(
                spec_text(f"s{n}", f"{a}/base/single:1", f"{a}/notify/s{n}:1", "s")
            )
        with running(
            cli,
            notifications=json.dumps(endpoints),
            notification_queue="1",
            notification_retries="0",
            notification_flush="1",
        ) as daemon:
            started = time.monotonic()
            wait_for("/readyz", lambda: daemon.get("/readyz").status_code == 200)
            wait_for("the sink holds a request", lambda: out.held >= 1)
            (cli.specs / "late.yaml").write_text(
                spec_text("late", f"{a}/base/single:1", f"{a}/notify/late:1", "l")
            )
            _, took = wait_for("late's tag", lambda: tag_digest(a, "notify/late", "1"))
            record("notify", late_synced_while_endpoint_hangs=round(took, 2))
            print(f"late synced {took:.2f}s after its file was written (endpoint hanging)")
            assert daemon.status()["late"]["state"] == "Synced"
            metrics = daemon.get("/metrics").text
            # Synced while the first delivery still hangs: the hang held up nothing else.
            assert time.monotonic() - started < timeout
            assert metric(metrics, "stuck", "failed") == 0
            assert metric(metrics, "stuck", "dropped") == 2
            wait_for(
                "the timeout",
                lambda: metric(daemon.get("/metrics").text, "stuck", "failed") == 1,
                timeout=timeout + 10,
            )
            stopping = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=20) == 0
            assert time.monotonic() - stopping < 10  # the flush grace is 1 s
    log = daemon.log.read_text()
    assert re.search(r"notification applied of s\d to stuck failed: no answer within 10s", log)
    # The event queued behind the first (late's, or a pass-mate's when they came one by one)
    # was in delivery, hanging, at shutdown.
    assert re.search(r"notification applied of (late|s\d) to stuck: dropped at shutdown, mid-", log)
    assert "notifications to stuck: queue full (1); dropping events" in log


def test_an_unreadable_header_file_stops_the_daemon_at_start(cli: Cli) -> None:
    missing = cli.root / "no-such-secret"
    endpoints = [
        {
            "name": "ops",
            "url": "http://127.0.0.1:1/hook?key=url-secret-5e0c",
            "format": "plain",
            "headers_from_files": {"Authorization": str(missing)},
        }
    ]
    result = cli("run", timeout=30, env_extra={"RECONCILER_NOTIFICATIONS": json.dumps(endpoints)})
    assert result.code == 1
    assert (
        f"notifications[ops].headers_from_files.Authorization: cannot read {missing}: "
        "No such file or directory"
    ) in result.stderr
    assert "Traceback" not in result.stderr and "url-secret" not in result.stderr
