"""The OCI layout store on its own: what it refuses to write, and what it leaves behind."""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.errors import PushError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.location import Location, Scheme
from reconciler.store.base import ImageWriter
from reconciler.store.open import Stores


def layout(path: Path) -> ImageWriter:
    """The store `oci:PATH` opens, for writing."""
    return Stores().writer(Location(Scheme.OCI, str(path)))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def manifest_of(config: bytes, layer: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": mt.OCI_LAYER,
                    "digest": str(Digest.of(layer)),
                    "size": len(layer),
                }
            ],
        }
    ).encode()


def test_a_tag_is_written_only_over_complete_content(tmp_path: Path) -> None:
    store = layout(tmp_path)
    config, layer = b'{"rootfs":{"type":"layers","diff_ids":[]}}', b"\0" * 1024
    raw = manifest_of(config, layer)
    digest = Digest.of(raw)

    async def run() -> None:
        await store.upload_blob(Digest.of(config), len(config), chunks(config))
        # The layer is missing: the manifest may be stored by digest, but never tagged.
        await store.put_manifest(str(digest), raw, mt.OCI_MANIFEST, digest)
        with pytest.raises(PushError, match="is missing; the tag was not written"):
            await store.put_manifest("1", raw, mt.OCI_MANIFEST, digest)
        assert await store.head_manifest("1") is None
        await store.upload_blob(Digest.of(layer), len(layer), chunks(layer[:10], layer[10:]))
        await store.put_manifest("1", raw, mt.OCI_MANIFEST, digest)
        head = await store.head_manifest("1")
        assert head is not None and head.digest == digest
        assert await store.list_tags() == ["1"]

    asyncio.run(run())


@pytest.mark.parametrize("body", [b"wrong bytes", b"short", b"x" * 20])
def test_a_blob_that_does_not_match_is_never_stored(tmp_path: Path, body: bytes) -> None:
    store = layout(tmp_path)
    expected = b"the right bytes"
    digest = Digest.of(expected)

    async def run() -> None:
        with pytest.raises(PushError):
            await store.upload_blob(digest, len(expected), chunks(body))
        assert await store.head_blob(digest) is None

    asyncio.run(run())
    left = [p.name for p in (tmp_path / "blobs" / "sha256").iterdir()]
    assert left == []  # no blob, and no temporary file


def test_a_read_only_layout_refuses_writes(tmp_path: Path) -> None:
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w"):
        pass
    with pytest.raises(PushError, match="read-only"):
        layout(archive)


def test_an_archive_window_that_ends_early_is_an_archive_error(tmp_path: Path) -> None:
    from reconciler.archive.reader import ArchiveError
    from reconciler.fileio import file_chunks

    data = bytes(range(256)) * 10_000
    path = tmp_path / "file"
    path.write_bytes(data)

    async def read(offset: int, length: int | None) -> bytes:
        return b"".join([chunk async for chunk in file_chunks(path, offset, length)])

    assert asyncio.run(read(0, None)) == data
    assert asyncio.run(read(10, 2_000_000)) == data[10:2_000_010]
    with pytest.raises(ArchiveError, match="ends inside a member"):
        asyncio.run(read(len(data) - 10, 20))
