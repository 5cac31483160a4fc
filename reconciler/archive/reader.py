"""Reading image archives without extracting them, and refusing hostile ones.

A `docker save` / `reconciler save` archive is indexed once: every member's name, type, data
offset and size. Nothing is written to disk; a member is read later as a window of the archive
file. Refused, each with an error naming the archive and the member:
- absolute names, `..` components, and names that are not plain UTF-8 paths;
- the same name twice (which copy a loader picks is loader-defined: a confusion attack);
- links that leave the archive: a symbolic link whose target, taken from the link's directory,
  is absolute or climbs out, and a hard link to anything but an earlier regular member;
  symbolic links that stay inside (`<id>/layer.tar -> ../<hex>.tar`, as docker save and skopeo
  write them) are followed, through at most 8 hops, to a regular member;
- devices, FIFOs and other special members;
- JSON members (manifest.json, repositories, index.json, configs) over 4 MiB when read.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import ArchiveError
from reconciler.fileio import CHUNK, Window, read_window
from reconciler.oci.document import load_json

__all__ = ["JSON_LIMIT", "ArchiveError", "ArchiveIndex", "Member"]

JSON_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, in the archive file
    size: int


def _clean(archive: Path, raw: str) -> str:
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: member {raw!r} has an absolute path; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {raw!r} climbs out with '..'; refused")
    if any("\0" in p for p in parts):
        raise ArchiveError(f"{archive}: member {raw!r} has a NUL byte; refused")
    return "/".join(parts)


class ArchiveIndex:
    """The regular files of a tar archive, by normalised name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, Member] = {}
        self._symlinks: dict[str, tuple[str, str]] = {}  # name -> (target, as written)
        last: str | None = None
        try:
            self._length = path.stat().st_size
            with tarfile.open(path, mode="r:") as tar:
                for info in tar:
                    self._add(tar, info)
                    last = info.name
        except tarfile.TarError as exc:
            where = f" after member {last!r}" if last else ""
            raise ArchiveError(f"{path}: not a readable tar archive{where}: {exc}") from None
        for name in self._symlinks:
            self.members[name] = self._follow(name)

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = _clean(self.path, info.name)
        if info.isdir():
            return
        if info.offset_data + info.size > self._length:
            raise ArchiveError(
                f"{self.path}: member {name!r} ends past the end of the archive (truncated)"
            )
        if name in self.members or name in self._symlinks:
            raise ArchiveError(f"{self.path}: member {name!r} appears twice; refused")
        if info.issym():
            if info.linkname.startswith("/"):
                raise ArchiveError(
                    f"{self.path}: member {name!r} is a symbolic link to an absolute path "
                    f"({info.linkname!r}); refused"
                )
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
            if joined == ".." or joined.startswith("../"):
                raise ArchiveError(
                    f"{self.path}: member {name!r} is a symbolic link out of the archive "
                    f"({info.linkname!r}); refused"
                )
            self._symlinks[name] = (joined, info.linkname)
            return
        if info.islnk():
            target = _clean(self.path, info.linkname)
            linked = self.members.get(target)
            if linked is None:
                raise ArchiveError(
                    f"{self.path}: member {name!r} links to {info.linkname!r}, "
                    "which is not an earlier file of the archive; refused"
                )
            self.members[name] = Member(name, linked.offset, linked.size)
            return
        if not info.isreg():
            raise ArchiveError(f"{self.path}: member {name!r} is a special file; refused")
        self.members[name] = Member(name, info.offset_data, info.size)

    def _follow(self, name: str) -> Member:
        current = name
        for _ in range(8):
            target, written = self._symlinks[current]
            if target in self.members:
                found = self.members[target]
                return Member(name, found.offset, found.size)
            if target not in self._symlinks:
                raise ArchiveError(
                    f"{self.path}: member {name!r} is a symbolic link to {written!r}, "
                    "which is no file of the archive; refused"
                )
            current = target
        raise ArchiveError(f"{self.path}: member {name!r}: too many symbolic links; refused")

    def __contains__(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def member(self, name: str) -> Member:
        found = self.members.get(posixpath.normpath(name))
        if found is None:
            raise ArchiveError(f"{self.path}: no member {name!r}")
        return found

    def read(self, name: str, limit: int = JSON_LIMIT) -> bytes:
        member = self.member(name)
        if member.size > limit:
            raise ArchiveError(
                f"{self.path}: member {name!r} is {member.size} bytes, over the {limit}-byte limit"
            )
        return read_window(self.path, member.offset, member.size)

    def read_json(self, name: str) -> Any:
        return load_json(self.read(name), f"{self.path}: member {name!r}", JSON_LIMIT)

    def chunks(self, name: str, size: int = CHUNK) -> Iterator[bytes]:
        member = self.member(name)
        with self.path.open("rb") as handle:
            yield from Window(handle, member.offset, member.size, f"{self.path}: {name}").chunks(
                size
            )
