"""A tar archive written as a stream: headers first, then the content as it arrives.

`tarfile` wants a file object to read each member from; a blob streamed from a registry is an
async iterator. This writer takes the size up front (a descriptor always knows it), writes the
header, then the chunks, then the padding, so memory never holds more than a chunk. Entries
are normalised: uid/gid 0, fixed mtime, no user or group names.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from typing import BinaryIO

from reconciler.errors import VerificationError

BLOCK = 512
MTIME = 0


def entry(
    name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> tarfile.TarInfo:
    """A tar header with no host metadata: uid/gid 0, no user or group names, mtime 0."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarStream:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._dirs: set[str] = set()
        self.written = 0
        # member name -> (offset of its data in the archive, size): to read a member back.
        self.offsets: dict[str, tuple[int, int]] = {}

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.written += len(data)

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i]) + "/"
            if directory not in self._dirs:
                self._dirs.add(directory)
                self._write(
                    entry(directory, kind=tarfile.DIRTYPE, mode=0o755).tobuf(tarfile.PAX_FORMAT)
                )

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parents(name)
        self._write(entry(name, len(data)).tobuf(tarfile.PAX_FORMAT))
        self._write(data)
        self._pad(len(data))

    async def add_stream(self, name: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        self._parents(name)
        self._write(entry(name, size).tobuf(tarfile.PAX_FORMAT))
        self.offsets[name] = (self.written, size)
        done = 0
        async for chunk in chunks:
            done += len(chunk)
            if done > size:
                raise VerificationError(f"{name}: more than the {size} bytes announced")
            self._write(chunk)
        if done != size:
            raise VerificationError(f"{name}: {done} bytes, expected {size}")
        self._pad(size)

    def add_file(self, name: str, handle: BinaryIO, size: int) -> None:
        self._parents(name)
        self._write(entry(name, size).tobuf(tarfile.PAX_FORMAT))
        remaining = size
        while remaining:
            chunk = handle.read(min(1024 * 1024, remaining))
            if not chunk:
                raise VerificationError(f"{name}: file shorter than {size} bytes")
            self._write(chunk)
            remaining -= len(chunk)
        self._pad(size)

    def add_link(self, name: str, target: str) -> None:
        """A hard link to an earlier member: the bytes are stored once."""
        self._parents(name)
        info = entry(name, kind=tarfile.LNKTYPE)
        info.linkname = target
        self._write(info.tobuf(tarfile.PAX_FORMAT))

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._write(b"\0" * (BLOCK - size % BLOCK))

    def close(self) -> None:
        self._write(b"\0" * (2 * BLOCK))
