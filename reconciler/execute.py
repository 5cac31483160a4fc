"""Carry out a plan against the registries, in the order that keeps every tag safe.

Blobs first (concurrently, bounded per registry), then per-platform manifests, then the index,
then tags. Any failure stops the spec before its next stage, so whatever moment the process
dies, no tag points at a manifest whose blobs or children are missing. A blob wanted by several
specs in one run is pushed once per repository, and copied across registries once per
destination registry (then mounted). Copies stream source to destination, verifying digest and size
on the way; a mismatch ends the upload one chunk short, so it is never committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

from reconciler.errors import PushError, ReconcilerError
from reconciler.model.plan import BlobAction, BlobMethod, SpecPlan
from reconciler.model.report import ExecResult
from reconciler.oci.digest import Digest
from reconciler.oci.location import Location
from reconciler.store.base import BlobMounter, UploadSession
from reconciler.store.generated import generated_bytes
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.execute")

Future = asyncio.Future[BlobMethod]


class Progress(Protocol):
    """Receives transfer progress (a terminal progress bar, metrics)."""

    def start(self, key: str, label: str, total: int) -> None: ...

    def advance(self, key: str, amount: int) -> None: ...

    def finish(self, key: str) -> None: ...


class Executor:
    def __init__(self, stores: Stores, progress: Progress | None = None) -> None:
        self.stores = stores
        self.progress = progress
        # Per (destination, digest): the push under way or done, and the source it reads.
        self._blobs: dict[tuple[Location, Digest], tuple[Location | None, Future]] = {}
        self._copies: dict[tuple[Location, Digest], tuple[Location, Future]] = {}

    async def execute(self, plan: SpecPlan) -> ExecResult:
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
        children = [m for m in plan.manifests if not m.is_index]
        indexes = [m for m in plan.manifests if m.is_index]
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

        A blob copied from another registry crosses the network once per destination
        registry: later copies into other repositories of that registry wait for the first
        and mount from it. A push that failed is shared only with specs reading the same
        source: one damaged copy of a blob never fails a spec that reads it elsewhere.
        """
        dest = action.destination
        key = (dest, action.blob.digest)
        known = self._blobs.get(key)
        if known is not None:
            source, future = known
            try:
                await asyncio.shield(future)
                return None
            except ReconcilerError:
                if source == action.source:
                    raise
        store_key = (dest.store, action.blob.digest)
        first_copy = self._copies.get(store_key)
        if action.method is BlobMethod.COPY and first_copy is not None:
            future = asyncio.ensure_future(self._mount_after(action, *first_copy))
        else:
            future = asyncio.ensure_future(self._push_blob(action))
            if action.method is BlobMethod.COPY:
                self._copies[store_key] = (dest, future)
        self._blobs[key] = (action.source, future)
        return await asyncio.shield(future)

    async def _mount_after(self, action: BlobAction, holder: Location, first: Future) -> BlobMethod:
        try:
            await asyncio.shield(first)
        except ReconcilerError:
            return await self._push_blob(action)  # the first copy failed: try on our own
        if not isinstance(self.stores.writer(action.destination), BlobMounter):
            return await self._push_blob(action)
        mount = BlobAction(
            BlobMethod.MOUNT, action.destination, replace(action.blob, source=holder)
        )
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
            if action.method is BlobMethod.UPLOAD:
                await writer.upload_blob(blob.digest, blob.size, generated_bytes(blob))
                return BlobMethod.UPLOAD
            source = blob.source
            assert source is not None  # noqa: S101 - mount/copy have a source
            session: UploadSession | None = None
            if action.method is BlobMethod.MOUNT and isinstance(writer, BlobMounter):
                session = await writer.mount_blob(blob.digest, source)
                if session is None:
                    log.debug("mounted %s from %s into %s", blob.digest.short, source, dest)
                    return BlobMethod.MOUNT
                log.info("mount of %s from %s refused; copying", blob.digest.short, source)
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
            return BlobMethod.COPY

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
