"""Hostile archives are refused while indexing; nothing is ever extracted."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.archive.reader import ArchiveError, ArchiveIndex


def add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def link(kind: bytes, target: str) -> dict[str, object]:
    return {"type": kind, "linkname": target, "size": 0}


HOSTILE: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dot-dot": (lambda t: add(t, "../../escaped"), "climbs out with '..'"),
    "nested dot-dot": (lambda t: add(t, "blobs/../../escaped"), "climbs out with '..'"),
    "absolute": (lambda t: add(t, "/etc/passwd"), "absolute path"),
    "symlink absolute": (
        lambda t: add(t, "layer.tar", **link(tarfile.SYMTYPE, "/etc/shadow")),
        "symbolic link to an absolute path",
    ),
    "symlink out": (
        lambda t: add(t, "abc/layer.tar", **link(tarfile.SYMTYPE, "../../etc/shadow")),
        "symbolic link out of the archive",
    ),
    "symlink to nothing": (
        lambda t: add(t, "abc/layer.tar", **link(tarfile.SYMTYPE, "../missing.tar")),
        "which is no file of the archive",
    ),
    "symlink loop": (
        lambda t: (
            add(t, "a", **link(tarfile.SYMTYPE, "b")),
            add(t, "b", **link(tarfile.SYMTYPE, "a")),
        ),
        "too many symbolic links",
    ),
    "hardlink out": (
        lambda t: add(t, "layer.tar", **link(tarfile.LNKTYPE, "../../etc/shadow")),
        "climbs out with '..'",
    ),
    "hardlink to nothing": (
        lambda t: add(t, "layer.tar", **link(tarfile.LNKTYPE, "missing")),
        "not an earlier file",
    ),
    "duplicate": (
        lambda t: (add(t, "manifest.json", b"[]"), add(t, "./manifest.json", b"[{}]")),
        "appears twice",
    ),
    "device": (lambda t: add(t, "dev", type=tarfile.CHRTYPE, size=0), "special file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused(tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    archive = tmp_path / "work" / "evil.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        build(tar)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ArchiveError, match=message) as caught:
        ArchiveIndex(archive)
    assert str(archive) in str(caught.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_oversized_json_member_is_refused_without_reading_it(tmp_path: Path) -> None:
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "manifest.json", b"[" + b" " * (10 * 1024 * 1024) + b"]")
    index = ArchiveIndex(archive)
    with pytest.raises(ArchiveError, match="over the 4194304-byte limit"):
        index.read_json("manifest.json")


def test_a_saved_archive_indexes_with_its_links(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "blobs/sha256/aa", b"layer bytes")
        add(tar, "0123/layer.tar", **link(tarfile.LNKTYPE, "blobs/sha256/aa"))
        add(tar, "manifest.json", json.dumps([{"Layers": ["0123/layer.tar"]}]).encode())
        # As docker save and skopeo link a legacy layer to its file (even before it exists).
        add(tar, "4567/layer.tar", **link(tarfile.SYMTYPE, "../beef.tar"))
        add(tar, "beef.tar", b"other layer")
    index = ArchiveIndex(archive)
    assert b"".join(index.chunks("0123/layer.tar")) == b"layer bytes"
    assert b"".join(index.chunks("4567/layer.tar")) == b"other layer"
    assert index.read_json("./manifest.json") == [{"Layers": ["0123/layer.tar"]}]
    assert "blobs/sha256/aa" in index
