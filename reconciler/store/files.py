"""Named files of a local store: a directory, or the members of a tar archive (never extracted:
reconciler.archive.reader indexes it and refuses hostile members)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol

from reconciler.archive.reader import JSON_LIMIT, ArchiveIndex
from reconciler.errors import ArchiveError, NotFoundError, ReferenceError_
from reconciler.fileio import file_chunks, read_window
from reconciler.oci.digest import Digest, verified
from reconciler.oci.document import MANIFEST_SIZE_LIMIT, Document, load_json, parse_document
from reconciler.oci.location import Location
from reconciler.store.base import ManifestHead


class Files(Protocol):
    """Named files of a store: a directory, or the members of a tar archive."""

    label: str  # how messages name the store: its path

    def size(self, name: str) -> int | None: ...

    def read(self, name: str, limit: int) -> bytes: ...

    def chunks(self, name: str) -> AsyncIterator[bytes]: ...


def read_json(files: Files, name: str, limit: int = JSON_LIMIT) -> Any:
    """A JSON member, parsed with the one untrusted-JSON loader; errors name file and member."""
    return load_json(files.read(name, limit), f"{files.label}: {name}", limit)


class DirFiles:
    """Files of a layout directory. A file whose real path leaves the directory (a symbolic
    link out of it) is refused: its bytes are not the layout's to vouch for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)
        self._real = root.resolve()

    def size(self, name: str) -> int | None:
        path = self.root / name
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(stat.st_mode):
            return None
        if not path.resolve().is_relative_to(self._real):
            raise ArchiveError(f"{self.root}: {name} is a link out of the layout; refused")
        return stat.st_size

    def read(self, name: str, limit: int) -> bytes:
        size = self.size(name)
        if size is None:
            raise ArchiveError(f"{self.root}: no file {name!r}")
        if size > limit:
            raise ArchiveError(f"{self.root}: {name} is over the {limit}-byte limit")
        return read_window(self.root / name, 0, size)

    def chunks(self, name: str) -> AsyncIterator[bytes]:
        return file_chunks(self.root / name)


class TarFiles:
    """Members of a tar archive, indexed once and again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
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


class LocalReader:
    """What every local store shares: one repository, blobs by digest, verified as read."""

    def __init__(self, location: Location, files: Files) -> None:
        self.location = location
        self.path = Path(location.authority)
        self.files = files
        self.label = str(location)

    def blob_member(self, digest: Digest) -> str | None:
        """Where a blob lives in this store; None if it is not here."""
        name = blob_name(digest)
        return name if self.files.size(name) is not None else None

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        raise NotImplementedError  # each store finds its images its own way

    async def head_blob(self, digest: Digest) -> int | None:
        member = await asyncio.to_thread(self.blob_member, digest)
        return None if member is None else self.files.size(member)

    @asynccontextmanager
    async def open_blob(
        self, digest: Digest, size: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        member = await asyncio.to_thread(self.blob_member, digest)
        if member is None:
            raise NotFoundError(f"{self.label}: no blob {digest}")
        stored = self.files.size(member)
        if size is not None and stored != size:
            raise ArchiveError(
                f"{self.label}: {member} is {stored} bytes, but its descriptor says {size}"
            )
        yield verified(self.files.chunks(member), digest, stored, f"{self.label}: {member}")

    async def get_blob(self, digest: Digest, limit: int) -> bytes:
        member = await asyncio.to_thread(self.blob_member, digest)
        if member is None:
            raise NotFoundError(f"{self.label}: no blob {digest}")
        data = await asyncio.to_thread(self.files.read, member, limit)
        if Digest.of(data, digest.algorithm) != digest:
            raise ArchiveError(f"{self.label}: {member} does not match its digest")
        return data

    async def get_manifest(self, identifier: str) -> Document:
        head = await self.head_manifest(identifier)
        if head is None:
            raise NotFoundError(f"{self.label}: no image {identifier or '(default)'}")
        raw = await self.get_blob(head.digest, MANIFEST_SIZE_LIMIT)
        if head.size is not None and head.size != len(raw):
            raise ArchiveError(
                f"{self.label}: {blob_name(head.digest)} is {len(raw)} bytes, "
                f"but its descriptor says {head.size}"
            )
        what = f"{self.label}: {blob_name(head.digest)}"
        return parse_document(raw, head.media_type, head.digest, what=what)

    async def list_tags(self, limit: int = 10_000) -> list[str]:
        return []
