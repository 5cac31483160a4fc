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
class Presence:
    """Of the desired manifests and blobs, those a destination already holds."""

    destination: Location
    digests: frozenset[Digest]


@dataclass(frozen=True)
class ObservedImage:
    tags: tuple[ObservedTag, ...]
    # Only the destinations that need work: a tag that names the desired root asks no more.
    present: tuple[Presence, ...]
