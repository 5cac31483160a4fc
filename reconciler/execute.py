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
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from reconciler.archive.layer import file_chunks
from reconciler.desired import DesiredBlob
from reconciler.errors import PushError, ReconcilerError
from reconciler.oci.digest import Digest
from reconciler.oci.reference import Repository
from reconciler.plan import BlobAction, BlobMethod, SpecPlan
from reconciler.registry.client import Registries

log = logging.getLogger("reconciler.execute")


class Progress(Protocol):
    """Receives transfer progress (a terminal progress bar, metrics)."""

    def start(self, key: str, label: str, total: int) -> None: ...

    def advance(self, key: str, amount: int) -> None: ...

    def finish(self, key: str) -> None: ...


@dataclass
class ExecResult:
    mounted: int = 0
    copied: int = 0
    uploaded: int = 0
    skipped: int = 0
    bytes_pushed: int = 0
    manifests: int = 0
    tags: int = 0


class Executor:
    def __init__(self, registries: Registries, progress: Progress | None = None) -> None:
        self.registries = registries
        self.progress = progress
        self._blobs: dict[tuple[str, str, Digest], asyncio.Future[BlobMethod]] = {}
        self._copies: dict[tuple[str, Digest], tuple[str, asyncio.Future[BlobMethod]]] = {}

    async def execute(self, plan: SpecPlan) -> ExecResult:
        result = ExecResult(skipped=plan.skipped_blobs)
        outcomes = await asyncio.gather(
            *(self._blob_once(action) for action in plan.blobs), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for outcome, action in zip(outcomes, plan.blobs, strict=True):
            if isinstance(outcome, BaseException):
                continue
            if outcome is None:  # another spec of this run pushed it (and counts it)
                result.skipped += 1
            elif outcome is BlobMethod.MOUNT:
                result.mounted += 1
            else:
                result.copied += outcome is BlobMethod.COPY
                result.uploaded += outcome is BlobMethod.UPLOAD
                result.bytes_pushed += action.blob.size
        if failures:
            _raise_first(failures, f"{len(failures)} of {len(plan.blobs)} blobs failed")
        children = [m for m in plan.manifests if not m.is_index]
        indexes = [m for m in plan.manifests if m.is_index]
        for stage in (children, indexes):
            outcomes = await asyncio.gather(
                *(
                    self.registries.client(m.destination.registry).put_manifest(
                        m.destination.repository,
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
            result.manifests += len(stage)
        for tag in plan.tags:
            client = self.registries.client(tag.target.registry)
            await client.put_manifest(
                tag.target.repository,
                tag.target.identifier,
                tag.document.raw,
                tag.document.media_type,
                tag.document.digest,
            )
            result.tags += 1
            log.info("tagged %s -> %s", tag.target, tag.new)
        return result

    async def _blob_once(self, action: BlobAction) -> BlobMethod | None:
        """Push a blob unless another spec of this run already is; None when shared.

        A blob copied from another registry crosses the network once per destination
        registry: later copies into other repositories of that registry wait for the first
        and mount from it.
        """
        dest = action.destination
        key = (dest.registry, dest.repository, action.blob.digest)
        future = self._blobs.get(key)
        if future is not None:
            await asyncio.shield(future)
            return None
        first_copy = self._copies.get((dest.registry, action.blob.digest))
        if action.method is BlobMethod.COPY and first_copy is not None:
            future = asyncio.ensure_future(self._mount_after(action, *first_copy))
        else:
            future = asyncio.ensure_future(self._push_blob(action))
            if action.method is BlobMethod.COPY:
                self._copies[(dest.registry, action.blob.digest)] = (dest.repository, future)
        self._blobs[key] = future
        return await asyncio.shield(future)

    async def _mount_after(
        self, action: BlobAction, repository: str, first: asyncio.Future[BlobMethod]
    ) -> BlobMethod:
        try:
            await asyncio.shield(first)
        except ReconcilerError:
            return await self._push_blob(action)  # the first copy failed: try on our own
        local = Repository(action.destination.registry, repository)
        mount = BlobAction(BlobMethod.MOUNT, action.destination, replace(action.blob, source=local))
        return await self._push_blob(mount)

    async def _push_blob(self, action: BlobAction) -> BlobMethod:
        """Push one blob; a retryable failure starts over (a fresh upload session)."""
        return await self.registries.retry.run(
            lambda: self._push_blob_once(action),
            f"{action.method} {action.blob.digest.short} to {action.destination}",
        )

    async def _push_blob_once(self, action: BlobAction) -> BlobMethod:
        dest = action.destination
        blob = action.blob
        client = self.registries.client(dest.registry)
        async with self.registries.slot(dest.registry):
            if action.method is BlobMethod.UPLOAD:
                await client.upload_blob(dest.repository, blob.digest, blob.size, local_bytes(blob))
                return BlobMethod.UPLOAD
            source = blob.source
            assert source is not None  # noqa: S101 - mount/copy have a source
            session: httpx.URL | None = None
            if action.method is BlobMethod.MOUNT:
                session = await client.mount_blob(dest.repository, blob.digest, source.repository)
                if session is None:
                    log.debug("mounted %s from %s into %s", blob.digest.short, source, dest)
                    return BlobMethod.MOUNT
                log.info("mount of %s from %s refused; copying", blob.digest.short, source)
            reader = self.registries.client(source.registry)
            key = f"{dest}@{blob.digest}"
            if self.progress is not None:
                self.progress.start(key, f"{blob.digest.short} {blob.role}", blob.size)
            try:
                async with reader.open_blob(source.repository, blob.digest, blob.size) as stream:
                    await client.upload_blob(
                        dest.repository,
                        blob.digest,
                        blob.size,
                        self._counted(key, stream),
                        session=session,
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


async def local_bytes(blob: DesiredBlob) -> AsyncIterator[bytes]:
    """A generated blob's bytes: held in memory (configs), or a layer built from local files."""
    if blob.data is not None:
        yield blob.data
        return
    if blob.file is None:
        raise PushError(f"blob {blob.digest} has no bytes here to upload")
    async for chunk in file_chunks(blob.file):
        yield chunk


def _raise_first(failures: list[BaseException], summary: str) -> None:
    first = failures[0]
    if not isinstance(first, ReconcilerError):
        raise first  # a bug or a cancellation: not ours to reword
    if len(failures) == 1:
        raise first
    raise PushError(f"{summary}; first: {first}") from first
