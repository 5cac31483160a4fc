"""reconciler.resolve driven directly against a real registry: what a base and a layer resolve
to, and how few requests that takes (the registry's access log is the independent count)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.cache import ContentCache
from reconciler.errors import ResolveError
from reconciler.model.sources import ResolvedBase, ResolvedLayer
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument
from reconciler.oci.location import Scheme, registry_location
from reconciler.oci.platform import PlatformKey
from reconciler.resolve import Resolver
from tests.conftest import World
from tests.support.steps import calls, load_spec, make_stores, traffic

T = TypeVar("T")

AMD64 = PlatformKey("linux", "amd64")
ARM64 = PlatformKey("linux", "arm64", "v8")


def resolve(cache_dir: Path, work: Callable[[Resolver], Awaitable[T]]) -> T:
    """One run: a fresh Resolver (fresh per-run memo) over the cache in `cache_dir`."""

    async def go() -> T:
        async with make_stores() as stores:
            return await work(Resolver(stores, ContentCache(cache_dir)))

    return asyncio.run(go())


def test_a_base_by_tag_costs_one_head_per_run(world: World, tmp_path: Path) -> None:
    a = world.a
    body = f"base: {a.host}/base/multi:1\ntargets: [{a.host}/unused/app:1]\n"
    specs = [load_spec(tmp_path / "specs", name, body) for name in ("one", "two")]

    async def both(resolver: Resolver) -> list[ResolvedBase | None]:
        return list(await asyncio.gather(*(resolver.resolve_base(s) for s in specs)))

    mark = a.mark()
    first = resolve(tmp_path / "state", both)
    cold = traffic(a, mark)
    mark = a.mark()
    second = resolve(tmp_path / "state", both)
    warm = traffic(a, mark)

    for base in (*first, *second):
        assert base is not None
        assert isinstance(base.root, IndexDocument) and base.root.raw == world.multi.root
        assert base.source == registry_location(a.host, "base/multi")
        assert base.name == base.label == f"{a.host}/base/multi:1"
        assert [i.platform for i in base.images] == [AMD64, ARM64]
        assert [i.manifest.raw for i in base.images] == [i.manifest for i in world.multi.images]
        assert [i.config.raw for i in base.images] == [i.config for i in world.multi.images]
        assert not base.filtered
    tag_heads = calls(cold, "HEAD", "/v2/base/multi/manifests/1")
    assert len(tag_heads) == 1 and tag_heads[0].status == 200
    # Everything else is named by digest: fetched once per run, then never again (the cache).
    assert sorted(r.path for r in calls(cold, "GET")) == sorted(
        [f"/v2/base/multi/manifests/{world.multi.digest}"]
        + [f"/v2/base/multi/manifests/{i.digest}" for i in world.multi.images]
        + [f"/v2/base/multi/blobs/{Digest.of(i.config)}" for i in world.multi.images]
    )
    assert len(cold) == 1 + 1 + 2 + 2
    assert [(r.method, r.path) for r in warm] == [("HEAD", "/v2/base/multi/manifests/1")]


def test_a_base_by_digest_sends_no_head(world: World, tmp_path: Path) -> None:
    a = world.a
    written = f"{a.host}/base/single@{world.single.digest}"
    spec = load_spec(tmp_path, "app", f"base: {written}\ntargets: [{a.host}/unused/app:1]\n")

    mark = a.mark()
    base = resolve(tmp_path / "state", lambda r: r.resolve_base(spec))
    seen = traffic(a, mark)

    assert base is not None and isinstance(base.root, ManifestDocument)
    assert base.root.raw == world.single.root and base.name == written
    (image,) = base.images
    assert image.entry is None and image.platform == AMD64
    assert image.config.raw == world.single.images[0].config
    config = Digest.of(world.single.images[0].config)
    assert sorted((r.method, r.path) for r in seen) == [
        ("GET", f"/v2/base/single/blobs/{config}"),
        ("GET", f"/v2/base/single/manifests/{world.single.digest}"),
    ]


def test_platforms_select_children_of_an_index_base(world: World, tmp_path: Path) -> None:
    a = world.a
    spec = load_spec(
        tmp_path,
        "arm",
        f"base: {a.host}/base/multi:1\nplatforms: [linux/arm64]\ntargets: [{a.host}/u/a:1]\n",
    )
    mark = a.mark()
    base = resolve(tmp_path / "state", lambda r: r.resolve_base(spec))
    seen = traffic(a, mark)

    assert base is not None and base.filtered
    (image,) = base.images
    arm = world.multi.images[1]
    assert image.platform == ARM64 and image.manifest.raw == arm.manifest
    assert image.entry is not None and str(image.entry.digest) == arm.digest
    # The platform left out is never fetched.
    amd = world.multi.images[0]
    assert not [r for r in seen if amd.digest in r.path or str(Digest.of(amd.config)) in r.path]

    missing = load_spec(
        tmp_path,
        "s390x",
        f"base: {a.host}/base/multi:1\nplatforms: [linux/s390x]\ntargets: [{a.host}/u/a:1]\n",
    )
    with pytest.raises(ResolveError) as raised:
        resolve(tmp_path / "state", lambda r: r.resolve_base(missing))
    message = str(raised.value)
    assert "s390x.yaml" in message and "has no linux/s390x" in message
    assert "linux/amd64" in message and "linux/arm64/v8" in message


def test_a_layer_by_digest_is_measured_once_then_cached(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    vendor = world.vendor_layer
    spec = load_spec(
        tmp_path,
        "layer",
        f"""
        base: scratch
        layers:
          - registry: {b.host}
            repository: vendor/runtime
            digest: {vendor.digest}
        targets: [{a.host}/unused/app:1]
        """,
    )
    state = tmp_path / "state"

    mark = b.mark()
    layer: ResolvedLayer = resolve(state, lambda r: r.resolve_layer(spec, 0))
    cold = traffic(b, mark)

    assert str(layer.digest) == vendor.digest and layer.size == vendor.size
    assert str(layer.diff_id) == vendor.diff_id and layer.compression is mt.Compression.GZIP
    assert str(layer.source) == f"{b.host}/vendor/runtime@{vendor.digest}"
    blob = f"/v2/vendor/runtime/blobs/{vendor.digest}"
    assert [(r.method, r.path, r.status) for r in cold] == [
        ("HEAD", blob, 200),
        ("GET", blob, 200),
    ]
    assert ContentCache(state).get_layer(layer.digest) is not None

    mark = b.mark()
    again: ResolvedLayer = resolve(state, lambda r: r.resolve_layer(spec, 0))
    assert traffic(b, mark) == []
    assert (again.size, again.diff_id, again.compression) == (
        layer.size,
        layer.diff_id,
        layer.compression,
    )


def test_a_base_from_an_oci_layout(world: World, tmp_path: Path) -> None:
    a = world.a
    written = f"oci:{world.single.path}:latest"
    spec = load_spec(tmp_path, "local", f"base: {written}\ntargets: [{a.host}/unused/app:1]\n")
    mark = a.mark()
    base = resolve(tmp_path / "state", lambda r: r.resolve_base(spec))

    assert traffic(a, mark) == []
    assert base is not None and isinstance(base.root, ManifestDocument)
    assert base.source.scheme is Scheme.OCI and base.source.authority == str(world.single.path)
    assert base.root.raw == world.single.root
    assert base.name is None  # the layout records no registry name for it
    assert base.label == written
    (image,) = base.images
    assert image.config.raw == world.single.images[0].config

    wrong = load_spec(
        tmp_path, "wrong", f"base: oci:{world.single.path}:nope\ntargets: [{a.host}/u/a:1]\n"
    )
    with pytest.raises(ResolveError, match=r"no image 'nope' there \(tags: latest\)"):
        resolve(tmp_path / "state", lambda r: r.resolve_base(wrong))
