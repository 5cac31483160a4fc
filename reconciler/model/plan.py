"""The plan: what to push where, decided from desired and observed state. Pure, immutable.

Per destination repository, in push order (DESIGN.md section 7): blobs (mount when another
repository of the same registry holds the blob, copy when another registry does, upload when
reconciler generated it), then per-platform manifests, then the index, then tags.

A holder is the blob's own source when that is another repository of the destination's
registry, or else one the observer named (the blob-location memory, or another destination of
the run): such blobs were not asked about by HEAD, since the mount's answer says as much. The
root manifest goes up with its first tag's PUT alone: a registry takes a manifest by tag only
over blobs (and children) it holds, so the tag is as safe as a PUT by digest first, and one
request cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.model.desired import DesiredBlob, DesiredImage, image_parts
from reconciler.model.observed import ObservedImage, Presence
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
    holder: Location | None = None  # a mount's source, when not the blob's own
    # Not asked about here: the repository of the registry that asked first gets it first,
    # and this one mounts it from there (BlobHolder.pending).
    via: Location | None = None

    @property
    def source(self) -> Location | None:
        """Where the blob's bytes come from (a copy, or a refused mount's fallback)."""
        return self.blob.source

    @property
    def mount_from(self) -> Location | None:
        """The repository a mount takes the blob from; None for a copy or an upload."""
        if self.method is not BlobMethod.MOUNT:
            return None
        return self.holder or self.blob.source


@dataclass(frozen=True)
class ManifestAction:
    destination: Location
    document: ManifestDocument | IndexDocument
    platform: PlatformKey | None
    via_tag: Address | None = None  # the root: pushed by this tag's PUT, not by digest first

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


class ArtifactKind(StrEnum):
    """What an artifact pushed beside an image is (supply chain, issue 12)."""

    SIGNATURE = "signature"  # our cosign signature, appended to the target's .sig manifest
    ATTESTATION = "attestation"  # our signed SLSA provenance, in the target's .att manifest
    CARRIED = "carried"  # the base's .sig/.att/.sbom tag, copied along with a mirror
    REFERRERS = "referrers"  # artifacts whose subject is the image, with their fallback tag


@dataclass(frozen=True)
class ArtifactPlan:
    """An artifact's own plan (blobs, manifest, tag), run after the image's tags: a signature,
    a carried tag or a referrer never names an image that is not there yet."""

    kind: ArtifactKind
    label: str  # what it is, for people: "signature for host/repo:tag (key 1a2b3c4d)"
    plan: SpecPlan
    # A fact (kind, key) the state directory records once the plan is carried out (what was
    # signed), so that the next run knows it from one HEAD.
    fact: tuple[str, str] | None = None


@dataclass(frozen=True)
class SpecPlan:
    name: str
    root: Digest
    blobs: tuple[BlobAction, ...]
    manifests: tuple[ManifestAction, ...]  # children first, the index last
    tags: tuple[TagAction, ...]
    in_sync_tags: tuple[Address, ...]
    skipped_blobs: int  # blobs the destinations already hold
    artifacts: tuple[ArtifactPlan, ...] = ()  # signatures, carried tags, referrers: after tags

    @property
    def image_in_sync(self) -> bool:
        """The image itself (not its artifacts) is where the targets say."""
        return not (self.blobs or self.manifests or self.tags)

    @property
    def in_sync(self) -> bool:
        return self.image_in_sync and all(a.plan.in_sync for a in self.artifacts)

    @property
    def bytes_to_push(self) -> int:
        own = sum(a.blob.size for a in self.blobs if a.method is not BlobMethod.MOUNT)
        return own + sum(a.plan.bytes_to_push for a in self.artifacts)


def _method(blob: DesiredBlob, destination: Location) -> BlobMethod:
    if blob.source is None:
        return BlobMethod.UPLOAD
    if destination.is_registry and blob.source.store == destination.store:
        return BlobMethod.MOUNT  # a registry's cross-repository mount (local stores have none)
    return BlobMethod.COPY


def _blob_action(blob: DesiredBlob, presence: Presence) -> BlobAction:
    destination = presence.destination
    holder = presence.holder_of(blob.digest)
    if holder is not None and holder.location != destination and not holder.pending:
        return BlobAction(BlobMethod.MOUNT, destination, blob, holder.location)
    via = holder.location if holder is not None and holder.pending else None
    return BlobAction(_method(blob, destination), destination, blob, via=via)


def _root_tags(tags: tuple[TagAction, ...]) -> dict[Location, Address]:
    """Per destination repository, the first tag whose PUT carries the root manifest."""
    first: dict[Location, Address] = {}
    for tag in tags:
        if tag.target.tag is not None and tag.target.digest is None:
            first.setdefault(tag.target.location, tag.target)
    return first


def build_plan(desired: DesiredImage, observed: ObservedImage) -> SpecPlan:
    blobs: list[BlobAction] = []
    manifests: list[ManifestAction] = []
    skipped = 0
    tags = tuple(
        TagAction(tag.target, tag.digest, desired.root)
        for tag in observed.tags
        if tag.digest != desired.root.digest
    )
    root_tags = _root_tags(tags)
    for presence in observed.present:
        destination, present = presence.destination, presence.digests
        parts = image_parts(desired, present)
        for blob in parts.blobs:
            if blob.digest in present:
                skipped += 1
            else:
                blobs.append(_blob_action(blob, presence))
        documents: list[tuple[ManifestDocument | IndexDocument, PlatformKey | None]] = [
            (m.document, m.platform) for m in parts.manifests
        ]
        if parts.index is not None:
            documents.append((parts.index, None))
        for document, platform in documents:
            via = root_tags.get(destination) if document.digest == desired.root.digest else None
            manifests.append(ManifestAction(destination, document, platform, via))
    in_sync = tuple(tag.target for tag in observed.tags if tag.digest == desired.root.digest)
    return SpecPlan(
        desired.name, desired.root.digest, tuple(blobs), tuple(manifests), tags, in_sync, skipped
    )
