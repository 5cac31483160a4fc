"""Local image stores: OCI layouts (a directory or a tar file) and `docker save` archives.

Each store answers the registry client's verbs (HEAD and GET of manifests and blobs, uploads,
manifest PUTs, tags), so the resolver, observer, planner and executor treat a local store as
one more registry with a single repository. For `oci:PATH:TAG` targets, diff and apply keep
their meaning, and an existence check is a file check:
- a blob is `blobs/<alg>/<hex>`, written to a temporary file in that directory, verified
  against its digest and size, flushed, then renamed: a blob file is complete or absent;
- a tag is an `index.json` entry whose `org.opencontainers.image.ref.name` is the tag,
  rewritten whole (temporary file, then rename) under a lock on the layout directory, and only
  after the manifest and every blob under it are in place.
Archives are read-only and never extracted (reconciler.archive.reader); every blob read from
any store is verified against its digest as it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol

from reconciler.archive.layer import file_chunks
from reconciler.archive.reader import JSON_LIMIT, ArchiveIndex
from reconciler.errors import DocumentError, NotFoundError, PushError, ReferenceError_
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest, Hasher, verified
from reconciler.oci.document import (
    MANIFEST_SIZE_LIMIT,
    Document,
    IndexDocument,
    ManifestDocument,
    parse_document,
)
from reconciler.oci.reference import Reference
from reconciler.registry.client import ManifestHead

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
FILE_MODE = 0o644  # as skopeo and the registries leave them (mkstemp would give 0600)


class Files(Protocol):
    """Named files of a store: a directory, or the members of a tar archive."""

    def size(self, name: str) -> int | None: ...

    def read(self, name: str, limit: int) -> bytes: ...

    def chunks(self, name: str) -> AsyncIterator[bytes]: ...


class DirFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def size(self, name: str) -> int | None:
        try:
            stat = (self.root / name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat.st_size if S_ISREG(stat.st_mode) else None

    def read(self, name: str, limit: int) -> bytes:
        with (self.root / name).open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise DocumentError(f"{self.root / name}: over the {limit}-byte limit")
        return data

    def chunks(self, name: str) -> AsyncIterator[bytes]:
        return file_chunks(self.root / name)


class TarFiles:
    """Members of a tar archive, indexed once and again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index: ArchiveIndex | None = None
        self._stamp: tuple[int, int, int] | None = None

    @property
    def index(self) -> ArchiveIndex:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise NotFoundError(f"{self.path}: {exc.strerror or exc}") from None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._index is None or stamp != self._stamp:
            self._index, self._stamp = ArchiveIndex(self.path), stamp
        return self._index

    def size(self, name: str) -> int | None:
        index = self.index
        return index.member(name).size if name in index else None

    def read(self, name: str, limit: int) -> bytes:
        return self.index.read(name, limit)

    def chunks(self, name: str) -> AsyncIterator[bytes]:
        member = self.index.member(name)
        return file_chunks(self.path, member.offset, member.size)


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def digest_or_none(value: object) -> Digest | None:
    """`value` as a digest, or None when it is not one (a tag, a name, a missing field)."""
    if not isinstance(value, str):
        return None
    try:
        return Digest.parse(value)
    except ReferenceError_:
        return None


class LocalStore:
    """What every local store shares: blobs by digest, verified on read. Read-only here."""

    transport = "local"

    def __init__(self, host: str, path: Path, files: Files) -> None:
        self.host = host
        self.path = path
        self.files = files

    def _label(self, digest: Digest) -> str:
        return f"{self.host}@{digest}"

    def blob_member(self, digest: Digest) -> str | None:
        """Where a blob lives in this store; None if it is not here."""
        name = blob_name(digest)
        return name if self.files.size(name) is not None else None

    async def head_blob(self, repository: str, digest: Digest) -> int | None:
        member = await asyncio.to_thread(self.blob_member, digest)
        return None if member is None else self.files.size(member)

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: Digest, size: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        member = await asyncio.to_thread(self.blob_member, digest)
        if member is None:
            raise NotFoundError(f"{self.host}: no blob {digest}")
        stored = self.files.size(member)
        if size is not None and stored != size:
            raise DocumentError(f"{self.host}: blob {digest} is {stored} bytes, expected {size}")
        yield verified(self.files.chunks(member), digest, stored, self._label(digest))

    async def get_blob(self, repository: str, digest: Digest, limit: int) -> bytes:
        member = await asyncio.to_thread(self.blob_member, digest)
        if member is None:
            raise NotFoundError(f"{self.host}: no blob {digest}")
        data = await asyncio.to_thread(self.files.read, member, limit)
        if Digest.of(data, digest.algorithm) != digest:
            raise DocumentError(f"{self.host}: blob {digest} does not match its digest")
        return data

    async def get_manifest(self, repository: str, identifier: str) -> Document:
        head = await self.head_manifest(repository, identifier)
        if head is None:
            raise NotFoundError(f"{self.host}: no image {identifier or '(default)'}")
        raw = await self.get_blob(repository, head.digest, MANIFEST_SIZE_LIMIT)
        return parse_document(raw, head.media_type, head.digest, what=f"{self.host}@{head.digest}")

    async def head_manifest(self, repository: str, identifier: str) -> ManifestHead | None:
        raise NotImplementedError

    def base_name(self, identifier: str) -> str | None:
        """The registry name an image of this store was saved under, if it records one."""
        return None

    def _read_only(self, what: str) -> PushError:
        return PushError(f"{self.host} is read-only: cannot {what}")

    async def mount_blob(self, repository: str, digest: Digest, source: str) -> None:
        if await self.head_blob(repository, digest) is None:
            raise NotFoundError(f"{self.host}: no blob {digest} to mount")

    async def upload_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: object = None,
        chunk_size: int | None = None,
    ) -> None:
        raise self._read_only(f"store blob {digest.short}")

    async def put_manifest(
        self, repository: str, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        raise self._read_only(f"write {identifier}")

    async def list_tags(self, repository: str, limit: int = 10_000) -> list[str]:
        return []

    async def delete_manifest(self, repository: str, identifier: str) -> int:
        raise self._read_only(f"delete {identifier}")


class OciLayout(LocalStore):
    """An OCI image layout: a directory (read and written) or a tar file (read)."""

    transport = "oci"

    def __init__(self, host: str, path: Path) -> None:
        files: Files = TarFiles(path) if path.is_file() else DirFiles(path)
        super().__init__(host, path, files)
        self.writable = isinstance(files, DirFiles)

    def entries(self) -> list[dict[str, Any]]:
        """The descriptors of index.json (none for a layout directory not yet written)."""
        if self.writable and not self.path.exists():
            return []
        if self.files.size("index.json") is None:
            raise NotFoundError(f"{self.host}: not an OCI layout (no index.json)")
        try:
            data = json.loads(self.files.read("index.json", JSON_LIMIT))
        except ValueError as exc:
            raise DocumentError(f"{self.host}: index.json is not JSON: {exc}") from None
        manifests = data.get("manifests") if isinstance(data, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
            raise DocumentError(f"{self.host}: index.json has no 'manifests' list")
        return manifests

    def _entry(self, identifier: str) -> dict[str, Any] | None:
        entries = self.entries()
        if not identifier:
            if len(entries) == 1:
                return entries[0]
            names = sorted(str(_names(e)[0]) for e in entries if _names(e))
            raise ReferenceError_(
                f"{self.host} holds {len(entries)} images; name one with :TAG "
                f"({', '.join(names) or 'none is tagged'})"
            )
        found = [e for e in entries if identifier in _names(e)]
        if len(found) > 1 and len({str(e.get("digest")) for e in found}) > 1:
            raise DocumentError(f"{self.host}: tag {identifier!r} names several images")
        return found[0] if found else None

    async def head_manifest(self, repository: str, identifier: str) -> ManifestHead | None:
        digest = digest_or_none(identifier)
        if digest is not None:
            size = await self.head_blob(repository, digest)
            if size is None:
                return None
            known = [e for e in self.entries() if e.get("digest") == identifier]
            media_type = known[0].get("mediaType") if known else None
            return ManifestHead(digest, media_type if isinstance(media_type, str) else None, size)
        entry = await asyncio.to_thread(self._entry, identifier)
        if entry is None:
            return None
        try:
            digest = Digest.parse(entry.get("digest"))  # type: ignore[arg-type]
        except ReferenceError_ as exc:
            raise DocumentError(f"{self.host}: index.json entry {identifier!r}: {exc}") from None
        media_type = entry.get("mediaType")
        size = entry.get("size")
        return ManifestHead(
            digest,
            media_type if isinstance(media_type, str) else None,
            size if isinstance(size, int) else None,
        )

    def base_name(self, identifier: str) -> str | None:
        entry = self._entry(identifier)
        name = (entry or {}).get("annotations", {}).get(IMAGE_NAME)
        if not isinstance(name, str):
            return None
        try:
            return str(Reference.parse(name))
        except ReferenceError_:
            return None

    async def list_tags(self, repository: str, limit: int = 10_000) -> list[str]:
        tags = [_ref_name(e) for e in self.entries()]
        return [t for t in tags if t is not None][:limit]

    # Writing (directories only).

    def _writable(self, what: str) -> None:
        if not self.writable:
            raise self._read_only(what)

    def _ensure_layout(self) -> None:
        blobs = self.path / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        marker = self.path / "oci-layout"
        if not marker.exists():
            _write_atomic(marker, LAYOUT_FILE)
        if not (self.path / "index.json").exists():
            _write_atomic(self.path / "index.json", _index_bytes([]))

    async def upload_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: object = None,
        chunk_size: int | None = None,
    ) -> None:
        self._writable(f"store blob {digest.short}")
        await asyncio.to_thread(self._ensure_layout)
        final = self.path / blob_name(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        os.fchmod(fd, FILE_MODE)
        tmp = Path(tmp_name)
        try:
            hasher = Hasher(digest.algorithm)
            with os.fdopen(fd, "wb") as handle:
                async for chunk in chunks:
                    hasher.update(chunk)
                    if hasher.size > size:
                        raise PushError(
                            f"blob {digest.short}: more than the {size} bytes announced"
                        )
                    await asyncio.to_thread(handle.write, chunk)
                if hasher.size != size or hasher.digest() != digest:
                    raise PushError(
                        f"blob {digest.short}: got {hasher.size} bytes with digest "
                        f"{hasher.digest()}; not stored"
                    )
                await asyncio.to_thread(_flush, handle)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def put_manifest(
        self, repository: str, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        self._writable(f"write {identifier}")
        if Digest.of(raw, digest.algorithm) != digest:
            raise PushError(f"manifest {identifier}: bytes do not match {digest}")
        await asyncio.to_thread(self._put_manifest, identifier, raw, media_type, digest)

    def _put_manifest(self, identifier: str, raw: bytes, media_type: str, digest: Digest) -> None:
        self._ensure_layout()
        path = self.path / blob_name(digest)
        if self.files.size(blob_name(digest)) != len(raw):
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, raw)
        if digest_or_none(identifier) is not None:
            return
        self._check_complete(raw, media_type)
        entry = {
            "mediaType": media_type,
            "digest": str(digest),
            "size": len(raw),
            "annotations": {REF_NAME: identifier},
        }
        with self._locked():
            kept = [e for e in self.entries() if _ref_name(e) != identifier]
            _write_atomic(self.path / "index.json", _index_bytes([*kept, entry]))

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
                raise PushError(f"{self.host}: {digest} is missing; the tag was not written")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def delete_manifest(self, repository: str, identifier: str) -> int:
        self._writable(f"delete {identifier}")

        def delete() -> int:
            with self._locked():
                entries = self.entries()
                kept = [
                    e
                    for e in entries
                    if _ref_name(e) != identifier and e.get("digest") != identifier
                ]
                if len(kept) == len(entries):
                    return 404
                _write_atomic(self.path / "index.json", _index_bytes(kept))
                return 202

        return await asyncio.to_thread(delete)


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _names(entry: dict[str, Any]) -> list[str]:
    """What a layout entry can be selected by: its tag, and the full name containerd writes."""
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return []
    return [
        n for n in (annotations.get(REF_NAME), annotations.get(IMAGE_NAME)) if isinstance(n, str)
    ]


def _index_bytes(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    ).encode()


def _flush(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            _flush(handle)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
