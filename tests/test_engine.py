"""reconciler.engine driven directly: one pass over a specs directory, diff then apply then
diff, against a real registry; a failing spec is reported and never stops the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.engine import Engine, RunReport, SpecState, open_stores
from reconciler.model.report import SpecReport
from reconciler.settings import Settings
from reconciler.spec import load_specs
from tests.conftest import World
from tests.support.images import inspect_raw
from tests.support.registry import Request
from tests.support.steps import calls, traffic, unique, write_spec


def run_pass(settings: Settings, *, apply: bool) -> RunReport:
    async def go() -> RunReport:
        async with open_stores(settings) as stores:
            return await Engine(settings, stores).run(load_specs([settings.specs_dir]), apply=apply)

    return asyncio.run(go())


def by_name(report: RunReport) -> dict[str | None, SpecReport]:
    return {spec.name: spec for spec in report.specs}


def writes(requests: list[Request]) -> list[Request]:
    return [r for r in requests if r.method in ("PUT", "POST", "PATCH", "DELETE")]


def test_diff_apply_diff_with_a_failing_spec(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = world.a
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    repo = unique("engine/web")
    specs = tmp_path / "specs"
    write_spec(
        specs,
        "web",
        f"""
        base: {a.host}/base/multi:1
        config: {{env: {{APP: web}}}}
        targets: [{a.host}/{repo}:1, {a.host}/{repo}:latest]
        """,
    )
    write_spec(
        specs,
        "broken",
        f"base: {a.host}/base/{unique('missing')}:1\ntargets: [{a.host}/{repo}-broken:1]\n",
    )
    write_spec(specs, "invalid", f"base: scratch\nbogus: 1\ntargets: [{a.host}/{repo}-x:1]\n")
    settings = Settings(specs_dir=specs, state_dir=tmp_path / "state", retry_delay=0.01)

    mark = a.mark()
    planned = run_pass(settings, apply=False)
    assert writes(traffic(a, mark)) == []  # a diff pushes nothing
    web, broken = by_name(planned)["web"], by_name(planned)["broken"]
    assert not planned.applied and not planned.ok
    assert web.state is SpecState.OUT_OF_SYNC and web.plan is not None and web.result is None
    assert len(web.plan.tags) == 2 and len(web.plan.manifests) == 3
    assert broken.state is SpecState.FAILED and broken.desired is None
    assert broken.error is not None and "not found" in broken.error
    (invalid,) = [s for s in planned.specs if s.state is SpecState.INVALID]
    assert invalid.file.endswith("invalid.yaml") and invalid.name == "invalid"  # its stem
    assert invalid.error is not None and "spec.bogus: unknown field" in invalid.error
    assert [s.state for s in planned.specs] == [
        SpecState.FAILED,
        SpecState.OUT_OF_SYNC,
        SpecState.INVALID,
    ]

    applied = run_pass(settings, apply=True)
    web, broken = by_name(applied)["web"], by_name(applied)["broken"]
    assert applied.applied and not applied.ok
    assert applied.count(SpecState.SYNCED) == 1 and applied.count(SpecState.FAILED) == 1
    assert web.state is SpecState.SYNCED and web.result is not None
    assert (web.result.uploaded, web.result.mounted, web.result.tags) == (2, 3, 2)
    assert broken.state is SpecState.FAILED and broken.result is None
    assert web.desired is not None
    for tag in ("1", "latest"):
        assert inspect_raw(f"{a.host}/{repo}:{tag}") == web.desired.root.raw

    mark = a.mark()
    again = run_pass(settings, apply=False)
    seen = traffic(a, mark)
    web = by_name(again)["web"]
    assert web.state is SpecState.SYNCED and web.plan is not None and web.plan.in_sync
    assert web.desired is not None and web.plan.root == web.desired.root.digest
    assert len(web.plan.in_sync_tags) == 2 and web.result is None
    assert by_name(again)["broken"].state is SpecState.FAILED
    # In sync costs one HEAD per tag and per base tag; the cache answers the rest.
    assert sorted(r.path for r in calls(seen, "HEAD", f"/v2/{repo}/")) == sorted(
        [f"/v2/{repo}/manifests/1", f"/v2/{repo}/manifests/latest"]
    )
    assert calls(seen, "GET", "/base/multi/") == [] and writes(seen) == []
