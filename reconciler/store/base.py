"""What every place that holds images answers: one protocol to read, one to write, and the
capabilities only some stores have as small protocols of their own (DESIGN.md section 6).

A store is opened for one `Location` (reconciler.store.open) and speaks of that location only:
a registry repository, an OCI layout, a docker archive. Every byte a reader yields has been
checked against its digest (and its size, when one is given) before the stream ends; a size a
store reports is what it holds, and a caller that knows the size from a descriptor checks it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reconciler.oci.digest import Digest
from reconciler.oci.document import Document
from reconciler.oci.location import Location


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD on a manifest tells: its digest, media type and size."""

    digest: Digest
    media_type: str | None
    size: int | None  # None when the store does not vouch for it (a registry: its GET does)


@dataclass(frozen=True)
class UploadSession:
    """An upload a registry opened (after a refused mount) that the next upload continues."""

    url: str


class ImageReader(Protocol):
    """Manifests and blobs of one location, by digest or by tag."""

    location: Location

    async def head_manifest(self, identifier: str) -> ManifestHead | None: ...

    async def get_manifest(self, identifier: str) -> Document: ...

    async def head_blob(self, digest: Digest) -> int | None: ...

    def open_blob(
        self, digest: Digest, size: int | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def get_blob(self, digest: Digest, limit: int) -> bytes: ...

    async def list_tags(self, limit: int = 10_000) -> list[str]: ...


class ImageWriter(ImageReader, Protocol):
    """A location that takes blobs, then manifests, then tags (in that order: a store refuses
    a tag whose manifest is incomplete, as a registry does)."""

    async def upload_blob(
        self,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: UploadSession | None = None,
    ) -> None: ...

    async def put_manifest(
        self, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None: ...


@runtime_checkable
class BlobMounter(Protocol):
    """A store that can take a blob from another location of the same store without its bytes
    passing through us (a registry's cross-repository mount)."""

    async def mount_blob(self, digest: Digest, source: Location) -> UploadSession | None:
        """None when mounted; else the upload session the store opened instead."""
        ...


@runtime_checkable
class TagDeleter(Protocol):
    """A store whose tags can be removed (prune)."""

    async def delete_manifest(self, identifier: str) -> int:
        """The outcome as an HTTP status: 202 deleted, 404 not there."""
        ...


@runtime_checkable
class NamedImages(Protocol):
    """A local store that records the registry name an image was saved under."""

    def base_name(self, identifier: str) -> str | None: ...


@runtime_checkable
class ReferrersLister(Protocol):
    """A store that may answer the OCI 1.1 referrers API (a registry)."""

    async def list_referrers(self, digest: Digest) -> bytes | None:
        """The referrers API's image index of what refers to `digest`, as its raw JSON; None
        when the store has no such API (then the referrers tag schema's fallback tag is
        where they are listed)."""
        ...
