"""`reconciler save`: a spec's desired image as one tar archive that every loader accepts.

The archive holds, side by side:
- an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) with the full result,
  exactly the bytes `apply` would push (the index, for a multi-platform spec);
- `manifest.json` (Config, RepoTags, Layers) for one platform, as `docker load` reads it;
- `repositories` (`{name: {tag: id}}`), naming the legacy id of the top layer;
- legacy per-layer directories `<id>/VERSION`, `<id>/json`, `<id>/layer.tar`, whose ids form
  the parent chain `docker save` builds: each id is the SHA-256 of the layer's v1 JSON with
  its chain ID (`layer_id`) and its parent's id, so equal stacks get equal ids.
Each blob is stored once; `layer.tar` entries are hard links to it, unless uncompressed layers
are asked for (then they are plain tars, decompressed through a temporary file on disk).
Blobs stream from the registries chunk by chunk, verified against their digests; the archive
is written to a temporary file next to the output and renamed into place only when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform as host_platform
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.archive.tarstream import TarStream
from reconciler.cache import ContentCache
from reconciler.errors import ResolveError
from reconciler.fileio import AtomicFile, Window
from reconciler.model.desired import DesiredBlob, DesiredImage, DesiredManifest, image_parts
from reconciler.oci import mediatypes as mt
from reconciler.oci.document import CONFIG_SIZE_LIMIT
from reconciler.oci.platform import PlatformKey
from reconciler.oci.reference import Reference
from reconciler.store.generated import generated_bytes
from reconciler.store.open import Stores

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
EPOCH = "1970-01-01T00:00:00Z"
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class SaveOptions:
    platform: PlatformKey | None = None
    tags: tuple[str, ...] = ()  # NAME:TAG; default: the spec's targets
    uncompressed_layers: bool = False


@dataclass(frozen=True)
class SaveResult:
    path: Path
    size: int
    platform: PlatformKey | None
    blobs: int
    repo_tags: tuple[str, ...]


def host_platform_key() -> PlatformKey:
    return PlatformKey("linux", _MACHINES.get(host_platform.machine().lower(), "amd64"))


def pick_manifest(desired: DesiredImage, wanted: PlatformKey | None) -> DesiredManifest:
    images = [m for m in desired.manifests if m.platform is not None]
    if not images:
        images = list(desired.manifests[:1])
    if wanted is not None:
        for image in images:
            if image.platform == wanted:
                return image
        have = ", ".join(str(m.platform) for m in images)
        raise ResolveError(f"platform {wanted} is not in the image (it has {have})")
    host = host_platform_key()
    for image in images:
        if image.platform is not None and (image.platform.os, image.platform.architecture) == (
            host.os,
            host.architecture,
        ):
            return image
    return images[0]


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_ids(diff_ids: list[str]) -> list[str]:
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def legacy_layers(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(id, v1 json) per layer, bottom first, chained through `parent` as docker save does."""
    diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    out: list[tuple[str, dict[str, Any]]] = []
    parent: str | None = None
    for i, layer_id in enumerate(chain_ids(diff_ids)):
        v1: dict[str, Any] = {"created": EPOCH}
        if i == len(diff_ids) - 1:
            v1 = {
                k: config[k]
                for k in ("created", "author", "architecture", "variant", "os", "config")
                if k in config
            }
            v1.setdefault("created", EPOCH)
        identity = {**v1, "layer_id": layer_id}
        if parent is not None:
            identity["parent"] = "sha256:" + parent
        v1_id = hashlib.sha256(_json(identity)).hexdigest()
        body = {**v1, "id": v1_id, "os": config.get("os", "linux")}
        if parent is not None:
            body["parent"] = parent
        out.append((v1_id, body))
        parent = v1_id
    return out


def _repo_tags(desired: DesiredImage, tags: tuple[str, ...]) -> tuple[Reference, ...]:
    if tags:
        return tuple(Reference.parse(t) for t in tags)
    named = tuple(t.reference for t in desired.targets if t.reference is not None)
    if not named:
        raise ResolveError(
            f"spec {desired.name} has only local targets; name the image with --tag NAME:TAG"
        )
    return named


def _blob_name(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_}"


class ArchiveWriter:
    def __init__(self, stores: Stores, cache: ContentCache | None = None) -> None:
        self.stores = stores
        self.cache = cache  # configs the resolver already read are taken from here

    async def _chunks(self, blob: DesiredBlob) -> AsyncIterator[bytes]:
        source = blob.source
        if source is None:
            async for chunk in generated_bytes(blob):
                yield chunk
            return
        async with self.stores.reader(source).open_blob(blob.digest, blob.size) as stream:
            async for chunk in stream:
                yield chunk

    async def _config(self, blob: DesiredBlob) -> bytes:
        if blob.data is not None:
            return blob.data
        cached = self.cache.get_document(blob.digest) if self.cache is not None else None
        if cached is not None:
            return cached[0]
        assert blob.source is not None  # noqa: S101 - checked in _chunks' terms
        return await self.stores.reader(blob.source).get_blob(blob.digest, CONFIG_SIZE_LIMIT)

    async def save(
        self,
        desired: DesiredImage,
        output: Path,
        options: SaveOptions,
        beside: Sequence[tuple[str, DesiredImage]] = (),
    ) -> SaveResult:
        """Write the archive; `beside` are artifacts stored in its layout under their tags
        (carried signatures and attestations, the referrers fallback index)."""
        chosen = pick_manifest(desired, options.platform)
        config_blob = chosen.blobs[0]
        config = json.loads(await self._config(config_blob))
        refs = _repo_tags(desired, options.tags)
        with AtomicFile(output.parent, output.name) as out:
            tar = TarStream(out.handle)
            blobs = await self._write_layout(tar, desired, refs, beside)
            out.handle.flush()
            self._write_docker_part(tar, chosen, config, refs, options, out.temporary)
            tar.close()
            out.commit(output)
        return SaveResult(
            output, output.stat().st_size, chosen.platform, blobs, tuple(str(r) for r in refs)
        )

    async def _write_layout(
        self,
        tar: TarStream,
        desired: DesiredImage,
        refs: tuple[Reference, ...],
        beside: Sequence[tuple[str, DesiredImage]] = (),
    ) -> int:
        tar.add_bytes("oci-layout", LAYOUT)
        written: set[str] = set()
        for image in (desired, *(artifact for _tag, artifact in beside)):
            parts = image_parts(image)
            for blob in parts.blobs:
                name = _blob_name(str(blob.digest))
                if name not in written:
                    written.add(name)
                    await tar.add_stream(name, blob.size, self._chunks(blob))
            for document in parts.documents:
                name = _blob_name(str(document.digest))
                if name not in written:
                    written.add(name)
                    tar.add_bytes(name, document.raw)
        root = desired.root
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": root.media_type,
                    "digest": str(root.digest),
                    "size": len(root.raw),
                    "annotations": {
                        "io.containerd.image.name": str(ref),
                        "org.opencontainers.image.ref.name": ref.tag or "latest",
                    },
                }
                for ref in refs
            ]
            + [
                {
                    "mediaType": artifact.root.media_type,
                    "digest": str(artifact.root.digest),
                    "size": len(artifact.root.raw),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }
                for tag, artifact in beside
            ],
        }
        tar.add_bytes("index.json", _json(index))
        return len(written)

    def _write_docker_part(
        self,
        tar: TarStream,
        chosen: DesiredManifest,
        config: dict[str, Any],
        refs: tuple[Reference, ...],
        options: SaveOptions,
        archive: Path,
    ) -> None:
        layers = list(chosen.blobs[1:])
        legacy = legacy_layers(config)
        if len(legacy) != len(layers):
            raise ResolveError(
                f"config lists {len(legacy)} diff_ids for {len(layers)} layers; refusing to save"
            )
        paths = []
        for (v1_id, body), blob in zip(legacy, layers, strict=True):
            tar.add_bytes(f"{v1_id}/VERSION", b"1.0")
            tar.add_bytes(f"{v1_id}/json", _json(body))
            layer_path = f"{v1_id}/layer.tar"
            gzipped = mt.compression_of(blob.descriptor.media_type) is mt.Compression.GZIP
            if options.uncompressed_layers and gzipped:
                _add_uncompressed(
                    tar, layer_path, archive, tar.offsets[_blob_name(str(blob.digest))]
                )
                paths.append(layer_path)
            else:
                tar.add_link(layer_path, _blob_name(str(blob.digest)))
                paths.append(_blob_name(str(blob.digest)))
        manifest = [
            {
                "Config": _blob_name(str(chosen.blobs[0].digest)),
                "RepoTags": [f"{r.registry}/{r.repository}:{r.tag or 'latest'}" for r in refs],
                "Layers": paths,
            }
        ]
        tar.add_bytes("manifest.json", _json(manifest))
        repositories: dict[str, dict[str, str]] = {}
        for ref in refs:
            repositories.setdefault(f"{ref.registry}/{ref.repository}", {})[ref.tag or "latest"] = (
                legacy[-1][0]
            )
        tar.add_bytes("repositories", _json(repositories))


def _add_uncompressed(tar: TarStream, name: str, archive: Path, where: tuple[int, int]) -> None:
    """Inflate a gzip member already in the archive into a plain tar member, via a disk file."""
    offset, size = where
    with archive.open("rb") as source, tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(fileobj=Window(source, offset, size, str(archive))) as inflated:
            shutil.copyfileobj(inflated, spool, 1024 * 1024)
        length = spool.tell()
        spool.seek(0)
        tar.add_file(name, spool, length)
