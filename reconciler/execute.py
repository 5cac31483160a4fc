"""Carry out a plan against the registries, in the order that keeps every tag safe.

Blobs first (concurrently, bounded per registry), then per-platform manifests, then the index,
then tags. Any failure stops the spec before its next stage, so whatever moment the process
dies, no tag points at a manifest whose blobs or children are missing. A blob wanted by several
specs in one run is pushed once per repository, and copied across registries (or uploaded) once
per destination registry (then mounted). Copies stream source to destination, verifying digest and
size on the way; a mismatch ends the upload one chunk short, so it is never committed. A root
manifest planned to go up with its tag is PUT by that tag alone, in the tag stage.

Every blob pushed or mounted is remembered (reconciler.blobmemory); a mount from a holder that
no longer has the blob (the registry opens an upload instead, 202) sends the bytes in that
upload, and the holder is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from typing import Protocol

from reconciler.blobmemory import BlobMemory
from reconciler.errors import PushError, ReconcilerError
from reconciler.memo import Shared
from reconciler.model.plan import BlobAction, BlobMethod, SpecPlan
from reconciler.model.report import ExecResult
from reconciler.oci.digest import Digest
from reconciler.oci.location import Location
from reconciler.store.base import BlobMounter, UploadSession
from reconciler.store.generated import generated_bytes
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.execute")

# A push several specs may wait for; cancelled when none does any more (a spec past its
# deadline), so that the destination's slot it holds is freed.
Push = Shared[BlobMethod]


class Progress(Protocol):
    """Receives transfer progress (a terminal progress bar, metrics)."""

    def start(self, key: str, label: str, total: int) -> None: ...

    def advance(self, key: str, amount: int) -> None: ...

    def finish(self, key: str) -> None: ...


class Executor:
    def __init__(
        self,
        stores: Stores,
        progress: Progress | None = None,
        memory: BlobMemory | None = None,
    ) -> None:
        self.stores = stores
        self.progress = progress
        self.memory = memory
        # Per (destination, digest): the push under way or done, and the source it reads.
        self._blobs: dict[tuple[Location, Digest], tuple[Location | None, Push]] = {}
        # Per (destination store, digest): the first copy or upload there, mounted from after.
        self._copies: dict[tuple[Location, Digest], tuple[Location, Push]] = {}
        self._sent_for: set[tuple[Location, Digest]] = set()  # sent on a later spec's behalf

    async def execute(self, plan: SpecPlan) -> ExecResult:
        """The image's plan, then each of its artifacts' (signatures, carried tags,
        referrers): an artifact never names an image its target does not hold yet."""
        result = await self._push(plan)
        for artifact in plan.artifacts:
            done = await self._push(artifact.plan)
            # Its blobs add up with the image's; its manifest and tag count as one artifact,
            # not as the image's manifests and tags (a run that only signs moves no image tag).
            written = 1 if done.manifests or done.tags else 0
            done = replace(done, manifests=0, tags=0, artifacts=written)
            result = ExecResult(
                *(getattr(result, f.name) + getattr(done, f.name) for f in fields(ExecResult))
            )
        return result

    async def _push(self, plan: SpecPlan) -> ExecResult:
        outcomes = await asyncio.gather(
            *(self._blob_once(action) for action in plan.blobs), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        counts = dict.fromkeys(BlobMethod, 0)
        shared = pushed = 0
        for outcome, action in zip(outcomes, plan.blobs, strict=True):
            if isinstance(outcome, BaseException):
                continue
            if outcome is None:  # another spec of this run pushed it (and counts it)
                shared += 1
                continue
            counts[outcome] += 1
            pushed += action.blob.size if outcome is not BlobMethod.MOUNT else 0
        if failures:
            _raise_first(failures, f"{len(failures)} of {len(plan.blobs)} blobs failed")
        by_digest = [m for m in plan.manifests if m.via_tag is None]  # the rest go with a tag
        children = [m for m in by_digest if not m.is_index]
        indexes = [m for m in by_digest if m.is_index]
        for stage in (children, indexes):
            outcomes = await asyncio.gather(
                *(
                    self.stores.writer(m.destination).put_manifest(
                        str(m.document.digest),
                        m.document.raw,
                        m.document.media_type,
                        m.document.digest,
                    )
                    for m in stage
                ),
                return_exceptions=True,
            )
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                _raise_first(failures, f"{len(failures)} manifests failed")
        for tag in plan.tags:
            await self.stores.writer(tag.target.location).put_manifest(
                tag.target.identifier,
                tag.document.raw,
                tag.document.media_type,
                tag.document.digest,
            )
            log.debug("tagged %s -> %s (was %s)", tag.target, tag.new, tag.old or "unset")
        return ExecResult(
            mounted=counts[BlobMethod.MOUNT],
            copied=counts[BlobMethod.COPY],
            uploaded=counts[BlobMethod.UPLOAD],
            skipped=plan.skipped_blobs + shared,
            bytes_pushed=pushed,
            manifests=len(plan.manifests),
            tags=len(plan.tags),
        )

    async def _blob_once(self, action: BlobAction) -> BlobMethod | None:
        """Push a blob unless another spec of this run already is; None when shared.

        A blob copied from another registry (or generated here) crosses the network once per
        destination registry: later copies into other repositories of that registry wait for
        the first and mount from it. A push that failed is shared only with specs reading the
        same source: one damaged copy of a blob never fails a spec that reads it elsewhere.
        """
        dest = action.destination
        key = (dest, action.blob.digest)
        known = self._blobs.get(key)
        if known is not None and not known[1].abandoned:
            source, push = known
            try:
                method = await push.wait()
            except ReconcilerError:
                if source == action.source:
                    raise
            else:
                if key in self._sent_for:  # sent first here by another spec: ours to count
                    self._sent_for.discard(key)
                    return method
                return None
        store_key = (dest.store, action.blob.digest)
        first_copy = self._copies.get(store_key)
        if first_copy is not None and first_copy[1].abandoned:
            first_copy = None
        sends = action.method in (BlobMethod.COPY, BlobMethod.UPLOAD)
        if sends and first_copy is None and action.via is not None:
            first_copy = self._send_first(action, action.via)
        if sends and first_copy is not None:
            push = Push(self._mount_after(action, *first_copy))
        else:
            push = Push(self._push_blob(action))
            if sends:
                self._copies[store_key] = (dest, push)
        self._blobs[key] = (action.source, push)
        return await push.wait()

    def _send_first(self, action: BlobAction, into: Location) -> tuple[Location, Push]:
        """Start sending a blob not asked about here into the repository that asked first and
        found none (its own spec has not started it yet), to mount it from there: its bytes
        go where they are known to be missing, never into a repository that may hold them."""
        digest = action.blob.digest
        known = self._blobs.get((into, digest))
        if known is not None and not known[1].abandoned:
            return into, known[1]
        push = Push(self._push_blob(BlobAction(action.method, into, action.blob)))
        self._blobs[(into, digest)] = (action.source, push)
        self._copies[(into.store, digest)] = (into, push)
        self._sent_for.add((into, digest))
        return into, push

    async def _mount_after(self, action: BlobAction, holder: Location, first: Push) -> BlobMethod:
        try:
            await first.wait()
        except ReconcilerError:
            return await self._push_blob(action)  # the first copy failed: try on our own
        if not isinstance(self.stores.writer(action.destination), BlobMounter):
            return await self._push_blob(action)
        mount = BlobAction(BlobMethod.MOUNT, action.destination, action.blob, holder)
        return await self._push_blob(mount)

    async def _push_blob(self, action: BlobAction) -> BlobMethod:
        """Push one blob; a retryable failure starts over (a fresh upload session)."""
        return await self.stores.retry.run(
            lambda: self._push_blob_once(action),
            f"{action.method} {action.blob.digest.short} to {action.destination}",
        )

    async def _push_blob_once(self, action: BlobAction) -> BlobMethod:
        dest = action.destination
        blob = action.blob
        writer = self.stores.writer(dest)
        async with self.stores.slot(dest):
            session: UploadSession | None = None
            holder = action.mount_from
            if holder is not None and isinstance(writer, BlobMounter):
                mounted, session = await self._mount(writer, action, holder)
                if mounted:
                    return BlobMethod.MOUNT
            source = blob.source
            if source is None:
                chunks = generated_bytes(blob)
                await writer.upload_blob(blob.digest, blob.size, chunks, session=session)
                self._remember(dest, blob.digest)
                return BlobMethod.UPLOAD
            reader = self.stores.reader(source)
            key = f"{dest}@{blob.digest}"
            if self.progress is not None:
                self.progress.start(key, f"{blob.digest.short} {blob.role}", blob.size)
            try:
                async with reader.open_blob(blob.digest, blob.size) as stream:
                    await writer.upload_blob(
                        blob.digest, blob.size, self._counted(key, stream), session=session
                    )
            finally:
                if self.progress is not None:
                    self.progress.finish(key)
            self._remember(dest, blob.digest)
            return BlobMethod.COPY

    async def _mount(
        self, writer: BlobMounter, action: BlobAction, holder: Location
    ) -> tuple[bool, UploadSession | None]:
        """(True, None) when mounted; else the upload the registry opened instead, if any.

        A holder other than the blob's own source is a hint (the blob-location memory, or
        another repository of this run): when the registry cannot mount from it, the bytes
        are sent and the hint is forgotten; only a transient failure is worth another try.
        """
        digest, dest = action.blob.digest, action.destination
        try:
            session = await writer.mount_blob(digest, holder)
        except ReconcilerError as exc:
            if exc.retryable or holder == action.source:
                raise
            log.info("mount of %s from %s failed (%s); sending it", digest.short, holder, exc)
            self._forget(holder, digest)
            return False, None
        if session is None:
            log.debug("mounted %s from %s into %s", digest.short, holder, dest)
            self._remember(dest, digest)
            return True, None
        log.info("mount of %s from %s refused; sending it", digest.short, holder)
        self._forget(holder, digest)
        return False, session

    def _remember(self, location: Location, digest: Digest) -> None:
        if self.memory is not None and location.is_registry:
            self.memory.remember(location.authority, location.repository, digest)

    def _forget(self, location: Location, digest: Digest) -> None:
        if self.memory is not None and location.is_registry:
            self.memory.forget(location.authority, location.repository, digest)

    async def _counted(self, key: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in stream:
            if self.progress is not None:
                self.progress.advance(key, len(chunk))
            yield chunk


def _raise_first(failures: list[BaseException], summary: str) -> None:
    first = failures[0]
    if not isinstance(first, ReconcilerError):
        raise first  # a bug or a cancellation: not ours to reword
    if len(failures) == 1:
        raise first
    raise PushError(f"{summary}; first: {first}") from first
