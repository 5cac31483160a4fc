"""`docker-archive:PATH[:NAME:TAG]`: an image read from a `docker save` archive.

manifest.json selects the image (by a RepoTag, or the only entry). Its config is read from the
archive and its layers stay where they are. Which manifest describes them:
- If the archive also holds an OCI layout (as `reconciler save` writes) with a manifest whose
  config is this one, that manifest is used byte for byte, with its compressed layers: the
  digests are those of the image that was saved. An index.json that is no OCI index (docker
  25 writes `"manifests": null` for an untagged image) offers no manifest: it is passed over.
- Otherwise a Docker v2 schema 2 manifest is written from manifest.json. A plain tar layer is
  described as `application/vnd.docker.image.rootfs.diff.tar` under its diff_id (the digest of
  an uncompressed layer is its diff_id, and it is verified when read); a gzip layer as
  `.tar.gzip`, hashed once. skopeo labels uncompressed layers `.tar.gzip`; we do not, since a
  loader that trusts the label would try to inflate a plain tar.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.archive.reader import JSON_LIMIT
from reconciler.errors import ArchiveError, DocumentError, NotFoundError, ReferenceError_
from reconciler.oci import mediatypes as mt
from reconciler.oci.diffid import sniff_compression
from reconciler.oci.digest import Digest, Hasher
from reconciler.oci.document import (
    CONFIG_SIZE_LIMIT,
    MANIFEST_SIZE_LIMIT,
    Document,
    IndexDocument,
    ManifestDocument,
    load_json,
    make_manifest_document,
    parse_config,
    parse_document,
)
from reconciler.oci.location import Location
from reconciler.oci.models import Descriptor, LayoutIndex, Manifest
from reconciler.oci.reference import Reference
from reconciler.store.base import ManifestHead
from reconciler.store.files import LocalReader, TarFiles, blob_name, digest_or_none, read_json

SNIFF = 512


@dataclass
class ArchivedImage:
    name: str | None  # the RepoTag it was selected by (or its only one), normalised
    raw: bytes
    media_type: str
    digest: Digest
    members: dict[Digest, str] = field(default_factory=dict)  # blobs outside blobs/<alg>/


class ArchiveEntry(BaseModel):
    """One image of manifest.json, as `docker save` writes it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    config: str = Field(alias="Config", strict=True)
    repo_tags: tuple[str, ...] | None = Field(default=None, alias="RepoTags")
    layers: tuple[str, ...] = Field(alias="Layers")

    @property
    def tags(self) -> tuple[str, ...]:
        return self.repo_tags or ()


class ArchiveManifest(BaseModel):
    entries: tuple[ArchiveEntry, ...]


class DockerArchive(LocalReader):
    def __init__(self, location: Location) -> None:
        self.tar = TarFiles(Path(location.authority))
        super().__init__(location, self.tar)
        self._images: dict[str, ArchivedImage] = {}
        self._stamp: object = None

    def _fresh(self) -> None:
        index = self.tar.index
        if index is not self._stamp:  # the archive was indexed again: it changed
            self._images.clear()
            self._stamp = index

    def _entries(self) -> tuple[ArchiveEntry, ...]:
        if "manifest.json" not in self.tar.index:
            raise ArchiveError(f"{self.path}: no manifest.json (not a docker save archive)")
        data = read_json(self.tar, "manifest.json")
        try:
            return ArchiveManifest.model_validate({"entries": data}).entries
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = error["loc"][1:]  # past "entries"
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            raise ArchiveError(f"{self.path}: manifest.json{where}: {error['msg']}") from None

    def _select(self, identifier: str) -> tuple[ArchiveEntry, str | None]:
        entries = self._entries()
        if not identifier:
            if len(entries) != 1:
                tags = [t for e in entries for t in e.tags]
                raise ReferenceError_(
                    f"{self.label} holds {len(entries)} images; name one with :NAME:TAG "
                    f"({', '.join(tags) or 'none is tagged'})"
                )
            tags = list(entries[0].tags)
            return entries[0], _normal(tags[0]) if len(tags) == 1 else None
        want = _normal(identifier)
        for entry in entries:
            for tag in entry.tags:
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
        config_name = entry.config
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
        raw = self.tar.read("index.json", JSON_LIMIT)  # a member that cannot be read still fails
        try:
            top = LayoutIndex.model_validate(load_json(raw, f"{self.path}: index.json", JSON_LIMIT))
        except (DocumentError, ValidationError):
            # docker 25's `docker save` of an untagged image writes `"manifests": null` beside a
            # good manifest.json. manifest.json is this store's authority and index.json only
            # offers the saved manifest bytes: one that is no OCI index offers none.
            return None
        candidates = list(top.manifests)
        seen: set[str] = set()
        while candidates:
            entry = candidates.pop(0)
            digest = entry.digest
            if str(digest) in seen or blob_name(digest) not in self.tar.index:
                continue
            seen.add(str(digest))
            raw = self.tar.read(blob_name(digest), MANIFEST_SIZE_LIMIT)
            if Digest.of(raw, digest.algorithm) != digest:
                raise ArchiveError(f"{self.path}: {blob_name(digest)} does not match its digest")
            try:
                document = parse_document(raw, entry.media_type, digest)
            except DocumentError:
                continue
            if isinstance(document, IndexDocument):
                candidates += document.index.manifests
            elif (
                isinstance(document, ManifestDocument) and document.manifest.config.digest == config
            ):
                return ArchivedImage(name, raw, document.media_type, digest)
        return None

    def _synthesized(
        self, entry: ArchiveEntry, config_raw: bytes, config_digest: Digest, name: str | None
    ) -> ArchivedImage:
        try:
            config = parse_config(config_raw, mt.DOCKER_CONFIG, config_digest)
        except DocumentError as exc:
            raise ArchiveError(f"{self.path}: {entry.config}: {exc}") from None
        diff_ids = config.config.rootfs.diff_ids
        layers = entry.layers
        if len(layers) != len(diff_ids):
            raise ArchiveError(
                f"{self.path}: manifest.json lists {len(layers)} layers, "
                f"the config {len(diff_ids)} diff_ids"
            )
        members = {config_digest: entry.config}
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
        """Every image of the archive, so that a digest finds its image on a fresh store too."""
        self._fresh()
        entries = self._entries()
        if len(self._images) < len(entries):
            for entry in entries:
                if entry.tags:
                    self.image(entry.tags[0])
                elif len(entries) == 1:
                    self.image("")
        return list(self._images.values())

    def blob_member(self, digest: Digest) -> str | None:
        for image in self._known():
            if digest == image.digest:
                return None  # a written manifest: served by get_manifest, not as a blob
            if digest in image.members:
                return image.members[digest]
        name = blob_name(digest)
        return name if name in self.tar.index else None

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        digest = digest_or_none(identifier)
        if digest is not None:
            for known in await asyncio.to_thread(self._known):
                if known.digest == digest:
                    return ManifestHead(digest, known.media_type, len(known.raw))
            return None
        image: ArchivedImage | None = await asyncio.to_thread(self.image, identifier)
        if image is None:
            return None
        return ManifestHead(image.digest, image.media_type, len(image.raw))

    async def get_manifest(self, identifier: str) -> Document:
        head = await self.head_manifest(identifier)
        image = next((i for i in self._known() if head and i.digest == head.digest), None)
        if image is None:
            raise NotFoundError(f"{self.label}: no image {identifier or '(default)'}")
        return parse_document(
            image.raw, image.media_type, image.digest, what=f"{self.label}@{image.digest}"
        )

    async def list_tags(self, limit: int = 10_000) -> list[str]:
        entries = await asyncio.to_thread(self._entries)
        return [t for e in entries for t in e.tags][:limit]

    def base_name(self, identifier: str) -> str | None:
        image = self.image(identifier)
        return image.name if image is not None else None


def _normal(name: str) -> str:
    try:
        ref = Reference.parse(name)
    except ReferenceError_:
        return name
    return str(ref if ref.tag else Reference(ref.registry, ref.repository, "latest"))
