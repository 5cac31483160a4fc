"""Reproducible layers from local files (`path:` in a spec).

Same files, same digest, on any machine: entries sorted by path, mtime 0, uid/gid 0, no user or
group names, permissions reduced to 0755 (anything executable, and directories) or 0644, no
extended attributes or other host metadata; gzip with mtime 0 and no file name. Symbolic links
are stored as links; hard links as the files they name; sockets, devices and FIFOs are refused.
The tar is hashed (diff_id) and the gzip stream hashed (digest) while they are written, to a
file in the state directory named by its digest; memory does not grow with the layer's size.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler.archive.reader import ArchiveError
from reconciler.archive.tarstream import entry
from reconciler.errors import ResolveError
from reconciler.oci.digest import Digest, Hasher

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BuiltLayer:
    file: Path  # the gzip blob
    digest: Digest
    size: int
    diff_id: Digest


class _Hashing:
    """A write-only file that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = Hasher()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _entries(root: Path) -> list[tuple[str, Path]]:
    """(name in the layer, path on disk), sorted; a single file is stored under its name."""
    if not root.is_dir():
        return [(root.name, root)]
    out = []
    for directory, dirs, files in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in dirs + files:
            path = base / name
            out.append((path.relative_to(root).as_posix(), path))
    return sorted(out)


def _info(name: str, path: Path) -> tarfile.TarInfo:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        info = entry(name, kind=tarfile.SYMTYPE, mode=0o777)
        info.linkname = os.readlink(path)
        return info
    if stat.S_ISDIR(st.st_mode):
        return entry(name, kind=tarfile.DIRTYPE, mode=0o755)
    if stat.S_ISREG(st.st_mode):
        return entry(name, st.st_size, mode=0o755 if st.st_mode & 0o111 else 0o644)
    raise ResolveError(f"{path}: not a file, directory or symbolic link; refused in a layer")


def build_layer(source: Path, out_dir: Path) -> BuiltLayer:
    if not source.exists() and not source.is_symlink():
        raise ResolveError(f"layer path {source} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".layer-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            blob = _Hashing(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0) as zipped:
                tar_stream = _Hashing(zipped)  # type: ignore[arg-type]
                with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for name, path in _entries(source):
                        info = _info(name, path)
                        if info.isreg():
                            with path.open("rb") as handle:
                                tar.addfile(info, handle)
                        else:
                            tar.addfile(info)
        digest = blob.hasher.digest()
        final = out_dir / f"{digest.hex}.tar.gz"
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuiltLayer(final, digest, blob.hasher.size, tar_stream.hasher.digest())


async def file_chunks(
    path: Path, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """A local file's bytes (or `length` of them from `offset`: a member of an archive), read
    off the event loop in large chunks. A window the file ends inside is an error."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        if offset:
            await asyncio.to_thread(handle.seek, offset)
        left = length
        while left is None or left > 0:
            chunk = await asyncio.to_thread(
                handle.read, CHUNK if left is None else min(CHUNK, left)
            )
            if not chunk:
                if left:
                    raise ArchiveError(
                        f"{path}: the file ends inside a member ({left} bytes short)"
                    )
                break
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        handle.close()
