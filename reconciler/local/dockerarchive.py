"""`docker-archive:PATH[:NAME:TAG]`: an image read from a `docker save` archive.

manifest.json selects the image (by a RepoTag, or the only entry). Its config is read from the
archive and its layers stay where they are. Which manifest describes them:
- If the archive also holds an OCI layout (as `reconciler save` writes) with a manifest whose
  config is this one, that manifest is used byte for byte, with its compressed layers: the
  digests are those of the image that was saved.
- Otherwise a Docker v2 schema 2 manifest is written from manifest.json. A plain tar layer is
  described as `application/vnd.docker.image.rootfs.diff.tar` under its diff_id (the digest of
  an uncompressed layer is its diff_id, and it is verified when read); a gzip layer as
  `.tar.gzip`, hashed once. skopeo labels uncompressed layers `.tar.gzip`; we do not, since a
  loader that trusts the label would try to inflate a plain tar.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.archive.reader import ArchiveError
from reconciler.diffid import sniff_compression
from reconciler.errors import DocumentError, NotFoundError, ReferenceError_
from reconciler.local.store import LocalStore, TarFiles, blob_name, digest_or_none
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest, Hasher
from reconciler.oci.document import (
    CONFIG_SIZE_LIMIT,
    MANIFEST_SIZE_LIMIT,
    IndexDocument,
    ManifestDocument,
    make_manifest_document,
    parse_document,
)
from reconciler.oci.models import Descriptor, Manifest
from reconciler.oci.reference import Reference
from reconciler.registry.client import ManifestHead

SNIFF = 512


@dataclass
class ArchivedImage:
    name: str | None  # the RepoTag it was selected by (or its only one), normalised
    raw: bytes
    media_type: str
    digest: Digest
    members: dict[Digest, str] = field(default_factory=dict)  # blobs outside blobs/<alg>/


class DockerArchive(LocalStore):
    transport = "docker-archive"

    def __init__(self, host: str, path: Path) -> None:
        self.tar = TarFiles(path)
        super().__init__(host, path, self.tar)
        self._images: dict[str, ArchivedImage] = {}
        self._stamp: object = None

    def _fresh(self) -> None:
        index = self.tar.index
        if index is not self._stamp:  # the archive was indexed again: it changed
            self._images.clear()
            self._stamp = index

    def _entries(self) -> list[dict[str, Any]]:
        data = (
            self.tar.index.read_json("manifest.json") if "manifest.json" in self.tar.index else None
        )
        if data is None:
            raise ArchiveError(f"{self.path}: no manifest.json (not a docker save archive)")
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            raise ArchiveError(f"{self.path}: manifest.json is not a list of images")
        for i, entry in enumerate(data):
            layers, tags = entry.get("Layers"), entry.get("RepoTags") or []
            if not isinstance(entry.get("Config"), str):
                raise ArchiveError(f"{self.path}: manifest.json[{i}].Config is not a file name")
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise ArchiveError(f"{self.path}: manifest.json[{i}].Layers is not a list of names")
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ArchiveError(f"{self.path}: manifest.json[{i}].RepoTags is not a list")
        return data

    def _select(self, identifier: str) -> tuple[dict[str, Any], str | None]:
        entries = self._entries()
        if not identifier:
            if len(entries) != 1:
                tags = [t for e in entries for t in e.get("RepoTags") or []]
                raise ReferenceError_(
                    f"{self.host} holds {len(entries)} images; name one with :NAME:TAG "
                    f"({', '.join(tags) or 'none is tagged'})"
                )
            tags = entries[0].get("RepoTags") or []
            return entries[0], _normal(tags[0]) if len(tags) == 1 else None
        want = _normal(identifier)
        for entry in entries:
            for tag in entry.get("RepoTags") or []:
                if _normal(tag) == want:
                    return entry, want
        raise LookupError(identifier)

    def image(self, identifier: str) -> ArchivedImage | None:
        """The image a selector names (read once per version of the archive)."""
        self._fresh()
        cached = self._images.get(identifier)
        if cached is not None:
            return cached
        try:
            entry, name = self._select(identifier)
        except LookupError:
            return None
        config_name = entry["Config"]
        config_raw = self.tar.read(config_name, CONFIG_SIZE_LIMIT)
        config_digest = Digest.of(config_raw)
        image = self._from_layout(config_digest, name) or self._synthesized(
            entry, config_raw, config_digest, name
        )
        self._images[identifier] = image
        return image

    def _from_layout(self, config: Digest, name: str | None) -> ArchivedImage | None:
        """The saved manifest of this config, when the archive carries an OCI layout."""
        if "index.json" not in self.tar.index:
            return None
        top = self.tar.index.read_json("index.json")
        candidates = [m for m in (top.get("manifests") or []) if isinstance(m, dict)]
        seen: set[str] = set()
        while candidates:
            entry = candidates.pop(0)
            digest = digest_or_none(entry.get("digest"))
            if digest is None or str(digest) in seen or blob_name(digest) not in self.tar.index:
                continue
            seen.add(str(digest))
            raw = self.tar.read(blob_name(digest), MANIFEST_SIZE_LIMIT)
            if Digest.of(raw, digest.algorithm) != digest:
                raise ArchiveError(f"{self.path}: {blob_name(digest)} does not match its digest")
            try:
                document = parse_document(raw, entry.get("mediaType"), digest)
            except DocumentError:
                continue
            if isinstance(document, IndexDocument):
                candidates += [
                    m.model_dump(by_alias=True, mode="json") for m in document.index.manifests
                ]
            elif (
                isinstance(document, ManifestDocument) and document.manifest.config.digest == config
            ):
                return ArchivedImage(name, raw, document.media_type, digest)
        return None

    def _synthesized(
        self, entry: dict[str, Any], config_raw: bytes, config_digest: Digest, name: str | None
    ) -> ArchivedImage:
        try:
            config = json.loads(config_raw)
            diff_ids = [Digest.parse(d) for d in config["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(
                f"{self.path}: {entry['Config']}: no usable rootfs.diff_ids ({exc})"
            ) from None
        layers: list[str] = entry["Layers"]
        if len(layers) != len(diff_ids):
            raise ArchiveError(
                f"{self.path}: manifest.json lists {len(layers)} layers, "
                f"the config {len(diff_ids)} diff_ids"
            )
        members = {config_digest: entry["Config"]}
        descriptors = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            member = self.tar.index.member(layer)
            head = next(self.tar.index.chunks(layer, SNIFF), b"")
            compression = sniff_compression(head)
            if compression is mt.Compression.NONE:
                digest, media_type = diff_id, mt.DOCKER_LAYER
            elif compression is mt.Compression.GZIP:
                digest, media_type = self._hash(layer), mt.DOCKER_LAYER_GZIP
            else:
                raise ArchiveError(f"{self.path}: layer {layer!r} is not a tar or tar+gzip")
            members[digest] = layer
            descriptors.append(Descriptor(media_type=media_type, digest=digest, size=member.size))
        manifest = Manifest(
            schema_version=2,
            media_type=mt.DOCKER_MANIFEST,
            config=Descriptor(
                media_type=mt.DOCKER_CONFIG, digest=config_digest, size=len(config_raw)
            ),
            layers=tuple(descriptors),
        )
        document = make_manifest_document(manifest)
        return ArchivedImage(name, document.raw, document.media_type, document.digest, members)

    def _hash(self, name: str) -> Digest:
        hasher = Hasher("sha256")
        for chunk in self.tar.index.chunks(name):
            hasher.update(chunk)
        return hasher.digest()

    def _known(self) -> list[ArchivedImage]:
        self._fresh()
        return list(self._images.values())

    def blob_member(self, digest: Digest) -> str | None:
        for image in self._known():
            if digest == image.digest:
                return None  # a written manifest: served by get_manifest, not as a blob
            if digest in image.members:
                return image.members[digest]
        name = blob_name(digest)
        return name if name in self.tar.index else None

    async def head_manifest(self, repository: str, identifier: str) -> ManifestHead | None:
        digest = digest_or_none(identifier)
        if digest is not None:
            for known in self._known():
                if known.digest == digest:
                    return ManifestHead(digest, known.media_type, len(known.raw))
            return None
        image: ArchivedImage | None = await asyncio.to_thread(self.image, identifier)
        if image is None:
            return None
        return ManifestHead(image.digest, image.media_type, len(image.raw))

    async def get_manifest(
        self, repository: str, identifier: str
    ) -> ManifestDocument | IndexDocument:
        head = await self.head_manifest(repository, identifier)
        image = next((i for i in self._known() if head and i.digest == head.digest), None)
        if image is None:
            raise NotFoundError(f"{self.host}: no image {identifier or '(default)'}")
        return parse_document(
            image.raw, image.media_type, image.digest, what=f"{self.host}@{image.digest}"
        )

    async def list_tags(self, repository: str, limit: int = 10_000) -> list[str]:
        entries = await asyncio.to_thread(self._entries)
        return [t for e in entries for t in e.get("RepoTags") or []][:limit]

    def base_name(self, identifier: str) -> str | None:
        image = self.image(identifier)
        return image.name if image is not None else None


def _normal(name: str) -> str:
    try:
        ref = Reference.parse(name)
    except ReferenceError_:
        return name
    return str(ref if ref.tag else Reference(ref.registry, ref.repository, "latest"))
