"""reconciler.observe driven directly against a real registry: the ObservedImage of a target in
each state it can be in, and the HEAD requests it took (counted in the access log)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.cache import ContentCache
from reconciler.engine import resolve_desired
from reconciler.model.desired import DesiredImage
from reconciler.model.observed import BlobHolder, ObservedImage, ObservedTag, Presence
from reconciler.observe import Observer
from reconciler.oci.digest import Digest
from reconciler.oci.location import Address, registry_location
from reconciler.resolve import Resolver
from tests.conftest import World
from tests.support.images import Layout, push_layout
from tests.support.registry import Registry
from tests.support.steps import load_spec, make_stores, traffic, unique

# A spec that adds nothing mirrors its base: the desired digests are the base's.
MIRROR = "base: {host}/base/multi:1\nbaseAnnotations: false\ntargets: [{host}/{repo}:1]\n"
# The same, from registry A to another registry.
MIRROR_ACROSS = "base: {a}/base/multi:1\nbaseAnnotations: false\ntargets: [{b}/{repo}:1]\n"


def desired_and_observed(
    tmp_path: Path, registry: Registry, body: str
) -> tuple[DesiredImage, ObservedImage, list[tuple[str, str]]]:
    """Resolve the spec, then observe its targets in a run of their own; with the requests the
    observation alone sent."""
    spec = load_spec(tmp_path, "app", body)

    async def go() -> tuple[DesiredImage, ObservedImage, list[tuple[str, str]]]:
        async with make_stores() as stores:
            desired = await resolve_desired(
                spec, Resolver(stores, ContentCache(tmp_path / "state"))
            )
            mark = registry.mark()
            observed = await Observer(stores).observe(desired)
            seen = await asyncio.to_thread(traffic, registry, mark)
        return desired, observed, [(r.method, r.path) for r in seen]

    return asyncio.run(go())


def all_digests(layout: Layout) -> set[Digest]:
    digests = {Digest.parse(layout.digest)}
    for image in layout.images:
        digests |= {Digest.parse(image.digest), Digest.of(image.config)}
        digests |= {Digest.parse(layer.digest) for layer in image.layers}
    return digests


def test_an_empty_target_holds_nothing(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    repo = unique("observe/empty")
    desired, observed, seen = desired_and_observed(
        tmp_path, b, MIRROR_ACROSS.format(a=a.host, b=b.host, repo=repo)
    )
    destination = registry_location(b.host, repo)
    assert desired.mirror and str(desired.root.digest) == world.multi.digest
    assert observed == ObservedImage(
        (ObservedTag(Address(destination, "1"), None),),
        (Presence(destination, frozenset()),),
    )
    # Top-down: the tag, the index, each child, then each blob once (the shared base layer
    # of both platforms is asked once).
    manifests = [p.rsplit("/", 1)[1] for m, p in seen if "/manifests/" in p]
    assert sorted(manifests) == sorted(
        ["1", world.multi.digest, *(i.digest for i in world.multi.images)]
    )
    blobs = [p.rsplit("/", 1)[1] for m, p in seen if "/blobs/" in p]
    wanted = all_digests(world.multi) - {
        Digest.parse(world.multi.digest),
        *(Digest.parse(i.digest) for i in world.multi.images),
    }
    assert len(wanted) == 5 and sorted(blobs) == sorted(str(d) for d in wanted)
    assert {m for m, _ in seen} == {"HEAD"}


def test_blobs_of_the_same_registry_are_not_asked_about(world: World, tmp_path: Path) -> None:
    # The base lives in another repository of the target's registry: a mount's answer (201)
    # says whether the blob is there, so no blob is asked about by HEAD; each is mounted from
    # its source.
    a = world.a
    repo = unique("observe/empty")
    _, observed, seen = desired_and_observed(tmp_path, a, MIRROR.format(host=a.host, repo=repo))
    destination = registry_location(a.host, repo)
    (presence,) = observed.present
    assert presence.digests == frozenset()
    wanted = all_digests(world.multi) - {
        Digest.parse(world.multi.digest),
        *(Digest.parse(i.digest) for i in world.multi.images),
    }
    source = registry_location(a.host, "base/multi")
    assert {h.digest for h in presence.holders} == wanted
    assert {h.location for h in presence.holders} == {source}
    assert presence.destination == destination
    assert not [p for _, p in seen if "/blobs/" in p]


def test_a_tag_in_sync_costs_exactly_one_head(world: World, tmp_path: Path) -> None:
    a = world.a
    repo = unique("observe/synced")
    push_layout(world.multi, f"{a.host}/{repo}:1")
    desired, observed, seen = desired_and_observed(
        tmp_path, a, MIRROR.format(host=a.host, repo=repo)
    )
    target = Address(registry_location(a.host, repo), "1")
    assert observed == ObservedImage((ObservedTag(target, desired.root.digest),), ())
    assert seen == [("HEAD", f"/v2/{repo}/manifests/1")]


def test_a_manifest_present_but_untagged(world: World, tmp_path: Path) -> None:
    a = world.a
    repo = unique("observe/untagged")
    # The image is there under another tag only: the target tag is missing, its content not.
    push_layout(world.multi, f"{a.host}/{repo}:other")
    desired, observed, seen = desired_and_observed(
        tmp_path, a, MIRROR.format(host=a.host, repo=repo)
    )
    destination = registry_location(a.host, repo)
    assert str(desired.root.digest) == world.multi.digest
    assert observed.tags == (ObservedTag(Address(destination, "1"), None),)
    (presence,) = observed.present
    assert presence.destination == destination
    assert presence.digests == all_digests(world.multi)
    # The index vouches for everything under it: no child and no blob is asked about.
    assert sorted(seen) == sorted(
        [
            ("HEAD", f"/v2/{repo}/manifests/1"),
            ("HEAD", f"/v2/{repo}/manifests/{world.multi.digest}"),
        ]
    )


def test_some_blobs_present(world: World, tmp_path: Path) -> None:
    a = world.a
    repo = unique("observe/partial")
    # The repository holds the single base image (its config and its one layer) under a
    # seed tag; the desired image adds a layer and so has a new config and manifest.
    push_layout(world.single, f"{a.host}/{repo}:seed")
    tools = world.tools_layer
    desired, observed, seen = desired_and_observed(
        tmp_path,
        a,
        f"""
        base: {a.host}/base/single:1
        layers:
          - ref: {a.host}/tools/extra@{tools.digest}
        targets: [{a.host}/{repo}:1, {a.host}/{repo}:2]
        """,
    )
    destination = registry_location(a.host, repo)
    assert observed.tags == (
        ObservedTag(Address(destination, "1"), None),
        ObservedTag(Address(destination, "2"), None),
    )
    (manifest,) = desired.manifests
    config, base_layer, added = manifest.blobs
    assert str(base_layer.digest) == world.single.images[0].layers[0].digest
    assert str(added.digest) == tools.digest
    assert config.digest != Digest.of(world.single.images[0].config)
    # Base layer and added layer live in other repositories of the same registry: mounted
    # from there, not asked about; the generated config is asked about.
    (presence,) = observed.present
    assert presence.digests == frozenset()
    assert presence.holders == (
        BlobHolder(base_layer.digest, registry_location(a.host, "base/single")),
        BlobHolder(added.digest, registry_location(a.host, "tools/extra")),
    )
    assert presence.holder_of(config.digest) is None
    # Two tags, the manifest once (one destination), the config blob once.
    assert sorted(seen) == sorted(
        [
            ("HEAD", f"/v2/{repo}/manifests/1"),
            ("HEAD", f"/v2/{repo}/manifests/2"),
            ("HEAD", f"/v2/{repo}/manifests/{desired.root.digest}"),
            ("HEAD", f"/v2/{repo}/blobs/{config.digest}"),
        ]
    )


def test_a_blob_is_asked_once_per_registry_in_a_run(world: World, tmp_path: Path) -> None:
    # Two specs copy the same base into two repositories of B: the blobs are asked about in
    # the first only; the second mounts them from there once the run has sent them (pending).
    a, b = world.a, world.b
    first, second = unique("observe/first"), unique("observe/second")
    specs = [
        load_spec(tmp_path, name, MIRROR_ACROSS.format(a=a.host, b=b.host, repo=repo))
        for name, repo in (("one", first), ("two", second))
    ]

    async def go() -> tuple[list[ObservedImage], list[tuple[str, str]]]:
        async with make_stores() as stores:
            resolver = Resolver(stores, ContentCache(tmp_path / "state"))
            desired = [await resolve_desired(spec, resolver) for spec in specs]
            observer = Observer(stores)
            mark = b.mark()
            observed = [await observer.observe(d) for d in desired]
            seen = await asyncio.to_thread(traffic, b, mark)
        return observed, [(r.method, r.path) for r in seen]

    (one, two), seen = asyncio.run(go())
    blobs = [p for _, p in seen if "/blobs/" in p]
    assert len(blobs) == 5 and all(f"/{first}/" in p for p in blobs)
    (presence,) = two.present
    assert presence.digests == frozenset()
    origin = registry_location(b.host, first)
    assert {(h.location, h.pending) for h in presence.holders} == {(origin, True)}
    assert len({h.digest for h in presence.holders}) == 5
    assert one.present[0].holders == ()
