"""Observe what the target stores hold, with as few HEAD requests as the answer allows.

Per target tag: one HEAD. A tag that already names the desired digest is in sync and nothing
else is asked. Otherwise, top-down per destination repository: the root manifest or index by
digest; if absent, each child manifest; for an absent manifest, each of its blobs. A registry
accepts a manifest only once its blobs (and an index only once its children) are present
(distribution spec, "Pushing Manifests"), so a present manifest vouches for what is under it.
Each (registry, repository, digest) is asked once per run, across specs.

A blob is not asked about where a mount's answer says the same (a registry answers 201 to a
mount of a blob it can link, whether or not the destination held it): when the blob's source is
another repository of the destination's registry, when the blob-location memory names a holder
there, or when another destination of this run on that registry asked first (its answer is
shared: a holder to mount from, or a blob this run pushes there first and mounts from then).
What is found is remembered (reconciler.blobmemory) for later runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from reconciler.blobmemory import BlobMemory
from reconciler.errors import VerificationError
from reconciler.memo import Memo
from reconciler.model.desired import DesiredBlob, DesiredImage, DesiredManifest
from reconciler.model.observed import BlobHolder, ObservedImage, ObservedTag, Presence
from reconciler.oci.digest import Digest
from reconciler.oci.location import Address, Location, registry_location
from reconciler.store.open import Stores

T = TypeVar("T")


class Observer:
    """HEAD requests for one run, memoized so that specs sharing content share the answers."""

    def __init__(self, stores: Stores, memory: BlobMemory | None = None) -> None:
        self.stores = stores
        self.memory = memory
        self._memo = Memo()
        # Per (registry, blob): the first destination of the run that asked about it.
        self._first_asker: dict[tuple[Location, Digest], Location] = {}
        # Per (registry host, blob): its holders as the memory named them when the run first
        # asked, which decide whether a destination is asked (HEAD) or mounted into. The
        # memory learns as the run goes (each mount puts a repository first and pushes the
        # oldest out of its few), so asking it again would make that depend on which spec
        # happened to run first.
        self._holders: dict[tuple[str, Digest], tuple[str, ...]] = {}

    async def _head(self, location: Location, ask: Callable[[], Awaitable[T]]) -> T:
        async with self.stores.slot(location):
            return await ask()

    async def tag_digest(self, target: Address) -> Digest | None:
        location = target.location

        async def head() -> Digest | None:
            found = await self.stores.reader(location).head_manifest(target.identifier)
            return None if found is None else found.digest

        key = ("tag", location, target.identifier)
        return await self._memo.get(key, lambda: self._head(location, head))

    async def has_manifest(self, destination: Location, digest: Digest) -> bool:
        async def head() -> bool:
            store = self.stores.reader(destination)
            return await store.head_manifest(str(digest)) is not None

        key = ("manifest", destination, digest)
        return await self._memo.get(key, lambda: self._head(destination, head))

    async def blob_size(self, destination: Location, digest: Digest) -> int | None:
        """The size of a blob the destination holds; None when it holds none."""

        async def head() -> int | None:
            return await self.stores.reader(destination).head_blob(digest)

        key = ("blob", destination, digest)
        return await self._memo.get(key, lambda: self._head(destination, head))

    async def observe(self, desired: DesiredImage) -> ObservedImage:
        digests = await asyncio.gather(*(self.tag_digest(t) for t in desired.targets))
        tags = tuple(ObservedTag(t, d) for t, d in zip(desired.targets, digests, strict=True))
        for tag in tags:
            if tag.digest == desired.root.digest:
                self._remember(tag.target.location, desired.manifests)
        stale = sorted({t.target.location for t in tags if t.digest != desired.root.digest})
        present = await asyncio.gather(*(self._present(desired, dest) for dest in stale))
        return ObservedImage(tags, tuple(present))

    async def _present(self, desired: DesiredImage, destination: Location) -> Presence:
        if await self.has_manifest(destination, desired.root.digest):
            self._remember(destination, desired.manifests)
            return Presence(destination, frozenset(_everything(desired)))
        # A single-manifest root was just checked; an index's children are checked one by one.
        checked = desired.index is None
        found = await asyncio.gather(
            *(self._manifest_present(destination, m, checked) for m in desired.manifests)
        )
        digests = frozenset().union(*(f.digests for f in found))
        return Presence(destination, digests, tuple(h for f in found for h in f.holders))

    async def _manifest_present(
        self, destination: Location, manifest: DesiredManifest, root_checked: bool
    ) -> Presence:
        digest = manifest.document.digest
        if not root_checked and await self.has_manifest(destination, digest):
            self._remember(destination, (manifest,))
            return Presence(destination, frozenset({digest, *(b.digest for b in manifest.blobs)}))
        blobs = [b for b in manifest.blobs if not b.foreign]
        facts = await asyncio.gather(*(self._blob_fact(destination, b) for b in blobs))
        present = frozenset(b.digest for b, fact in zip(blobs, facts, strict=True) if fact is True)
        holders = tuple(fact for fact in facts if isinstance(fact, BlobHolder))
        return Presence(destination, present, holders)

    async def _blob_fact(self, destination: Location, blob: DesiredBlob) -> bool | BlobHolder:
        """Whether the destination holds a blob; or, not asked, where to mount it from."""
        if not destination.is_registry:
            return await self._head_blob(destination, blob)  # a local store has no mount
        source = blob.source
        if source is not None and source.store == destination.store and source != destination:
            return BlobHolder(blob.digest, source)
        if destination.repository in self._known_holders(destination.authority, blob.digest):
            # Remembered here: asked, not mounted. A HEAD writes nothing, while a mount into a
            # repository that holds the blob links it again, and distribution rewrites a link
            # in place: a mount from this repository at that moment would be refused.
            return await self._head_blob(destination, blob)
        # Mounted from the newest holder the memory names now (one a refused mount made it
        # forget is not offered again).
        known = self.memory.holders(destination.authority, blob.digest) if self.memory else ()
        if known:
            return BlobHolder(blob.digest, registry_location(destination.authority, known[0]))
        first = self._first_asker.setdefault((destination.store, blob.digest), destination)
        if first != destination:
            # Shared with the first asker: it holds the blob, or the run sends it there first
            # (pending) and mounts it here from there.
            found = await self.blob_size(first, blob.digest) == blob.size
            return BlobHolder(blob.digest, first, pending=not found)
        return await self._head_blob(destination, blob)

    def _known_holders(self, registry: str, digest: Digest) -> tuple[str, ...]:
        if self.memory is None:
            return ()
        key = (registry, digest)
        if key not in self._holders:
            self._holders[key] = self.memory.holders(registry, digest)
        return self._holders[key]

    async def _head_blob(self, destination: Location, blob: DesiredBlob) -> bool:
        size = await self.blob_size(destination, blob.digest)
        # A size is a fact to check, even when nothing is to be pushed: a manifest over a
        # blob of another size would be refused by loaders, or lie about what it holds.
        if size is not None and size != blob.size:
            raise VerificationError(
                f"{destination} holds {blob.digest} as {size} bytes; the manifest says {blob.size}"
            )
        if self.memory is not None and destination.is_registry:
            host, repository = destination.authority, destination.repository
            if size is None:
                self.memory.forget(host, repository, blob.digest)
            else:
                self.memory.remember(host, repository, blob.digest)
        return size is not None

    def _remember(self, destination: Location, manifests: Iterable[DesiredManifest]) -> None:
        """A destination holds these manifests, and so their blobs (a registry took them)."""
        if self.memory is None or not destination.is_registry:
            return
        for manifest in manifests:
            for blob in manifest.blobs:
                if not blob.foreign:
                    self.memory.remember(destination.authority, destination.repository, blob.digest)


def _everything(desired: DesiredImage) -> set[Digest]:
    digests = {desired.root.digest}
    for manifest in desired.manifests:
        digests.add(manifest.document.digest)
        digests.update(b.digest for b in manifest.blobs)
    return digests
