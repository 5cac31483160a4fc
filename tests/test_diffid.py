from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib

import pytest

from reconciler.errors import VerificationError
from reconciler.oci.diffid import DiffIdComputer, sniff_compression
from reconciler.oci.mediatypes import Compression


def tar_of(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("f")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TAR = tar_of(os.urandom(200_000) + b"\0" * 300_000)


def feed_all(computer: DiffIdComputer, data: bytes, step: int = 7_777) -> str:
    for i in range(0, len(data), step):
        computer.feed(data[i : i + step])
    return str(computer.finish())


def test_sniff() -> None:
    assert sniff_compression(gzip.compress(TAR)) is Compression.GZIP
    assert sniff_compression(b"\x28\xb5\x2f\xfd....") is Compression.ZSTD
    assert sniff_compression(TAR[:512]) is Compression.NONE
    assert sniff_compression(b"\0" * 1024) is Compression.NONE
    assert sniff_compression(b"PK\x03\x04 zip") is None


@pytest.mark.parametrize("step", [1, 4096, 10**7])
def test_gzip_diff_id_single_and_multi_member(step: int) -> None:
    expected = "sha256:" + hashlib.sha256(TAR).hexdigest()
    one = gzip.compress(TAR, mtime=0)
    assert feed_all(DiffIdComputer(Compression.GZIP), one, step) == expected
    two = gzip.compress(TAR[:100_000], mtime=0) + gzip.compress(TAR[100_000:], mtime=0)
    assert feed_all(DiffIdComputer(Compression.GZIP), two, step) == expected
    padded = one + b"\0" * 1024
    assert feed_all(DiffIdComputer(Compression.GZIP), padded, step) == expected


def test_uncompressed_diff_id_is_the_digest() -> None:
    assert (
        feed_all(DiffIdComputer(Compression.NONE), TAR)
        == "sha256:" + hashlib.sha256(TAR).hexdigest()
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (gzip.compress(TAR)[:-100], "truncated"),
        (gzip.compress(TAR) + b"garbage", "trailing data"),
        (b"\x1f\x8b" + b"\xff" * 100, "not valid gzip"),
    ],
)
def test_bad_gzip(data: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        feed_all(DiffIdComputer(Compression.GZIP), data)


def test_decompression_bomb_is_bounded() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b"\0" * (64 * 1024 * 1024)) + compressor.flush()
    assert len(bomb) < 100_000
    with pytest.raises(VerificationError, match="more than 10000000 bytes"):
        feed_all(DiffIdComputer(Compression.GZIP, max_size=10_000_000), bomb, len(bomb))


def test_zstd_needs_a_declared_diff_id() -> None:
    with pytest.raises(VerificationError, match="diffID"):
        DiffIdComputer(Compression.ZSTD)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.NONE])
def test_slices_hashed_beside_inflation_stay_in_order(compression: Compression) -> None:
    """Megabyte slices go to the hashing thread, small ones are hashed inline; mixed, in
    stream order, over several gzip members, the digest is that of the whole tar."""
    tar = tar_of(
        b"".join(os.urandom(1000) + bytes(i % 251 for i in range(3000)) * 20 for _ in range(90))
    )
    assert len(tar) > 5 * 1024 * 1024
    expected = "sha256:" + hashlib.sha256(tar).hexdigest()
    if compression is Compression.GZIP:
        cut = len(tar) // 3
        blob = gzip.compress(tar[:cut], mtime=0) + gzip.compress(tar[cut:], mtime=0)
    else:
        blob = tar
    for step in (1024 * 1024, 5_000, len(blob)):
        assert feed_all(DiffIdComputer(compression), blob, step) == expected
