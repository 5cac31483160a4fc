"""reconciler.store.open: the store `Stores` opens for each scheme, what it reads and writes,
and which optional capabilities (BlobMounter, TagDeleter) it has. The registry is a real one;
skopeo writes the archives and reads back what was written."""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.errors import PushError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import ManifestDocument, parse_config
from reconciler.oci.location import Location, Scheme, registry_location
from reconciler.store.base import BlobMounter, ImageReader, TagDeleter
from reconciler.store.open import Stores
from tests.conftest import World
from tests.support.images import Image, inspect_raw, skopeo
from tests.support.steps import calls, make_stores, traffic, unique

T = TypeVar("T")


def with_stores(work: Callable[[Stores], Awaitable[T]]) -> T:
    async def go() -> T:
        async with make_stores() as stores:
            return await work(stores)

    return asyncio.run(go())


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_blob(store: ImageReader, digest: Digest, size: int | None = None) -> bytes:
    async with store.open_blob(digest, size) as stream:
        return b"".join([chunk async for chunk in stream])


def test_a_registry_repository(world: World) -> None:
    a = world.a
    image = world.single.images[0]
    config, layer = Digest.of(image.config), image.layers[0]
    manifest = Digest.parse(image.digest)
    source = registry_location(a.host, "base/single")
    target = registry_location(a.host, unique("stores/registry"))

    async def go(stores: Stores) -> None:
        reader = stores.reader(source)
        assert stores.reader(source) is reader and stores.writer(source) is reader
        assert isinstance(reader, BlobMounter) and isinstance(reader, TagDeleter)
        head = await reader.head_manifest("1")
        assert head is not None and head.digest == manifest
        # No size from a registry's HEAD: the GET's verified bytes say it (Harbor's HEAD lies).
        assert (head.media_type, head.size) == (mt.OCI_MANIFEST, None)
        assert await reader.head_manifest("nope") is None
        assert (await reader.get_manifest(str(manifest))).raw == image.manifest
        assert await reader.head_blob(config) == len(image.config)
        assert await reader.head_blob(Digest.of(b"not there")) is None
        assert await reader.get_blob(config, 1 << 20) == image.config
        assert await read_blob(reader, Digest.parse(layer.digest), layer.size) == layer.blob
        assert await reader.list_tags() == ["1"]

        writer = stores.writer(target)
        assert isinstance(writer, BlobMounter)
        await writer.upload_blob(config, len(image.config), chunks(image.config, 100))
        assert await writer.mount_blob(Digest.parse(layer.digest), source) is None
        await writer.put_manifest("v1", image.manifest, mt.OCI_MANIFEST, manifest)
        assert await writer.list_tags() == ["v1"]
        assert inspect_raw(f"{a.host}/{target.repository}:v1") == image.manifest

        assert isinstance(writer, TagDeleter)
        assert await writer.delete_manifest(str(manifest)) == 202
        assert await writer.head_manifest("v1") is None
        assert await writer.delete_manifest(str(manifest)) == 404
        # The source repository is untouched.
        assert (await reader.head_manifest("1")) == head

    mark = a.mark()
    with_stores(go)
    seen = traffic(a, mark)
    mounts = calls(seen, "POST", f"/v2/{target.repository}/blobs/uploads/?")
    assert [r.status for r in mounts if "mount=" in r.path] == [201]
    assert [r.status for r in calls(seen, "DELETE")] == [202, 404]


def test_a_layout_directory_is_written(world: World, tmp_path: Path) -> None:
    image = world.single.images[0]
    manifest = Digest.parse(image.digest)
    location = Location(Scheme.OCI, str(tmp_path / "out"))

    async def go(stores: Stores) -> None:
        writer = stores.writer(location)
        assert stores.reader(location) is writer
        assert not isinstance(writer, BlobMounter)
        assert await writer.list_tags() == []  # not written yet: an empty layout
        assert await writer.head_manifest("1") is None
        for blob in (image.config, *(layer.blob for layer in image.layers)):
            await writer.upload_blob(Digest.of(blob), len(blob), chunks(blob, 1000))
        await writer.put_manifest("1", image.manifest, mt.OCI_MANIFEST, manifest)
        head = await writer.head_manifest("1")
        assert head is not None and (head.digest, head.size) == (manifest, len(image.manifest))
        assert await writer.list_tags() == ["1"]
        assert await writer.head_blob(Digest.of(image.config)) == len(image.config)
        assert (await writer.get_manifest("1")).raw == image.manifest

        assert isinstance(writer, TagDeleter)
        assert await writer.delete_manifest("1") == 202
        assert await writer.list_tags() == []
        assert await writer.delete_manifest("1") == 404
        await writer.put_manifest("2", image.manifest, mt.OCI_MANIFEST, manifest)

    with_stores(go)
    out = str(tmp_path / "out")
    assert skopeo("inspect", "--raw", f"oci:{out}:2").encode() == image.manifest
    copied = tmp_path / "copied"
    skopeo("copy", "--preserve-digests", f"oci:{out}:2", f"oci:{copied}:x")
    assert json.loads((copied / "index.json").read_text())["manifests"][0]["digest"] == image.digest


def layout_tar(world: World, path: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        for member in sorted(world.single.path.rglob("*")):
            name = str(member.relative_to(world.single.path))
            archive.add(member, arcname=name, recursive=False)
    return path


def test_a_layout_tar_is_read_only(world: World, tmp_path: Path) -> None:
    image = world.single.images[0]
    layer = image.layers[0]
    location = Location(Scheme.OCI, str(layout_tar(world, tmp_path / "single.tar")))

    async def go(stores: Stores) -> None:
        reader = stores.reader(location)
        assert not isinstance(reader, BlobMounter) and not isinstance(reader, TagDeleter)
        head = await reader.head_manifest("latest")
        assert head is not None and str(head.digest) == world.single.digest
        assert await reader.head_manifest("other") is None
        assert (await reader.get_manifest("latest")).raw == world.single.root
        assert await reader.list_tags() == ["latest"]
        assert await read_blob(reader, Digest.parse(layer.digest), layer.size) == layer.blob
        with pytest.raises(PushError, match="read-only"):
            stores.writer(location)

    with_stores(go)


def test_a_docker_archive_is_read_only(world: World, tmp_path: Path) -> None:
    image: Image = world.single.images[0]
    archive = tmp_path / "image.tar"
    skopeo("copy", f"oci:{world.single.path}:latest", f"docker-archive:{archive}:example.com/app:1")
    location = Location(Scheme.DOCKER_ARCHIVE, str(archive))

    async def go(stores: Stores) -> None:
        reader = stores.reader(location)
        assert not isinstance(reader, BlobMounter) and not isinstance(reader, TagDeleter)
        assert await reader.list_tags() == ["example.com/app:1"]
        head = await reader.head_manifest("example.com/app:1")
        assert head is not None and head.media_type == mt.DOCKER_MANIFEST
        assert await reader.head_manifest("example.com/app:2") is None
        document = await reader.get_manifest("example.com/app:1")
        assert isinstance(document, ManifestDocument) and document.digest == head.digest
        manifest = document.manifest
        raw_config = await reader.get_blob(manifest.config.digest, 1 << 20)
        config = parse_config(raw_config, manifest.config.media_type, manifest.config.digest)
        assert [str(d) for d in config.config.rootfs.diff_ids] == [
            layer.diff_id for layer in image.layers
        ]
        # skopeo stores layers uncompressed: the archive's layer digest is its diff_id.
        for descriptor, layer in zip(manifest.layers, image.layers, strict=True):
            assert (descriptor.media_type, str(descriptor.digest)) == (
                mt.DOCKER_LAYER,
                layer.diff_id,
            )
            assert await read_blob(reader, descriptor.digest, descriptor.size) == layer.tar
        with pytest.raises(PushError, match="read-only"):
            stores.writer(location)

    with_stores(go)
