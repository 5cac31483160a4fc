from __future__ import annotations

import asyncio
import hashlib

import pytest

from reconciler.errors import ReferenceError_, VerificationError
from reconciler.oci.digest import Digest, verified

HEX64 = "a" * 64


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (f"sha256:{HEX64}", True),
        (f"sha512:{'b' * 128}", True),
        (f"sha256:{'A' * 64}", False),  # uppercase
        (f"sha256:{HEX64[:-1]}", False),  # short
        (f"sha256:{HEX64}0", False),  # long
        ("sha256:../x", False),  # path traversal
        (f"md5:{HEX64[:32]}", False),
        (f"sha512:{HEX64}", False),  # wrong length for the algorithm
        (HEX64, False),  # no algorithm
        ("", False),
        (f"sha256:{HEX64[:-1]}g", False),
    ],
)
def test_parse(text: str, ok: bool) -> None:
    if ok:
        assert str(Digest.parse(text)) == text
    else:
        with pytest.raises(ReferenceError_):
            Digest.parse(text)


def test_of_is_the_hash_of_exact_bytes() -> None:
    data = b'{"a":1}'
    assert Digest.of(data).hex == hashlib.sha256(data).hexdigest()
    assert Digest.of(data, "sha512").hex == hashlib.sha512(data).hexdigest()
    assert Digest.of(data) != Digest.of(data + b" ")


async def _chunks(*parts: bytes):  # type: ignore[no-untyped-def]
    for part in parts:
        yield part


def _collect(digest: Digest, size: int | None, *parts: bytes) -> list[bytes]:
    async def run() -> list[bytes]:
        return [c async for c in verified(_chunks(*parts), digest, size, "test")]

    return asyncio.run(run())


def test_verified_stream_passes_good_data() -> None:
    data = b"hello world"
    assert b"".join(_collect(Digest.of(data), len(data), b"hello", b" ", b"world")) == data


@pytest.mark.parametrize(
    ("parts", "size"),
    [
        ((b"hello", b" wurld"), 11),  # flipped byte
        ((b"hello", b" wor"), 11),  # truncated
        ((b"hello", b" world", b"!"), 11),  # too long
        ((b"hello", b" world"), 10),  # size announced wrong
    ],
)
def test_verified_stream_withholds_the_last_chunk_on_mismatch(
    parts: tuple[bytes, ...], size: int
) -> None:
    digest = Digest.of(b"hello world")
    received: list[bytes] = []

    async def run() -> None:
        async for chunk in verified(_chunks(*parts), digest, size, "test"):
            received.append(chunk)

    with pytest.raises(VerificationError):
        asyncio.run(run())
    # The consumer never saw the whole body, so an upload of it cannot complete.
    assert sum(len(c) for c in received) < sum(len(p) for p in parts)
