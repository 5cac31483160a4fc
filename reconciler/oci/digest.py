"""Digests: `algorithm:hex`, validated, and always computed from exact bytes.

Only sha256 and sha512 are accepted (OCI image-spec, descriptor.md "Registered algorithms").
The hex part must be lowercase and exactly as long as the algorithm's output, so a value
such as `sha256:../x` can never reach a URL or a file path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reconciler.errors import ReferenceError_, VerificationError
from reconciler.oci.strings import string_value_schema

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        length = _HEX_LENGTH.get(self.algorithm)
        if length is None:
            raise ReferenceError_(
                f"unsupported digest algorithm {self.algorithm!r} (expected sha256 or sha512)"
            )
        if len(self.hex) != length or not _HEX.fullmatch(self.hex):
            raise ReferenceError_(
                f"invalid {self.algorithm} digest: expected {length} lowercase hex characters"
            )

    @classmethod
    def parse(cls, value: str) -> Digest:
        if not isinstance(value, str):
            raise ReferenceError_(f"digest must be a string, not {type(value).__name__}")
        algorithm, sep, hex_part = value.partition(":")
        if not sep:
            raise ReferenceError_(f"invalid digest {value!r}: expected 'algorithm:hex'")
        try:
            return cls(algorithm, hex_part)
        except ReferenceError_ as exc:
            raise ReferenceError_(f"invalid digest {_clip(value)!r}: {exc}") from None

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of exactly these bytes."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        pattern = r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$"
        return string_value_schema(Digest, cls.parse, core_schema.str_schema(pattern=pattern))


class Hasher:
    """Incremental digest and byte count of a stream."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


def _clip(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


async def verified(
    chunks: AsyncIterator[bytes], digest: Digest, size: int | None, what: str
) -> AsyncIterator[bytes]:
    """Pass a stream through, checking its size and digest.

    The last chunk is held back until the whole stream has been checked, so a consumer that
    forwards the chunks (an upload with a Content-Length) never sends a complete body whose
    digest or size is wrong: the error ends the upload one chunk short.
    """
    hasher = Hasher(digest.algorithm)
    pending: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        hasher.update(chunk)
        if size is not None and hasher.size > size:
            raise VerificationError(f"{what}: more than the {size} bytes announced", retryable=True)
        if pending is not None:
            yield pending
        pending = chunk
    if size is not None and hasher.size != size:
        raise VerificationError(f"{what}: {hasher.size} bytes, expected {size}", retryable=True)
    actual = hasher.digest()
    if actual != digest:
        raise VerificationError(
            f"{what}: digest mismatch: expected {digest}, got {actual}", retryable=True
        )
    if pending is not None:
        yield pending
