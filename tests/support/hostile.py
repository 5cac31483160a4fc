"""Building blocks for hostile local stores: file trees, OCI layouts, docker archives, a runner.

A store is first described as a `Tree` (member name -> bytes, a symbolic link or a directory),
so the same malformed layout can be written as a directory and as a tar file. `OciParts` and
`DockerParts` hold a valid image's parts, kept consistent by their setters (a new config
updates the manifest's descriptor, a new manifest the index entry), so each case changes one
thing and nothing else. `run_reconciler` runs the CLI as a child and reports its own rusage
(os.wait4), its wall time, and whether it had to be killed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.images import (
    FIXED_MTIME,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    canonical,
    sha256,
)

LAYOUT_MARKER = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Directory:
    pass


Entry = bytes | Symlink | Directory
Tree = dict[str, Entry]


def blob_member(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def nested_lists(depth: int) -> bytes:
    """`[[[...]]]`, `depth` deep: valid JSON that a recursive parser cannot descend."""
    return b"[" * depth + b"]" * depth


def write_dir(tree: Tree, root: Path) -> None:
    for name in sorted(tree):
        assert ".." not in name.split("/"), name  # a directory tree stays where it is put
        entry, path = tree[name], root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(entry, Directory):
            path.mkdir(exist_ok=True)
        elif isinstance(entry, Symlink):
            path.symlink_to(entry.target)
        else:
            path.write_bytes(entry)


def tar_bytes(tree: Tree) -> bytes:
    """The tree as a tar archive, members in sorted order, names written exactly as given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(tree):
            entry = tree[name]
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            if isinstance(entry, Directory):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(entry, Symlink):
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry), 0o644
                tar.addfile(info, io.BytesIO(entry))
    return buffer.getvalue()


def write_tar(tree: Tree, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(tree))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass
class OciParts:
    """A valid single-manifest OCI layout, as parts; `tree()` writes whatever they now are."""

    image: Image
    config: bytes = b""
    manifest: bytes = b""
    entry: dict[str, Any] = field(default_factory=dict)  # index.json's descriptor of it
    index: Any = None  # index.json as a JSON value; None: one entry, `entry`
    index_raw: bytes | None = None  # index.json as exact bytes (wins over `index`)
    marker: bool = True
    extra: dict[str, Entry] = field(default_factory=dict)  # added or replacing members
    removed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.config = self.config or self.image.config
        self.manifest = self.manifest or self.image.manifest
        if not self.entry:
            self.entry = {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(self.manifest),
                "size": len(self.manifest),
                "annotations": {REF_NAME: "latest"},
            }

    @property
    def layer(self) -> bytes:
        return self.image.layers[0].blob

    @property
    def manifest_member(self) -> str:
        return blob_member(sha256(self.manifest))

    @property
    def config_member(self) -> str:
        return blob_member(sha256(self.config))

    @property
    def layer_member(self) -> str:
        return blob_member(sha256(self.layer))

    def manifest_json(self) -> dict[str, Any]:
        value = json.loads(self.manifest)
        assert isinstance(value, dict)
        return value

    def set_manifest(self, raw: bytes) -> None:
        """New manifest bytes; the index entry follows (digest and size)."""
        self.manifest = raw
        self.entry["digest"] = sha256(raw)
        self.entry["size"] = len(raw)

    def set_config(self, raw: bytes) -> None:
        """New config bytes; the manifest's config descriptor, and so the entry, follow."""
        self.config = raw
        manifest = self.manifest_json()
        manifest["config"]["digest"] = sha256(raw)
        manifest["config"]["size"] = len(raw)
        self.set_manifest(canonical(manifest))

    def index_json(self) -> bytes:
        if self.index_raw is not None:
            return self.index_raw
        value = self.index
        if value is None:
            value = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [self.entry]}
        return _json(value)

    def tree(self) -> Tree:
        tree: Tree = {}
        if self.marker:
            tree["oci-layout"] = LAYOUT_MARKER
        for blob in (*[layer.blob for layer in self.image.layers], self.config, self.manifest):
            tree[blob_member(sha256(blob))] = blob
        tree["index.json"] = self.index_json()
        tree.update(self.extra)
        for name in self.removed:
            tree.pop(name, None)
        return tree


DOCKER_TAG = "example.com/hostile/image:1"


@dataclass
class DockerParts:
    """A valid `docker save` archive of one image with plain tar layers, as parts."""

    image: Image
    config: bytes = b""
    config_name: str = ""
    layer_names: list[str] = field(default_factory=list)
    manifest: Any = None  # manifest.json as a JSON value; None: the one entry, `entry()`
    manifest_raw: bytes | None = None  # manifest.json as exact bytes (wins over `manifest`)
    extra: dict[str, Entry] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.config = self.config or self.image.config
        self.config_name = self.config_name or sha256(self.config).split(":")[1] + ".json"
        if not self.layer_names:
            self.layer_names = [
                layer.diff_id.split(":")[1] + "/layer.tar" for layer in self.image.layers
            ]

    def entry(self) -> dict[str, Any]:
        return {"Config": self.config_name, "RepoTags": [DOCKER_TAG], "Layers": self.layer_names}

    def manifest_json(self) -> bytes:
        if self.manifest_raw is not None:
            return self.manifest_raw
        return _json([self.entry()] if self.manifest is None else self.manifest)

    def tree(self) -> Tree:
        name, tag = DOCKER_TAG.rsplit(":", 1)
        top = self.layer_names[-1].split("/")[0] if self.layer_names else ""
        tree: Tree = {
            "manifest.json": self.manifest_json(),
            "repositories": _json({name: {tag: top}}),
            self.config_name: self.config,
        }
        for layer_name, layer in zip(self.layer_names, self.image.layers, strict=False):
            tree[layer_name] = layer.blob
        tree.update(self.extra)
        for member in self.removed:
            tree.pop(member, None)
        return tree


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_kib: int  # the child's peak resident set (ru_maxrss is in KiB on Linux)
    killed: bool

    def describe(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-8:])
        return (
            f"reconciler {' '.join(self.args)} -> exit {self.code} in {self.seconds:.2f}s, "
            f"peak {self.max_rss_kib // 1024} MiB{' (killed)' if self.killed else ''}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr (tail) ---\n{tail}"
        )


def run_reconciler(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Run:
    """`python -m reconciler ARGS`, killed after `timeout` seconds; its rusage is its own."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return Run(
            tuple(args),
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            seconds,
            usage.ru_maxrss,
            killed.is_set(),
        )


def snapshot(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, tuple[str, int, int]]:
    """Every entry under root (links not followed): kind, size, mtime; top-level `skip` left out."""
    found: dict[str, tuple[str, int, int]] = {}
    for directory, dirs, files in os.walk(root):
        base = Path(directory)
        if base == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in [*dirs, *files]:
            if base == root and name in skip:
                continue
            path = base / name
            stat = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            size = 0 if kind == "dir" else stat.st_size
            mtime = 0 if kind == "dir" else stat.st_mtime_ns
            found[str(path.relative_to(root))] = (kind, size, mtime)
    return found
