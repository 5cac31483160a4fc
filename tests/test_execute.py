"""reconciler.execute driven directly against real registries: plans built from what the
registries hold, executed in-process, checked with skopeo and the registries' access logs."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from reconciler.cache import ContentCache
from reconciler.engine import resolve_desired
from reconciler.execute import Executor
from reconciler.model.desired import DesiredImage
from reconciler.model.plan import BlobMethod, SpecPlan, build_plan
from reconciler.model.report import ExecResult
from reconciler.observe import Observer
from reconciler.oci.digest import Digest
from reconciler.oci.location import registry_location
from reconciler.resolve import Resolver
from reconciler.spec import LoadedSpec
from tests.conftest import World
from tests.support.images import inspect_raw
from tests.support.registry import Registry, Request
from tests.support.steps import calls, load_spec, make_stores, traffic, unique


@dataclass
class Run:
    desired: list[DesiredImage]
    plans: list[SpecPlan]
    results: list[ExecResult]
    requests: dict[str, list[Request]]  # per registry host, sent while executing


def execute(tmp_path: Path, specs: list[LoadedSpec], registries: list[Registry]) -> Run:
    """Resolve, observe and plan every spec, then execute all plans at once with one Executor
    (as one engine pass does); the access logs cover the execution only."""

    async def go() -> Run:
        async with make_stores() as stores:
            resolver = Resolver(stores, ContentCache(tmp_path / "state"))
            observer = Observer(stores)
            desired = [await resolve_desired(spec, resolver) for spec in specs]
            plans = [build_plan(d, await observer.observe(d)) for d in desired]
            marks = [r.mark() for r in registries]
            executor = Executor(stores)
            results = await asyncio.gather(*(executor.execute(p) for p in plans))
            seen = {
                r.host: await asyncio.to_thread(traffic, r, m)
                for r, m in zip(registries, marks, strict=True)
            }
        return Run(desired, plans, list(results), seen)

    return asyncio.run(go())


def query(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}


def blob_puts(requests: list[Request]) -> list[str]:
    """The digests whose upload was committed (PUT ...?digest=), in order."""
    return [
        query(r)["digest"]
        for r in calls(requests, "PUT", "/blobs/uploads/")
        if r.status == 201 and "digest" in query(r)
    ]


def test_a_plan_is_pushed_into_an_empty_repository(world: World, tmp_path: Path) -> None:
    a = world.a
    repo = unique("execute/empty")
    spec = load_spec(
        tmp_path,
        "app",
        f"""
        base: {a.host}/base/multi:1
        config: {{env: {{MODE: test}}}}
        targets: [{a.host}/{repo}:1]
        """,
    )
    run = execute(tmp_path, [spec], [a])
    (desired,), (plan,), (result,) = run.desired, run.plans, run.results

    methods = sorted((action.method, action.blob.role) for action in plan.blobs)
    assert methods == [(BlobMethod.MOUNT, "layer")] * 3 + [(BlobMethod.UPLOAD, "config")] * 2
    configs = [m.blobs[0] for m in desired.manifests]
    assert result == ExecResult(
        mounted=3,
        uploaded=2,
        bytes_pushed=sum(c.size for c in configs),
        manifests=3,
        tags=1,
    )
    # skopeo, not reconciler, reads back what the tag and each child are.
    assert inspect_raw(f"{a.host}/{repo}:1") == desired.root.raw
    for manifest in desired.manifests:
        child = inspect_raw(f"{a.host}/{repo}@{manifest.document.digest}")
        assert child == manifest.document.raw
        config = json.loads(manifest.blobs[0].data or b"{}")
        assert "MODE=test" in config["config"]["Env"]
    # Push order: every blob, then the children, then the index by its tag alone (one PUT:
    # the registry takes it only over children it holds, as it would by digest).
    seen = run.requests[a.host]
    puts = [r.path for r in calls(seen, "PUT", f"/v2/{repo}/manifests/")]
    children = {f"/v2/{repo}/manifests/{m.document.digest}" for m in desired.manifests}
    assert set(puts[:2]) == children
    assert puts[2:] == [f"/v2/{repo}/manifests/1"]
    last_blob = max(i for i, r in enumerate(seen) if "/blobs/" in r.path)
    first_manifest = min(i for i, r in enumerate(seen) if "/manifests/" in r.path)
    assert last_blob < first_manifest


def test_a_blob_is_mounted_from_another_repository(world: World, tmp_path: Path) -> None:
    a = world.a
    repo = unique("execute/mount")
    tools = world.tools_layer
    spec = load_spec(
        tmp_path,
        "app",
        f"""
        base: {a.host}/base/single:1
        layers: [{{ref: "{a.host}/tools/extra@{tools.digest}"}}]
        targets: [{a.host}/{repo}:1]
        """,
    )
    run = execute(tmp_path, [spec], [a])
    (desired,), (result,) = run.desired, run.results
    assert (result.mounted, result.uploaded, result.copied) == (2, 1, 0)

    seen = run.requests[a.host]
    mounts = {
        query(r)["mount"]: (query(r)["from"], r.status)
        for r in calls(seen, "POST", f"/v2/{repo}/blobs/uploads/")
        if "mount" in query(r)
    }
    base_layer = world.single.images[0].layers[0].digest
    assert mounts == {tools.digest: ("tools/extra", 201), base_layer: ("base/single", 201)}
    # Only the generated config crossed the network.
    assert blob_puts(seen) == [str(desired.manifests[0].blobs[0].digest)]
    pushed = json.loads(inspect_raw(f"{a.host}/{repo}:1"))
    assert pushed["layers"][-1]["digest"] == tools.digest
    assert Digest.of(inspect_raw(f"{a.host}/{repo}:1")) == desired.root.digest


def test_blobs_are_copied_across_registries(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    repo = unique("execute/copy")
    spec = load_spec(
        tmp_path,
        "mirror",
        f"base: {a.host}/base/single:1\nbaseAnnotations: false\ntargets: [{b.host}/{repo}:1]\n",
    )
    run = execute(tmp_path, [spec], [a, b])
    (plan,), (result,) = run.plans, run.results
    image = world.single.images[0]
    config, layer = Digest.of(image.config), image.layers[0]

    assert {(x.method, x.source) for x in plan.blobs} == {
        (BlobMethod.COPY, registry_location(a.host, "base/single"))
    }
    assert result == ExecResult(
        copied=2, bytes_pushed=len(image.config) + layer.size, manifests=1, tags=1
    )
    assert sorted(blob_puts(run.requests[b.host])) == sorted([str(config), layer.digest])
    reads = [r.path for r in calls(run.requests[a.host], "GET", "/blobs/")]
    assert sorted(reads) == sorted(
        [f"/v2/base/single/blobs/{config}", f"/v2/base/single/blobs/{layer.digest}"]
    )
    assert calls(run.requests[a.host], "PUT") == []
    assert inspect_raw(f"{b.host}/{repo}:1") == world.single.root


def two_specs(tmp_path: Path, a: Registry, targets: tuple[str, str]) -> list[LoadedSpec]:
    """Two specs over one base, each with a config of its own: they share the base layer."""
    return [
        load_spec(
            tmp_path,
            f"spec-{i}",
            f"base: {a.host}/base/single:1\nconfig: {{env: {{N: '{i}'}}}}\ntargets: [{target}]\n",
        )
        for i, target in enumerate(targets)
    ]


def test_a_blob_two_plans_want_is_pushed_once(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    repo = unique("execute/shared")
    specs = two_specs(tmp_path, a, (f"{b.host}/{repo}:zero", f"{b.host}/{repo}:one"))
    run = execute(tmp_path, specs, [a, b])
    layer = world.single.images[0].layers[0].digest

    for plan in run.plans:  # each plan wants the layer: neither saw it in the registry
        assert [(x.method, str(x.blob.digest)) for x in plan.blobs if x.blob.role == "layer"] == [
            (BlobMethod.COPY, layer)
        ]
    assert sorted((r.copied, r.uploaded, r.skipped) for r in run.results) == [(0, 1, 1), (1, 1, 0)]
    assert blob_puts(run.requests[b.host]).count(layer) == 1
    assert len(calls(run.requests[a.host], "GET", f"/blobs/{layer}")) == 1
    for desired, tag in zip(run.desired, ("zero", "one"), strict=True):
        assert inspect_raw(f"{b.host}/{repo}:{tag}") == desired.root.raw


def test_a_copy_into_two_repositories_crosses_once_then_mounts(
    world: World, tmp_path: Path
) -> None:
    a, b = world.a, world.b
    repos = (unique("execute/first"), unique("execute/second"))
    specs = two_specs(tmp_path, a, (f"{b.host}/{repos[0]}:1", f"{b.host}/{repos[1]}:1"))
    run = execute(tmp_path, specs, [a, b])
    layer = world.single.images[0].layers[0].digest

    assert sorted((r.copied, r.mounted) for r in run.results) == [(0, 1), (1, 0)]
    assert len(calls(run.requests[a.host], "GET", f"/blobs/{layer}")) == 1
    assert blob_puts(run.requests[b.host]).count(layer) == 1
    mounts = [
        (query(r)["from"], r.status)
        for r in calls(run.requests[b.host], "POST", "/blobs/uploads/")
        if query(r).get("mount") == layer
    ]
    assert len(mounts) == 1 and mounts[0][0] in repos and mounts[0][1] == 201
    for desired, repo in zip(run.desired, repos, strict=True):
        assert inspect_raw(f"{b.host}/{repo}:1") == desired.root.raw
