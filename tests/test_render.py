from __future__ import annotations

import json

import pytest

from reconciler.model.desired import build_desired
from reconciler.model.plan import build_plan
from reconciler.model.report import ExecResult, RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.digest import Digest
from reconciler.oci.location import registry_location
from reconciler.render import human_size, render_json, render_text
from tests.factories import digest, make_base, make_image, make_layer, make_observed, make_spec


def report(applied: bool = False) -> RunReport:
    spec = make_spec(
        layers=[{"ref": f"l.io/v/r@{digest(7)}"}], targets=["r.io/team/app:1", "r.io/team/app:2"]
    )
    base = make_base([make_image("amd64", [1])], index=False)
    desired = build_desired(spec, base, [make_layer(2048, spec)])
    old = Digest.parse(digest(99))
    observed = make_observed(
        ((desired.targets[0], old), (desired.targets[1], None)),
        ((registry_location("r.io", "team/app"), frozenset()),),
    )
    plan = build_plan(desired, observed)
    result = (
        ExecResult(mounted=1, copied=1, uploaded=1, bytes_pushed=3000, manifests=1, tags=2)
        if applied
        else None
    )
    state = SpecState.SYNCED if applied else SpecState.OUT_OF_SYNC
    specs = (
        SpecReport("app.yaml", state, "app", desired, observed, plan, result),
        SpecReport("bad.yaml", SpecState.INVALID, error="bad.yaml:3: spec.base: invalid reference"),
        SpecReport("down.yaml", SpecState.FAILED, "down", error="connection refused"),
    )
    return RunReport(specs, applied)


def test_text_reads_like_a_plan() -> None:
    text = render_text(report())
    lines = text.splitlines()
    assert lines[0] == "app (app.yaml): OutOfSync"
    assert any(
        line.startswith("  + blob") and "copy from l.io/v/r" in line and "2.0 KiB" in line
        for line in lines
    )
    assert any("mount from library/base" in line for line in lines)
    assert any("  upload  (config" in line for line in lines)
    assert any(
        line.startswith("  ~ tag      r.io/team/app:1  sha256:" + "0" * 12 + " -> ")
        for line in lines
    )
    assert any(line.startswith("  + tag      r.io/team/app:2  (none) -> ") for line in lines)
    assert "  ! bad.yaml:3: spec.base: invalid reference" in lines
    plan = report().specs[0].plan
    assert plan is not None
    assert lines[-1] == (
        f"Plan: 3 blobs to push ({human_size(plan.bytes_to_push)}: 1 mount, 1 copy, 1 upload), "
        "1 manifest, 2 tags; 0 of 3 specs in sync; 1 failed; 1 invalid."
    )


def test_json_shape() -> None:
    document = json.loads(render_json(report()))
    assert document["apiVersion"] == "reconciler.dev/v1alpha1" and document["kind"] == "Diff"
    app, bad, down = document["specs"]
    assert app["state"] == "OutOfSync" and app["desired"].startswith("sha256:")
    assert [t["observed"] for t in app["targets"]] == [digest(99), None]
    assert {b["action"] for b in app["blobs"]} == {"mount", "copy", "upload"}
    assert app["manifests"][0]["kind"] == "manifest" and app["tags"][1]["from"] is None
    assert bad["state"] == "Invalid" and bad["name"] is None and "spec.base" in bad["error"]
    assert down["state"] == "Failed"
    summary = document["summary"]
    assert (summary["specs"], summary["outOfSync"], summary["failed"], summary["invalid"]) == (
        3,
        1,
        1,
        1,
    )
    assert (summary["mounts"], summary["copies"], summary["uploads"], summary["tags"]) == (
        1,
        1,
        1,
        2,
    )


def test_applied_report() -> None:
    text = render_text(report(applied=True))
    assert text.splitlines()[-1].startswith(
        "Applied: 1 blobs mounted, 1 copied, 1 uploaded, 0 skipped (2.9 KiB pushed); "
        "1 manifest, 2 tags"
    )
    assert (
        json.loads(render_json(report(applied=True)))["specs"][0]["applied"]["bytesPushed"] == 3000
    )


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024**2, 3 * 1024**3, 5000 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "5000.0 GiB",
    ]


def test_invalid_spec_is_shown_under_the_name_it_could_read() -> None:
    specs = (
        SpecReport("web.yaml", SpecState.INVALID, "web", error="web.yaml:5: spec.layer: unknown"),
        SpecReport("bad.yaml", SpecState.INVALID, error="bad.yaml:1: invalid YAML"),
    )
    report = RunReport(specs, applied=False)
    lines = render_text(report).splitlines()
    assert lines[:4] == [
        "web (web.yaml): Invalid",
        "  ! web.yaml:5: spec.layer: unknown",
        "(invalid) (bad.yaml): Invalid",
        "  ! bad.yaml:1: invalid YAML",
    ]
    named, unnamed = json.loads(render_json(report))["specs"]
    assert (named["name"], named["state"], named["desired"]) == ("web", "Invalid", None)
    assert unnamed["name"] is None


IN_SYNC = SpecReport("ok.yaml", SpecState.SYNCED, "ok")
FAILED = SpecReport("down.yaml", SpecState.FAILED, "down", error="connection refused")
INVALID = SpecReport("bad.yaml", SpecState.INVALID, "bad", error="bad.yaml:3: spec.base: bad")


@pytest.mark.parametrize(
    ("specs", "applied", "total"),
    [
        ((IN_SYNC,), False, "No changes; 1 of 1 specs in sync."),
        ((FAILED,), False, "1 spec failed; 0 of 1 specs in sync."),
        (
            (IN_SYNC, FAILED),
            False,
            "1 spec failed; nothing to push for the other; 1 of 2 specs in sync.",
        ),
        (
            (IN_SYNC, IN_SYNC, FAILED, FAILED, INVALID),
            False,
            "2 specs failed, 1 spec invalid; nothing to push for the others; 2 of 5 specs in sync.",
        ),
        ((INVALID,), True, "1 spec invalid; 0 of 1 specs in sync."),
        (
            (IN_SYNC, FAILED),
            True,
            "1 spec failed; nothing to push for the other; 1 of 2 specs in sync.",
        ),
    ],
)
def test_a_run_with_failures_never_says_no_changes(
    specs: tuple[SpecReport, ...], applied: bool, total: str
) -> None:
    assert render_text(RunReport(specs, applied)).splitlines()[-1] == total


def test_changes_and_failures_give_the_plan_then_the_failures() -> None:
    applied = report(applied=True)
    last = render_text(applied).splitlines()[-1]
    assert last.startswith("Applied: 1 blobs mounted") and last.endswith(
        "; 1 of 3 specs in sync; 1 failed; 1 invalid."
    )
