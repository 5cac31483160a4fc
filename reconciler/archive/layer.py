"""Reproducible layers from local files (`path:` in a spec).

Same files, same digest, on any machine: entries sorted by path, mtime 0, uid/gid 0, no user or
group names, permissions reduced to 0755 (anything executable, and directories) or 0644, no
extended attributes or other host metadata; gzip with mtime 0 and no file name. Symbolic links
are stored as links; hard links as the files they name; sockets, devices and FIFOs are refused.
The tar is hashed (diff_id) and the gzip stream hashed (digest) while they are written, to a
file in the state directory named by its digest; memory does not grow with the layer's size.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler.archive.tarstream import entry
from reconciler.errors import ResolveError
from reconciler.fileio import AtomicFile
from reconciler.oci.digest import Digest, Hasher


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
    with AtomicFile(out_dir, "layer") as out:
        blob = _Hashing(out.handle)
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
        out.commit(final)
    return BuiltLayer(final, digest, blob.hasher.size, tar_stream.hasher.digest())
