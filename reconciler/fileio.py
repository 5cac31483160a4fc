"""Local files: written whole or not at all, and read as windows. One of each (DESIGN.md 6).

- `AtomicFile`: a temporary file in the destination's directory; `commit` flushes it, fsyncs it,
  renames it over the destination and fsyncs the directory, so that after a crash the name holds
  either the old bytes or all of the new ones. Leaving the block without a commit removes it.
- `Window`: `length` bytes of a file from `offset` (a member of a tar archive, or a whole file),
  read in large chunks, sync or off the event loop. A file that ends inside its window is an
  error: the bytes are never silently short.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from reconciler.errors import ArchiveError

FILE_MODE = 0o644  # as skopeo and the registries leave files (mkstemp alone gives 0600)
CHUNK = 1024 * 1024


class AtomicFile:
    """A file written under a temporary name, then renamed into place by `commit`."""

    def __init__(self, directory: Path, hint: str = "", mode: int = FILE_MODE) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{hint}.", suffix=".tmp")
        os.fchmod(fd, mode)
        self.temporary = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self._done = False

    def commit(self, path: Path) -> None:
        """Make the bytes durable, then give them `path` (in the same directory)."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temporary, path)
        self._done = True
        fsync_directory(path.parent)

    def discard(self) -> None:
        if not self._done:
            self.handle.close()
            self.temporary.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """`path` holds `data`, whole, or what it held before."""
    with AtomicFile(path.parent, path.name, mode) as out:
        out.handle.write(data)
        out.commit(path)


def fsync_directory(directory: Path) -> None:
    """A rename is durable once its directory is flushed (POSIX leaves it to the caller)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Window(io.RawIOBase):
    """`length` bytes of an open file from `offset`, as a readable stream or as chunks."""

    def __init__(self, handle: BinaryIO, offset: int, length: int, name: str) -> None:
        self._handle, self._left, self._name = handle, length, name
        handle.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._handle.read(min(len(buffer), self._left))
        if not data:
            raise ArchiveError(
                f"{self._name}: the file ends inside a member ({self._left} bytes short)"
            )
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        while self._left > 0:
            data = self._handle.read(min(size, self._left))
            if not data:
                raise ArchiveError(
                    f"{self._name}: the file ends inside a member ({self._left} bytes short)"
                )
            self._left -= len(data)
            yield data


def read_window(path: Path, offset: int, length: int, limit: int | None = None) -> bytes:
    """A window read into memory (a JSON member, a manifest blob)."""
    if limit is not None and length > limit:
        raise ArchiveError(f"{path}: {length} bytes, over the {limit}-byte limit")
    with path.open("rb") as handle:
        return b"".join(Window(handle, offset, length, str(path)).chunks())


async def file_chunks(
    path: Path, offset: int = 0, length: int | None = None, size: int = CHUNK
) -> AsyncIterator[bytes]:
    """A file's bytes (or a window of them), read off the event loop in large chunks."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        if length is None:
            length = os.fstat(handle.fileno()).st_size - offset
        chunks = Window(handle, offset, length, str(path)).chunks(size)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        handle.close()
