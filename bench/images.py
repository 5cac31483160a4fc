"""Benchmark images, built offline: OCI layouts written with the standard library, streamed so
that a 1 GiB layer never sits in memory, and seeded into registries with skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class BuiltLayer:
    digest: str
    diff_id: str
    size: int  # compressed
    uncompressed: int
    path: Path


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


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
    config = _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"bench": label}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created_by": f"bench layer {i}"} for i in range(len(layers))],
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": _blob(layout, config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
    )
    digest = _blob(layout, manifest)
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
