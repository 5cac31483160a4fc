"""The plan: what to push where, decided from desired and observed state. Pure, immutable.

Per destination repository, in push order (DESIGN.md section 7): blobs (mount when another
repository of the same registry holds the blob, copy when another registry does, upload when
reconciler generated it), then per-platform manifests, then the index, then tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.desired import DesiredBlob, DesiredImage
from reconciler.observe import ObservedImage
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument
from reconciler.oci.platform import PlatformKey
from reconciler.oci.reference import Reference, Repository


class BlobMethod(StrEnum):
    MOUNT = "mount"
    COPY = "copy"
    UPLOAD = "upload"


@dataclass(frozen=True)
class BlobAction:
    method: BlobMethod
    destination: Repository
    blob: DesiredBlob

    @property
    def source(self) -> Repository | None:
        return self.blob.source


@dataclass(frozen=True)
class ManifestAction:
    destination: Repository
    document: ManifestDocument | IndexDocument
    platform: PlatformKey | None

    @property
    def is_index(self) -> bool:
        return isinstance(self.document, IndexDocument)


@dataclass(frozen=True)
class TagAction:
    target: Reference
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
    in_sync_tags: tuple[Reference, ...]
    skipped_blobs: int  # blobs the destinations already hold

    @property
    def in_sync(self) -> bool:
        return not (self.blobs or self.manifests or self.tags)

    @property
    def bytes_to_push(self) -> int:
        return sum(a.blob.size for a in self.blobs if a.method is not BlobMethod.MOUNT)


def _method(blob: DesiredBlob, destination: Repository) -> BlobMethod:
    if blob.source is None:
        return BlobMethod.UPLOAD
    if blob.source.registry == destination.registry:
        return BlobMethod.MOUNT
    return BlobMethod.COPY


def build_plan(desired: DesiredImage, observed: ObservedImage) -> SpecPlan:
    blobs: list[BlobAction] = []
    manifests: list[ManifestAction] = []
    skipped = 0
    for destination, present in observed.present:
        needed_manifests = [m for m in desired.manifests if m.document.digest not in present]
        seen: set[Digest] = set()
        for manifest in needed_manifests:
            for blob in manifest.blobs:
                if blob.digest in seen or blob.foreign:
                    continue
                seen.add(blob.digest)
                if blob.digest in present:
                    skipped += 1
                else:
                    blobs.append(BlobAction(_method(blob, destination), destination, blob))
            manifests.append(ManifestAction(destination, manifest.document, manifest.platform))
        if desired.index is not None and desired.index.digest not in present:
            manifests.append(ManifestAction(destination, desired.index, None))
    tags = tuple(
        TagAction(target, current, desired.root)
        for target, current in observed.tags
        if current != desired.root.digest
    )
    in_sync = tuple(t for t, current in observed.tags if current == desired.root.digest)
    return SpecPlan(
        desired.name, desired.root.digest, tuple(blobs), tuple(manifests), tags, in_sync, skipped
    )
