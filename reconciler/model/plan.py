"""The plan: what to push where, decided from desired and observed state. Pure, immutable.

Per destination repository, in push order (DESIGN.md section 7): blobs (mount when another
repository of the same registry holds the blob, copy when another registry does, upload when
reconciler generated it), then per-platform manifests, then the index, then tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.model.desired import DesiredBlob, DesiredImage, image_parts
from reconciler.model.observed import ObservedImage
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument
from reconciler.oci.location import Address, Location
from reconciler.oci.platform import PlatformKey


class BlobMethod(StrEnum):
    MOUNT = "mount"
    COPY = "copy"
    UPLOAD = "upload"


@dataclass(frozen=True)
class BlobAction:
    method: BlobMethod
    destination: Location
    blob: DesiredBlob

    @property
    def source(self) -> Location | None:
        return self.blob.source


@dataclass(frozen=True)
class ManifestAction:
    destination: Location
    document: ManifestDocument | IndexDocument
    platform: PlatformKey | None

    @property
    def is_index(self) -> bool:
        return isinstance(self.document, IndexDocument)


@dataclass(frozen=True)
class TagAction:
    target: Address
    old: Digest | None
    document: ManifestDocument | IndexDocument

    @property
    def new(self) -> Digest:
        return self.document.digest


@dataclass(frozen=True)
class SpecPlan:
    name: str
    root: Digest
    blobs: tuple[BlobAction, ...]
    manifests: tuple[ManifestAction, ...]  # children first, the index last
    tags: tuple[TagAction, ...]
    in_sync_tags: tuple[Address, ...]
    skipped_blobs: int  # blobs the destinations already hold

    @property
    def in_sync(self) -> bool:
        return not (self.blobs or self.manifests or self.tags)

    @property
    def bytes_to_push(self) -> int:
        return sum(a.blob.size for a in self.blobs if a.method is not BlobMethod.MOUNT)


def _method(blob: DesiredBlob, destination: Location) -> BlobMethod:
    if blob.source is None:
        return BlobMethod.UPLOAD
    if destination.is_registry and blob.source.store == destination.store:
        return BlobMethod.MOUNT  # a registry's cross-repository mount (local stores have none)
    return BlobMethod.COPY


def build_plan(desired: DesiredImage, observed: ObservedImage) -> SpecPlan:
    blobs: list[BlobAction] = []
    manifests: list[ManifestAction] = []
    skipped = 0
    for presence in observed.present:
        destination, present = presence.destination, presence.digests
        parts = image_parts(desired, present)
        for blob in parts.blobs:
            if blob.digest in present:
                skipped += 1
            else:
                blobs.append(BlobAction(_method(blob, destination), destination, blob))
        manifests += (ManifestAction(destination, m.document, m.platform) for m in parts.manifests)
        if parts.index is not None:
            manifests.append(ManifestAction(destination, parts.index, None))
    tags = tuple(
        TagAction(tag.target, tag.digest, desired.root)
        for tag in observed.tags
        if tag.digest != desired.root.digest
    )
    in_sync = tuple(tag.target for tag in observed.tags if tag.digest == desired.root.digest)
    return SpecPlan(
        desired.name, desired.root.digest, tuple(blobs), tuple(manifests), tags, in_sync, skipped
    )
