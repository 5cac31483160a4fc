"""The bytes of blobs reconciler made itself: configs held in memory, and layers built from
local files (`path:`) into the state directory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from reconciler.errors import PushError
from reconciler.fileio import file_chunks
from reconciler.model.desired import DesiredBlob


async def generated_bytes(blob: DesiredBlob) -> AsyncIterator[bytes]:
    """A generated blob's bytes: held in memory (configs), or a layer built from local files."""
    if blob.data is not None:
        yield blob.data
        return
    if blob.file is None:
        raise PushError(f"blob {blob.digest} has no bytes here to upload")
    async for chunk in file_chunks(blob.file):
        yield chunk
