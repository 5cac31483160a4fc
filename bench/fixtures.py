"""What the scenarios run against: two registries of the bench's own, and images built offline.

Images are OCI layouts written with the standard library, streamed so that a 1 GiB layer never
sits in memory, cached under .bench/ across runs of the bench (building is slow here), and
seeded into the registries with skopeo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT
from devsupport.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    canonical,
    write_blob,
)
from devsupport.registry import Registry

MiB = 1024 * 1024


@dataclass(frozen=True)
class BuiltLayer:
    digest: str
    diff_id: str
    size: int  # compressed
    uncompressed: int
    path: Path


def _chunk(length: int) -> bytes:
    """Half random, half zeros per 4 KiB page: gzip halves it, as it does typical layers."""
    page = bytearray(length)
    noise = os.urandom((length + 1) // 2)
    for start in range(0, length, 4096):
        half = min(2048, length - start)
        page[start : start + half] = noise[start // 2 : start // 2 + half]
    return bytes(page)


def write_layer(layout: Path, size: int, name: str, level: int = 1) -> BuiltLayer:
    """A tar+gzip layer holding one file of `size` bytes, streamed to disk (never in memory)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f".layer-{name}"
    tar_hash, gz_hash = hashlib.sha256(), hashlib.sha256()
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip framing, mtime 0
    written = 0
    uncompressed = 0
    with tmp.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal written, uncompressed
            tar_hash.update(data)
            uncompressed += len(data)
            packed = compressor.compress(data)
            gz_hash.update(packed)
            written += len(packed)
            out.write(packed)

        info = tarfile.TarInfo(f"data/{name}.bin")
        info.size, info.mode, info.mtime = size, 0o644, 0
        emit(info.tobuf(format=tarfile.PAX_FORMAT))
        left = size
        while left:
            chunk = _chunk(min(MiB, left))
            emit(chunk)
            left -= len(chunk)
        emit(b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024)
        tail = compressor.flush()
        gz_hash.update(tail)
        written += len(tail)
        out.write(tail)
    digest = "sha256:" + gz_hash.hexdigest()
    final = blobs / digest[7:]
    os.replace(tmp, final)
    return BuiltLayer(digest, "sha256:" + tar_hash.hexdigest(), written, uncompressed, final)


def write_image(layout: Path, layers: list[BuiltLayer], tag: str, label: str) -> str:
    """Config + manifest for `layers`, tagged `tag` in the layout's index.json."""
    config = canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"bench": label}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created_by": f"bench layer {i}"} for i in range(len(layers))],
        }
    )
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": write_blob(layout, config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
    )
    digest = write_blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = layout / "index.json"
    entries = json.loads(index_path.read_text())["manifests"] if index_path.exists() else []
    entries = [e for e in entries if e["annotations"]["org.opencontainers.image.ref.name"] != tag]
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    )
    return digest


def seed(layout: Path, tag: str, reference: str) -> None:
    """Push a layout's tag to a registry with skopeo, digests preserved."""
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:{tag}",
            f"docker://{reference}",
        ],
        check=True,
        capture_output=True,
    )


def _write_built(path: Path, layers: list[BuiltLayer]) -> None:
    path.write_text(
        "".join(f"{x.digest} {x.diff_id} {x.size} {x.uncompressed} {x.path}\n" for x in layers)
    )


def _read_built(path: Path) -> list[BuiltLayer]:
    out = []
    for line in path.read_text().splitlines():
        digest, diff_id, size, uncompressed, file = line.split(" ", 4)
        out.append(BuiltLayer(digest, diff_id, int(size), int(uncompressed), Path(file)))
    return out


def spec_text(name: str, base: str, targets: list[str], extra: str = "") -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
        f"metadata: {{name: {name}}}\nspec:\n  base: {base}\n{extra}"
        f"  targets: [{', '.join(targets)}]\n---\n"
    )


class Fixtures:
    """Registries A and B under `work` (plain HTTP on loopback), and the images seeded there."""

    def __init__(self, work: Path) -> None:
        self.a = Registry(work / "registry-a")
        self.b = Registry(work / "registry-b")
        self.seeded: set[str] = set()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()

    def seed_once(self, layout: Path, reference: str) -> None:
        if reference not in self.seeded:
            seed(layout, "1", reference)
            self.seeded.add(reference)

    def layout(
        self, name: str, layers: list[tuple[int, str]], tag: str = "1"
    ) -> tuple[Path, list[BuiltLayer]]:
        """A layout under .bench/ (reused across runs of the bench: building is slow here)."""
        key = hashlib.sha256(repr((name, layers, tag)).encode()).hexdigest()[:12]
        path = ROOT / ".bench" / f"{name}-{key}"
        built = path / "built.txt"
        if built.exists():
            return path, _read_built(built)
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        out = [write_layer(path, size, layer_name) for size, layer_name in layers]
        write_image(path, out, tag, name)
        _write_built(built, out)
        print(f"  built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return path, out
