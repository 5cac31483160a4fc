"""The fingerprints of an OpenPGP public key file, to name the keys of a `signedBy`
requirement in messages: pure, no signature is verified here (reconciler does not verify GPG
simple signing; see policy.py).

RFC 4880 (and 9580 for v6) layout: an ASCII-armoured or binary sequence of packets; each
public-key packet (tag 6) starts a key, whose fingerprint is SHA-1 over 0x99, the two-byte
body length and the body for v4, SHA-256 over 0x9A/0x9B, a four-byte length and the body for
v5/v6. Subkeys (tag 14) are not named: a policy's keys are the primary keys gpg lists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from reconciler.errors import TrustError

_ARMOUR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PUBLIC_KEY = 6
_MAX_KEYS = 64


def gpg_fingerprints(data: bytes, where: str) -> tuple[str, ...]:
    """The primary key fingerprints (upper-case hex, as gpg shows them) of a key file."""
    packets = _dearmour(data, where) if data.lstrip().startswith(_ARMOUR) else data
    fingerprints: list[str] = []
    for tag, body in _packets(packets, where):
        if tag == _PUBLIC_KEY:
            fingerprints.append(_fingerprint(body, where))
            if len(fingerprints) > _MAX_KEYS:
                raise TrustError(f"{where}: more than {_MAX_KEYS} GPG keys")
    if not fingerprints:
        raise TrustError(f"{where}: no OpenPGP public key in the file")
    return tuple(dict.fromkeys(fingerprints))


def _dearmour(data: bytes, where: str) -> bytes:
    lines = data.strip().splitlines()[1:]
    body: list[bytes] = []
    in_headers = True
    for raw in lines:
        line = raw.strip()
        if line.startswith(b"-----END "):
            break
        if in_headers:
            in_headers = line != b"" and b":" in line
            if in_headers or line == b"":
                continue
        if line.startswith(b"="):  # the CRC-24 line
            continue
        body.append(line)
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: the PGP armour is not valid base64") from None


def _packets(data: bytes, where: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        first = data[at]
        if not first & 0x80:
            raise TrustError(f"{where}: not an OpenPGP key (bad packet header at byte {at})")
        if first & 0x40:  # new format: tag in the low six bits, then a length
            tag, (length, at) = first & 0x3F, _new_length(data, at + 1, where)
        else:
            tag, size = (first >> 2) & 0x0F, (1, 2, 4, 0)[first & 0x03]
            if size == 0 or at + 1 + size > len(data):
                raise TrustError(f"{where}: an OpenPGP packet of indeterminate length")
            length, at = int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size
        if at + length > len(data):
            raise TrustError(f"{where}: an OpenPGP packet runs past the end of the file")
        out.append((tag, data[at : at + length]))
        at += length
    return out


def _new_length(data: bytes, at: int, where: str) -> tuple[int, int]:
    if at < len(data) and data[at] < 192:
        return data[at], at + 1
    if at + 1 < len(data) and data[at] < 224:
        return ((data[at] - 192) << 8) + data[at + 1] + 192, at + 2
    if at + 4 < len(data) and data[at] == 255:
        return int.from_bytes(data[at + 1 : at + 5], "big"), at + 5
    raise TrustError(f"{where}: an OpenPGP packet length is damaged or partial")


def _fingerprint(body: bytes, where: str) -> str:
    version = body[0] if body else 0
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()  # noqa: S324 - RFC 4880's fingerprint
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise TrustError(f"{where}: OpenPGP key version {version} is not supported")
