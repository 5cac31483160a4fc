"""Observe what the target stores hold, with as few HEAD requests as the answer allows.

Per target tag: one HEAD. A tag that already names the desired digest is in sync and nothing
else is asked. Otherwise, top-down per destination repository: the root manifest or index by
digest; if absent, each child manifest; for an absent manifest, each of its blobs. A registry
accepts a manifest only once its blobs (and an index only once its children) are present
(distribution spec, "Pushing Manifests"), so a present manifest vouches for what is under it.
Each (registry, repository, digest) is asked once per run, across specs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from reconciler.errors import VerificationError
from reconciler.memo import Memo
from reconciler.model.desired import DesiredImage, DesiredManifest
from reconciler.model.observed import ObservedImage, ObservedTag, Presence
from reconciler.oci.digest import Digest
from reconciler.oci.location import Address, Location
from reconciler.store.open import Stores

T = TypeVar("T")


class Observer:
    """HEAD requests for one run, memoized so that specs sharing content share the answers."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._memo = Memo()

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
        stale = sorted({t.target.location for t in tags if t.digest != desired.root.digest})
        present = await asyncio.gather(*(self._present(desired, dest) for dest in stale))
        return ObservedImage(
            tags, tuple(Presence(d, p) for d, p in zip(stale, present, strict=True))
        )

    async def _present(self, desired: DesiredImage, destination: Location) -> frozenset[Digest]:
        if await self.has_manifest(destination, desired.root.digest):
            return frozenset(_everything(desired))
        # A single-manifest root was just checked; an index's children are checked one by one.
        checked = desired.index is None
        found = await asyncio.gather(
            *(self._manifest_present(destination, m, checked) for m in desired.manifests)
        )
        return frozenset().union(*found)

    async def _manifest_present(
        self, destination: Location, manifest: DesiredManifest, root_checked: bool
    ) -> frozenset[Digest]:
        digest = manifest.document.digest
        if not root_checked and await self.has_manifest(destination, digest):
            return frozenset({digest, *(b.digest for b in manifest.blobs)})
        blobs = [b for b in manifest.blobs if not b.foreign]
        sizes = await asyncio.gather(*(self.blob_size(destination, b.digest) for b in blobs))
        for blob, size in zip(blobs, sizes, strict=True):
            # A size is a fact to check, even when nothing is to be pushed: a manifest over a
            # blob of another size would be refused by loaders, or lie about what it holds.
            if size is not None and size != blob.size:
                raise VerificationError(
                    f"{destination} holds {blob.digest} as {size} bytes; the manifest says "
                    f"{blob.size}"
                )
        return frozenset(b.digest for b, size in zip(blobs, sizes, strict=True) if size is not None)


def _everything(desired: DesiredImage) -> set[Digest]:
    digests = {desired.root.digest}
    for manifest in desired.manifests:
        digests.add(manifest.document.digest)
        digests.update(b.digest for b in manifest.blobs)
    return digests
