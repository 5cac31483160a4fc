"""Public and private keys as cosign uses them for `--key`, loaded from untrusted bytes.

Accepted (cosign's `LoadDefaultSignerVerifier` set): ECDSA on P-256, P-384 and P-521, RSA of
2048 to 8192 bits, and Ed25519. Refused: DSA, other curves, short RSA, anything not PEM.

Hashes. cosign signs ECDSA with the curve's own hash (P-256/SHA-256, P-384/SHA-384,
P-521/SHA-512) and RSA with PKCS#1 v1.5 over SHA-256; containers/image (podman, skopeo)
verifies every key with SHA-256. `verify` accepts either for ECDSA, and PKCS#1 v1.5 or PSS for
RSA; `sign` writes the curve's hash and PKCS#1 v1.5. cosign 2 signs Ed25519 keys as Ed25519ph
(RFC 8032 prehash, empty context) while containers/image verifies pure Ed25519: `verify`
accepts both, `sign` writes Ed25519ph (what cosign and the admission controllers built on it read).

Private keys: PEM PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with a passphrase),
`EC PRIVATE KEY`, `RSA PRIVATE KEY`, and cosign's own `ENCRYPTED SIGSTORE PRIVATE KEY` (older:
`ENCRYPTED COSIGN PRIVATE KEY`): a JSON envelope whose key is derived with scrypt (the file's
N, r, p, salt) and sealed with NaCl secretbox, around a PKCS#8 DER key
(go-securesystemslib `encrypted`). The scrypt cost comes from the file, so it is bounded
before any work is done: a hostile file cannot make us allocate a gigabyte or spin for minutes.

No message ever holds key bytes or a passphrase: errors name `where` and what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from reconciler.errors import DocumentError, TrustError
from reconciler.oci.document import load_json
from reconciler.trust.files import MAX_KEY_FILE

# A key file is small; a megabyte is far over any PEM key and keeps a wrong path (a disk
# image, /dev/zero) from being read whole.
MAX_KEYS_PER_FILE = 64
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192

# scrypt bounds for cosign's encrypted keys. cosign writes N=32768, r=8, p=1 (32 MiB, a
# fraction of a second); memory is 128*N*r bytes and time grows with N*r*p.
SCRYPT_MAX_N = 1 << 20
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16
SCRYPT_MAX_MEMORY = 1 << 30
SCRYPT_MAX_WORK = 1 << 23  # N*r*p: 32x cosign's default

COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")

_CURVES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "secp256r1": ("ecdsa-p256", hashes.SHA256()),
    "secp384r1": ("ecdsa-p384", hashes.SHA384()),
    "secp521r1": ("ecdsa-p521", hashes.SHA512()),
}

_KIND_NAMES = {
    "ecdsa-p256": "ECDSA P-256",
    "ecdsa-p384": "ECDSA P-384",
    "ecdsa-p521": "ECDSA P-521",
    "ed25519": "Ed25519",
}


def kind_name(kind: str) -> str:
    """A key kind as people write it: `ecdsa-p256` is `ECDSA P-256`, `rsa-2048` `RSA-2048`."""
    return _KIND_NAMES.get(kind, kind.upper())


_PublicKeyType = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_PrivateKeyType = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class PublicKey:
    """A verifying key: its kind ("ecdsa-p256", "rsa-3072", "ed25519") and the sha256 of its
    DER SubjectPublicKeyInfo (`fingerprint`; `short` for messages)."""

    kind: str
    fingerprint: str
    _key: _PublicKeyType = field(repr=False, compare=False)

    @property
    def short(self) -> str:
        return self.fingerprint[:16]

    @property
    def described(self) -> str:
        """How refusals name the key: `ECDSA P-256 key 3f1c0e9a5b7d2468` (type and short
        fingerprint)."""
        return f"{kind_name(self.kind)} key {self.short}"

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's over `payload`; never raises for a bad one."""
        key = self._key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                return _verify_ecdsa(key, self.kind, payload, signature)
            if isinstance(key, rsa.RSAPublicKey):
                return _verify_rsa(key, payload, signature)
            return _verify_ed25519(key, payload, signature)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __str__(self) -> str:
        return f"{self.kind} key {self.short}"


def _verify_ecdsa(
    key: ec.EllipticCurvePublicKey, kind: str, payload: bytes, signature: bytes
) -> bool:
    own = _CURVES[key.curve.name][1]
    candidates: list[hashes.HashAlgorithm] = [own]
    if kind != "ecdsa-p256":
        candidates.append(hashes.SHA256())  # containers/image signs and verifies with SHA-256
    for algorithm in candidates:
        try:
            key.verify(signature, payload, ec.ECDSA(algorithm))
            return True
        except InvalidSignature:
            continue
    return False


def _verify_rsa(key: rsa.RSAPublicKey, payload: bytes, signature: bytes) -> bool:
    schemes: tuple[padding.AsymmetricPadding, ...] = (
        padding.PKCS1v15(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
    )
    for scheme in schemes:
        try:
            key.verify(signature, payload, scheme, hashes.SHA256())
            return True
        except InvalidSignature:
            continue
    return False


def _verify_ed25519(key: ed25519.Ed25519PublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, payload)
        return True
    except InvalidSignature:
        pass
    if len(signature) != 64:
        return False
    # Ed25519ph (what cosign 2 writes for Ed25519 keys): libsodium's multi-part API is it.
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    state = nacl.bindings.crypto_sign_ed25519ph_state()
    nacl.bindings.crypto_sign_ed25519ph_update(state, payload)
    try:
        return bool(nacl.bindings.crypto_sign_ed25519ph_final_verify(state, signature, raw))
    except nacl.exceptions.BadSignatureError:
        return False


@dataclass(frozen=True)
class PrivateKey:
    """A signing key. `sign` writes what cosign writes for the key's kind (see the module)."""

    public: PublicKey
    _key: _PrivateKeyType = field(repr=False, compare=False)

    def sign(self, payload: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(payload, ec.ECDSA(_CURVES[key.curve.name][1]))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        # Ed25519ph, as cosign 2 signs with an Ed25519 key (and so as its verifiers and the
        # admission controllers built on it expect); libsodium's multi-part API is Ed25519ph.
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        _public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        state = nacl.bindings.crypto_sign_ed25519ph_state()
        nacl.bindings.crypto_sign_ed25519ph_update(state, payload)
        return bytes(nacl.bindings.crypto_sign_ed25519ph_final_create(state, secret))

    def __repr__(self) -> str:
        return f"PrivateKey({self.public})"


def _public_key(key: Any, where: str) -> PublicKey:
    """Check a parsed key's type and size; `where` names it in the refusal."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise TrustError(
                f"{where}: ECDSA on {key.curve.name} is not supported (use P-256, P-384 or P-521)"
            )
        kind = curve[0]
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise TrustError(
                f"{where}: RSA key of {key.key_size} bits refused"
                f" ({RSA_MIN_BITS} to {RSA_MAX_BITS} bits are accepted)"
            )
        kind = f"rsa-{key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "ed25519"
    else:
        raise TrustError(
            f"{where}: unsupported key type {_key_type_name(key)}"
            " (ECDSA P-256/P-384/P-521, RSA or Ed25519 are accepted)"
        )
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(kind, hashlib.sha256(der).hexdigest(), key)


def _key_type_name(key: Any) -> str:
    name = type(key).__name__.lstrip("_")
    for suffix in ("PublicKey", "PrivateKey"):
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)].upper()
    return name


def _pem_blocks(data: bytes, where: str) -> list[tuple[str, bytes]]:
    if len(data) > MAX_KEY_FILE:
        raise TrustError(f"{where}: {len(data)} bytes is too large for a key")
    blocks = _scan_pem(data, where)
    if not blocks:
        raise TrustError(f"{where}: not a PEM key (no -----BEGIN ...----- block)")
    if len(blocks) > MAX_KEYS_PER_FILE:
        raise TrustError(f"{where}: more than {MAX_KEYS_PER_FILE} PEM blocks")
    return blocks


def _scan_pem(data: bytes, where: str) -> list[tuple[str, bytes]]:
    """The PEM blocks of `data`, line by line (linear in the input: a file of BEGIN lines
    without an END cannot make a backtracking search quadratic). Text around blocks is
    ignored, as openssl and Go's pem.Decode ignore it."""
    blocks: list[tuple[str, bytes]] = []
    label: str | None = None
    lines: list[bytes] = []
    for line in data.splitlines():
        stripped = line.strip()
        if label is None:
            match = _BEGIN.fullmatch(stripped)
            if match is not None:
                label, lines = match.group(1).decode("ascii"), [stripped]
            continue
        lines.append(stripped)
        if stripped.startswith(b"-----END "):
            if stripped != b"-----END " + label.encode() + b"-----":
                raise TrustError(f"{where}: a {label} PEM block ends with another label")
            blocks.append((label, b"\n".join(lines) + b"\n"))
            if len(blocks) > MAX_KEYS_PER_FILE:
                raise TrustError(f"{where}: more than {MAX_KEYS_PER_FILE} PEM blocks")
            label = None
    if label is not None:
        raise TrustError(f"{where}: a {label} PEM block has no END line")
    return blocks


def _load_public_block(label: str, block: bytes, where: str) -> PublicKey:
    if "PRIVATE KEY" in label:
        raise TrustError(
            f"{where}: this is a private key ({label}); give the public key"
            " (cosign.pub, -----BEGIN PUBLIC KEY-----)"
        )
    if label != "PUBLIC KEY":
        raise TrustError(f"{where}: a {label} PEM block is not a public key")
    try:
        key = serialization.load_pem_public_key(block)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TrustError(
            f"{where}: the PUBLIC KEY block is damaged or of an unknown type"
        ) from None
    return _public_key(key, where)


def load_public_key(data: bytes, where: str) -> PublicKey:
    """The one public key of a PEM file (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo)."""
    blocks = _pem_blocks(data, where)
    if len(blocks) != 1:
        raise TrustError(f"{where}: {len(blocks)} PEM blocks where one public key was expected")
    return _load_public_block(*blocks[0], where)


def load_public_keys(data: bytes, where: str) -> tuple[PublicKey, ...]:
    """Every public key of a PEM file holding one or more PUBLIC KEY blocks."""
    blocks = _pem_blocks(data, where)
    keys = [
        _load_public_block(label, block, f"{where} (key {i + 1})" if len(blocks) > 1 else where)
        for i, (label, block) in enumerate(blocks)
    ]
    return tuple(dict.fromkeys(keys))


def load_private_key(data: bytes, passphrase: bytes | None, where: str) -> PrivateKey:
    """A signing key from PEM: cosign's encrypted format, PKCS#8 (encrypted or not), EC or RSA."""
    blocks = _pem_blocks(data, where)
    private = [(label, block) for label, block in blocks if "PRIVATE KEY" in label]
    if len(private) != 1:
        raise TrustError(
            f"{where}: expected one PEM private key, found {len(private)}"
            + (" (a PUBLIC KEY cannot sign)" if not private else "")
        )
    label, block = private[0]
    if label in COSIGN_PEM_TYPES:
        der = _decrypt_cosign(_pem_body(block, where), passphrase or b"", where)
        try:
            key: Any = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise TrustError(f"{where}: wrong passphrase or damaged key") from None
    elif label in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        key = _load_standard_private(label, block, passphrase, where)
    else:
        raise TrustError(f"{where}: unsupported private key type {label}")
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise TrustError(f"{where}: unsupported key type {_key_type_name(key)}")
    return PrivateKey(_public_key(key.public_key(), where), key)


def _load_standard_private(label: str, block: bytes, passphrase: bytes | None, where: str) -> Any:
    encrypted = label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
    if encrypted and not passphrase:
        raise TrustError(f"{where}: the key is encrypted and no passphrase was given")
    try:
        return serialization.load_pem_private_key(block, password=passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise TrustError(f"{where}: wrong passphrase or damaged key") from None
        raise TrustError(f"{where}: the {label} block is damaged or of an unknown type") from None


def _pem_body(block: bytes, where: str) -> bytes:
    lines = block.strip().splitlines()[1:-1]
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines), validate=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: the PEM block is not valid base64") from None


def _b64_field(value: Any, name: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise TrustError(f"{where}: encrypted key field {name} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: encrypted key field {name} is not valid base64") from None


def _int_field(params: dict[str, Any], name: str, where: str) -> int:
    value = params.get(name)
    if type(value) is not int or value < 1:
        raise TrustError(f"{where}: scrypt parameter {name} must be a positive integer")
    return value


def _object(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrustError(f"{where}: encrypted key field {name} is not an object")
    return value


def scrypt_parameters(kdf: dict[str, Any], where: str) -> tuple[int, int, int]:
    """N, r, p of an encrypted key, refused past the bounds before any work is done."""
    if kdf.get("name") != "scrypt":
        raise TrustError(f"{where}: key derivation {kdf.get('name')!r} is not supported (scrypt)")
    params = _object(kdf.get("params"), "kdf.params", where)
    n, r, p = (_int_field(params, name, where) for name in ("N", "r", "p"))
    if n < 2 or n & (n - 1):
        raise TrustError(f"{where}: scrypt N={n} is not a power of two")
    if n > SCRYPT_MAX_N or r > SCRYPT_MAX_R or p > SCRYPT_MAX_P:
        raise TrustError(
            f"{where}: scrypt cost N={n}, r={r}, p={p} refused"
            f" (at most N={SCRYPT_MAX_N}, r={SCRYPT_MAX_R}, p={SCRYPT_MAX_P})"
        )
    if 128 * n * r > SCRYPT_MAX_MEMORY or n * r * p > SCRYPT_MAX_WORK:
        raise TrustError(f"{where}: scrypt cost N={n}, r={r}, p={p} is too high; refused")
    return n, r, p


def _decrypt_cosign(envelope: bytes, passphrase: bytes, where: str) -> bytes:
    try:
        data = load_json(envelope, f"{where}: encrypted key", 64 * 1024)
    except DocumentError as exc:
        raise TrustError(str(exc)) from None
    data = _object(data, "(top level)", where)
    kdf = _object(data.get("kdf"), "kdf", where)
    cipher = _object(data.get("cipher"), "cipher", where)
    n, r, p = scrypt_parameters(kdf, where)
    salt = _b64_field(kdf.get("salt"), "kdf.salt", where)
    if cipher.get("name") != "nacl/secretbox":
        raise TrustError(
            f"{where}: cipher {cipher.get('name')!r} is not supported (nacl/secretbox)"
        )
    nonce = _b64_field(cipher.get("nonce"), "cipher.nonce", where)
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise TrustError(f"{where}: cipher.nonce is {len(nonce)} bytes, not 24")
    sealed = _b64_field(data.get("ciphertext"), "ciphertext", where)
    secret = hashlib.scrypt(
        passphrase, salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) + (1 << 20), dklen=32
    )
    try:
        return nacl.secret.SecretBox(secret).decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        raise TrustError(f"{where}: wrong passphrase or damaged key") from None


def private_key_of(key: _PrivateKeyType, where: str = "key") -> PrivateKey:
    """Wrap a `cryptography` private key (tests, key generation)."""
    return PrivateKey(_public_key(key.public_key(), where), key)
