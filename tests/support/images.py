"""Build test images offline with the standard library, and seed registries with skopeo.

Layers are tar archives with fixed mtimes and owners, gzipped with mtime 0, so every run builds
the same bytes. Images are written as OCI image layouts, then copied into a registry by skopeo,
so that reconciler's client is not the only witness of its own work.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devsupport.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    canonical,
    sha256,
    write_blob,
)

# The media types, digests and blobs come from devsupport.oci (shared with the bench).
__all__ = [
    "FIXED_MTIME",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "Image",
    "Layer",
    "Layout",
    "access",
    "canonical",
    "inspect_raw",
    "make_layer",
    "make_tar",
    "push_blob_only",
    "push_layout",
    "sha256",
    "skopeo",
    "write_blob",
    "write_layout",
]

FIXED_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Layer:
    tar: bytes
    blob: bytes

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)

    @property
    def size(self) -> int:
        return len(self.blob)


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def make_layer(files: dict[str, bytes], compress: bool = True) -> Layer:
    tar = make_tar(files)
    return Layer(tar, gzip.compress(tar, mtime=0) if compress else tar)


@dataclass
class Image:
    """One platform's image: its layers, config and manifest, all as exact bytes."""

    os: str
    architecture: str
    layers: list[Layer]
    variant: str | None = None
    config_extra: dict[str, Any] = field(default_factory=dict)
    config: bytes = b""
    manifest: bytes = b""

    def __post_init__(self) -> None:
        config: dict[str, Any] = {
            "created": "2023-11-14T22:13:20Z",
            "architecture": self.architecture,
            "os": self.os,
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                "Cmd": ["sh"],
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [
                {"created": "2023-11-14T22:13:20Z", "created_by": f"layer {i}"}
                for i in range(len(self.layers))
            ],
        }
        if self.variant:
            config["variant"] = self.variant
        config.update(self.config_extra)
        self.config = canonical(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256(self.config),
                "size": len(self.config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in self.layers
            ],
        }
        self.manifest = canonical(manifest)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def platform(self) -> dict[str, str]:
        platform = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            platform["variant"] = self.variant
        return platform


@dataclass
class Layout:
    path: Path
    root: bytes
    root_media_type: str
    images: list[Image]

    @property
    def digest(self) -> str:
        return sha256(self.root)


def write_layout(
    path: Path,
    images: list[Image],
    *,
    index: bool = True,
    tag: str = "latest",
    index_annotations: dict[str, str] | None = None,
) -> Layout:
    """An OCI image layout holding one image (a single manifest) or an index of several."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for image in images:
        for layer in image.layers:
            write_blob(path, layer.blob)
        write_blob(path, image.config)
        write_blob(path, image.manifest)
    if index:
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": image.digest,
                    "size": len(image.manifest),
                    "platform": image.platform,
                }
                for image in images
            ],
        }
        if index_annotations:
            body["annotations"] = index_annotations
        root, media_type = canonical(body), body["mediaType"]
        write_blob(path, root)
    else:
        root, media_type = images[0].manifest, OCI_MANIFEST
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": media_type,
                "digest": sha256(root),
                "size": len(root),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(top))
    return Layout(path, root, media_type, images)


def skopeo(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def access(prefix: str, creds: str | None = None, cert_dir: Path | None = None) -> list[str]:
    """skopeo options to reach a test registry: credentials, and its CA (else no TLS check)."""
    args = [f"--{prefix}creds", creds] if creds else []
    if cert_dir is not None:
        return [*args, f"--{prefix}cert-dir", str(cert_dir)]
    return [*args, f"--{prefix}tls-verify=false"]


def push_layout(
    layout: Layout,
    reference: str,
    tag: str = "latest",
    *,
    docker: bool = False,
    creds: str | None = None,
    cert_dir: Path | None = None,
) -> None:
    """Seed a registry with skopeo: as is (digests preserved), or converted to Docker v2s2."""
    how = ["--format", "v2s2"] if docker else ["--preserve-digests"]
    skopeo(
        "copy",
        "--all",
        *how,
        *access("dest-", creds, cert_dir),
        f"oci:{layout.path}:{tag}",
        f"docker://{reference}",
    )


def inspect_raw(reference: str, creds: str | None = None, cert_dir: Path | None = None) -> bytes:
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", *access("", creds, cert_dir), f"docker://{reference}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"skopeo inspect {reference} failed: {result.stderr.decode()}")
    return result.stdout


def push_blob_only(
    layout_dir: Path,
    registry: str,
    repository: str,
    layer: Layer,
    *,
    creds: str | None = None,
    cert_dir: Path | None = None,
) -> None:
    """Put a lone layer blob into a repository (a layer that lives nowhere else).

    skopeo copies images, not blobs; a throwaway single-layer image carries the blob there.
    """
    image = Image("linux", "amd64", [layer])
    write_layout(layout_dir, [image], index=False, tag="carrier")
    skopeo(
        "copy",
        "--preserve-digests",
        *access("dest-", creds, cert_dir),
        f"oci:{layout_dir}:carrier",
        f"docker://{registry}/{repository}:carrier",
    )
