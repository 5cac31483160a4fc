"""What the stores hold for one desired image, as reconciler.observe found it."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.oci.digest import Digest
from reconciler.oci.location import Address, Location


@dataclass(frozen=True)
class ObservedTag:
    """The digest a target tag names now; None when the tag does not exist."""

    target: Address
    digest: Digest | None


@dataclass(frozen=True)
class BlobHolder:
    """Another repository of the destination's registry that holds (or was last seen holding)
    a blob, so that the registry can mount it from there: the blob was not asked about here.
    `pending`: that repository asked first and holds none yet; the run sends it there first."""

    digest: Digest
    location: Location
    pending: bool = False


@dataclass(frozen=True)
class Presence:
    """Of the desired manifests and blobs, those a destination already holds; for blobs not
    asked about, where the registry can mount them from."""

    destination: Location
    digests: frozenset[Digest]
    holders: tuple[BlobHolder, ...] = ()

    def holder_of(self, digest: Digest) -> BlobHolder | None:
        return next((h for h in self.holders if h.digest == digest), None)


@dataclass(frozen=True)
class ObservedImage:
    tags: tuple[ObservedTag, ...]
    # Only the destinations that need work: a tag that names the desired root asks no more.
    present: tuple[Presence, ...]
