"""An OCI image layout as a store: a directory (read and written) or a tar file holding one
(read only).

For `oci:PATH:TAG` targets, diff and apply keep their meaning, and an existence check is a file
check:
- a blob is `blobs/<alg>/<hex>`, written under a temporary name, verified against its digest
  and size, made durable, then renamed (reconciler.fileio): a blob file is complete or absent;
- a tag is an `index.json` entry whose `org.opencontainers.image.ref.name` is the tag,
  rewritten whole under a lock on the layout directory, and only after the manifest and every
  blob under it are in place.
index.json is untrusted input: it is parsed into typed models (wrong types, lying sizes and
bad digests are errors that name the layout and the member), never read with `dict.get`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from reconciler.errors import ArchiveError, NotFoundError, PushError, ReferenceError_
from reconciler.fileio import AtomicFile, write_atomic
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest, Hasher
from reconciler.oci.document import IndexDocument, ManifestDocument, first_error, parse_document
from reconciler.oci.location import Location
from reconciler.oci.models import Descriptor, LayoutIndex
from reconciler.oci.reference import Reference
from reconciler.store.base import ManifestHead, UploadSession
from reconciler.store.files import (
    DirFiles,
    Files,
    LocalReader,
    TarFiles,
    blob_name,
    digest_or_none,
    read_json,
)

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


def _names(entry: Descriptor) -> tuple[str, ...]:
    """What a layout entry can be selected by: its tag, and the full name containerd writes."""
    annotations = entry.annotations or {}
    return tuple(n for n in (annotations.get(REF_NAME), annotations.get(IMAGE_NAME)) if n)


def _ref_name(entry: Descriptor) -> str | None:
    return (entry.annotations or {}).get(REF_NAME)


def _index_bytes(entries: tuple[Descriptor, ...]) -> bytes:
    manifests = ",".join(e.model_dump_json(by_alias=True, exclude_none=True) for e in entries)
    return f'{{"schemaVersion":2,"mediaType":"{mt.OCI_INDEX}","manifests":[{manifests}]}}'.encode()


class OciLayout(LocalReader):
    """An OCI image layout: a directory (read and written) or a tar file (read)."""

    def __init__(self, location: Location) -> None:
        path = Path(location.authority)
        files: Files = TarFiles(path) if path.is_file() else DirFiles(path)
        super().__init__(location, files)
        self.writable = isinstance(files, DirFiles)

    def entries(self) -> tuple[Descriptor, ...]:
        """The descriptors of index.json (none for a layout directory not yet written)."""
        if self.writable and not self.path.exists():
            return ()
        if self.files.size("index.json") is None:
            raise NotFoundError(f"{self.label}: not an OCI layout (no index.json)")
        if self.files.size("oci-layout") is None:
            raise ArchiveError(f"{self.label}: not an OCI layout (no oci-layout file)")
        data = read_json(self.files, "index.json")
        try:
            index = LayoutIndex.model_validate(data)
        except ValidationError as exc:
            raise ArchiveError(f"{self.label}: index.json: {first_error(exc)}") from None
        if index.schema_version not in (None, 2):
            raise ArchiveError(f"{self.label}: index.json: schemaVersion is not 2")
        return index.manifests

    def _entry(self, identifier: str) -> Descriptor | None:
        entries = self.entries()
        if not identifier:
            if len(entries) == 1:
                return entries[0]
            names = sorted(_names(e)[0] for e in entries if _names(e))
            raise ReferenceError_(
                f"{self.label} holds {len(entries)} images; name one with :TAG "
                f"({', '.join(names) or 'none is tagged'})"
            )
        found = [e for e in entries if identifier in _names(e)]
        if len({e.digest for e in found}) > 1:
            raise ArchiveError(f"{self.label}: index.json: tag {identifier!r} names several images")
        return found[0] if found else None

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        digest = digest_or_none(identifier)
        if digest is not None:
            size = await self.head_blob(digest)
            if size is None:
                return None
            known = [e for e in await asyncio.to_thread(self.entries) if e.digest == digest]
            return ManifestHead(digest, known[0].media_type if known else None, size)
        entry = await asyncio.to_thread(self._entry, identifier)
        if entry is None:
            return None
        return ManifestHead(entry.digest, entry.media_type, entry.size)

    def base_name(self, identifier: str) -> str | None:
        entry = self._entry(identifier)
        name = (entry.annotations or {}).get(IMAGE_NAME) if entry is not None else None
        if name is None:
            return None
        try:
            return str(Reference.parse(name))
        except ReferenceError_:
            return None

    async def list_tags(self, limit: int = 10_000) -> list[str]:
        tags = [_ref_name(e) for e in await asyncio.to_thread(self.entries)]
        return [t for t in tags if t is not None][:limit]


class WritableLayout(OciLayout):
    """A layout directory, written as a registry would be: blobs, then manifests, then tags."""

    def _ensure_layout(self) -> None:
        (self.path / "blobs").mkdir(parents=True, exist_ok=True)
        if not (self.path / "oci-layout").exists():
            write_atomic(self.path / "oci-layout", LAYOUT_FILE)
        if not (self.path / "index.json").exists():
            write_atomic(self.path / "index.json", _index_bytes(()))

    async def upload_blob(
        self,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: UploadSession | None = None,
    ) -> None:
        await asyncio.to_thread(self._ensure_layout)
        final = self.path / blob_name(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        with AtomicFile(final.parent, "upload") as out:
            hasher = Hasher(digest.algorithm)
            async for chunk in chunks:
                hasher.update(chunk)
                if hasher.size > size:
                    raise PushError(f"blob {digest.short}: more than the {size} bytes announced")
                await asyncio.to_thread(out.handle.write, chunk)
            if hasher.size != size or hasher.digest() != digest:
                raise PushError(
                    f"blob {digest.short}: got {hasher.size} bytes with digest "
                    f"{hasher.digest()}; not stored"
                )
            await asyncio.to_thread(out.commit, final)

    async def put_manifest(
        self, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        if Digest.of(raw, digest.algorithm) != digest:
            raise PushError(f"manifest {identifier}: bytes do not match {digest}")
        await asyncio.to_thread(self._put_manifest, identifier, raw, media_type, digest)

    def _put_manifest(self, identifier: str, raw: bytes, media_type: str, digest: Digest) -> None:
        self._ensure_layout()
        path = self.path / blob_name(digest)
        if self.files.size(blob_name(digest)) != len(raw):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, raw)
        if digest_or_none(identifier) is not None:
            return
        self._check_complete(raw, media_type)
        entry = Descriptor(
            media_type=media_type,
            digest=digest,
            size=len(raw),
            annotations={REF_NAME: identifier},
        )
        with self._locked():
            kept = tuple(e for e in self.entries() if _ref_name(e) != identifier)
            write_atomic(self.path / "index.json", _index_bytes((*kept, entry)))

    def _check_complete(self, raw: bytes, media_type: str) -> None:
        """As a registry does: a tag only for a manifest whose children and blobs are here."""
        document = parse_document(raw, media_type)
        if isinstance(document, IndexDocument):
            needed = [(m.digest, m.size) for m in document.index.manifests]
        else:
            assert isinstance(document, ManifestDocument)  # noqa: S101
            manifest = document.manifest
            needed = [(manifest.config.digest, manifest.config.size)]
            needed += [
                (layer.digest, layer.size)
                for layer in manifest.layers
                if not (layer.urls and mt.is_foreign_layer(layer.media_type))
            ]
        for digest, size in needed:
            if self.files.size(blob_name(digest)) != size:
                raise PushError(f"{self.label}: {digest} is missing; the tag was not written")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def delete_manifest(self, identifier: str) -> int:
        def delete() -> int:
            with self._locked():
                entries = self.entries()
                kept = tuple(
                    e for e in entries if _ref_name(e) != identifier and str(e.digest) != identifier
                )
                if len(kept) == len(entries):
                    return 404
                write_atomic(self.path / "index.json", _index_bytes(kept))
                return 202

        return await asyncio.to_thread(delete)
