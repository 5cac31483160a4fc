"""The tests' own cosign signer and verifier: an independent witness of reconciler's trust code.

No cosign binary runs here, so the tests carry this implementation, written from the published
formats and never from reconciler's code (this module imports nothing from `reconciler`):

- Keys and signature schemes: sigstore's algorithm registry (`pkg/signature/algorithm_registry.go`)
  and cosign's `pkg/cosign/keys.go`. cosign's default key is ECDSA P-256. A key is signed with its
  conventional hash: P-256 with SHA-256, P-384 with SHA-384 (older cosign and `--signature-digest-
  algorithm` used SHA-256 for every curve: `ecdsa_hash=` selects it), RSA with PKCS #1 v1.5 and
  SHA-256; ECDSA signatures are ASN.1 DER. Ed25519: cosign loads private keys with
  `WithED25519ph()`, so it signs with Ed25519ph (RFC 8032 section 5.1, SHA-512 pre-hash, empty
  context); cosign before that used pure Ed25519 over the payload (`ed25519_mode="pure"`).
- The encrypted private key: cosign's PEM types `ENCRYPTED SIGSTORE PRIVATE KEY` (written today)
  and `ENCRYPTED COSIGN PRIVATE KEY` (older, still read), whose body is the go-securesystemslib
  `encrypted` envelope: JSON `{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"},
  "cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}`, byte fields in standard base64,
  key = scrypt(passphrase, salt, N=32768, r=8, p=1, 32 bytes), 32-byte salt, 24-byte nonce, the
  ciphertext a secretbox (MAC first) of the PKCS #8 DER private key.
- The payload: cosign's `specs/SIGNATURE_SPEC.md` ("Simple Signing"), itself after
  containers/image `docs/containers-signature.5.md` (the JSON data format): `critical.identity.
  docker-reference`, `critical.image.docker-manifest-digest`, `critical.type` = "cosign container
  image signature", `optional` (null when there are no annotations), compact JSON in that order.
- Storage: SIGNATURE_SPEC.md "Tag-based Discovery" (`sha256:<hex>` -> tag `sha256-<hex>.sig`) and
  "OCI Image Manifest V1": one OCI image manifest per signed object, one layer per signature with
  media type `application/vnd.dev.cosign.simplesigning.v1+json`, the base64 signature in the
  layer's `dev.cosignproject.cosign/signature` annotation; the config is the image config cosign's
  go-containerregistry writes for an empty image with those layers appended. `.att` (DSSE
  envelopes, `predicateType` annotation) and `.sbom` tags follow cosign's ATTESTATION_SPEC.md and
  SBOM_SPEC.md.
- Referrers: the OCI distribution spec 1.1 "referrers tag schema" fallback: a tag `sha256-<hex>`
  holding an OCI image index whose descriptors (with `artifactType`) name artifact manifests that
  carry `subject` = the image; their config is the OCI 1.1 empty descriptor.

Publishing goes through skopeo (an OCI layout directory copied with `--preserve-digests`), except
the referrers index itself: skopeo 1.9 cannot carry a descriptor's `artifactType`, so that one
manifest is PUT with urllib after skopeo has carried everything it names. Verifying reads the
registry over plain HTTP with urllib, as a cluster policy would, and returns one reason per
signature layer: VALID, or "<code>: <detail>" naming the first check that failed (layer media
type, blob digest, signature annotation, signature over the blob, payload format and type, the
signed manifest digest, the docker-reference's repository).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.utils
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from tests.support.images import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256, skopeo, write_blob

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
PREDICATE_TYPE_ANNOTATION = "predicateType"
COSIGN_TYPE = "cosign container image signature"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SPDX_JSON = "text/spdx+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
REF_NAME = "org.opencontainers.image.ref.name"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what cosign records by default

SIGSTORE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
SALT_SIZE = 32
KEY_SIZE = 32

# The reasons verify_* returns, one per signature: VALID, or one of the refusals below, each
# written "<code>: <detail>" so that tests compare codes and people read details.
VALID = "valid"
NO_SIGNATURES = "no-signatures"
NOT_SIMPLE_SIGNING = "not-simple-signing"
BLOB_MISMATCH = "blob-digest-mismatch"
NO_SIGNATURE = "no-signature-annotation"
BAD_SIGNATURE = "bad-signature"
BAD_PAYLOAD = "bad-payload"
WRONG_TYPE = "wrong-type"
DIGEST_MISMATCH = "digest-mismatch"
IDENTITY_MISMATCH = "identity-mismatch"
BLOB_MISSING = "blob-missing"

KeyKind = Literal["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"]
KEY_KINDS: tuple[KeyKind, ...] = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048")
Ed25519Mode = Literal["ph", "pure"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class BlobMissingError(Exception):
    """A blob a signature manifest names is not where it should be."""


class KeyDecryptError(Exception):
    """An encrypted cosign key that cannot be opened (wrong passphrase, or not that format)."""


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    kind: KeyKind
    private: PrivateKey

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return public_pem(self.public)

    def private_pem(self) -> bytes:
        """The key unencrypted, PKCS #8 PEM (`PRIVATE KEY`), as `cosign import-key-pair` reads."""
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def private_der(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def encrypted_pem(self, passphrase: bytes, pem_type: str = SIGSTORE_PEM) -> bytes:
        return encrypted_private_key_pem(self.private_der(), passphrase, pem_type)

    def write(self, directory: Path, name: str, passphrase: bytes) -> tuple[Path, Path]:
        """`<name>.key` (encrypted, like `cosign generate-key-pair`) and `<name>.pub`."""
        directory.mkdir(parents=True, exist_ok=True)
        key, pub = directory / f"{name}.key", directory / f"{name}.pub"
        key.write_bytes(self.encrypted_pem(passphrase))
        key.chmod(0o600)
        pub.write_bytes(self.public_pem())
        return key, pub


def generate_key(kind: KeyKind = "ecdsa-p256") -> KeyPair:
    private: PrivateKey
    if kind == "ecdsa-p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ecdsa-p384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa-2048":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    return KeyPair(kind, private)


def public_pem(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM (`PUBLIC KEY`), what `cosign.pub` holds."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(pem: bytes) -> PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise TypeError(f"unsupported public key type {type(key).__name__}")
    return key


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # scrypt needs 128 * r * N bytes (32 MiB at cosign's parameters): hashlib's default cap is
    # exactly that, so raise it a little.
    return hashlib.scrypt(
        passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 1024 * 1024, dklen=KEY_SIZE
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt_private_key(
    der: bytes,
    passphrase: bytes,
    *,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The go-securesystemslib `encrypted` envelope (JSON bytes) around a PKCS #8 DER key."""
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE) if nonce is None else nonce
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, n, r, p))
    sealed = box.encrypt(der, nonce).ciphertext  # MAC then ciphertext, like Go's secretbox.Seal
    # Go's encoding/json writes struct fields in declaration order, compact, []byte as base64.
    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def decrypt_private_key(envelope: bytes, passphrase: bytes) -> bytes:
    """The plaintext (PKCS #8 DER) inside an `encrypted` envelope."""
    try:
        data = json.loads(envelope)
        kdf, cipher = data["kdf"], data["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise KeyDecryptError(f"unsupported kdf {kdf['name']!r} / cipher {cipher['name']!r}")
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        sealed = base64.b64decode(data["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise KeyDecryptError(f"not an encrypted cosign key envelope: {error}") from error
    if (n, r, p) not in {(SCRYPT_N, SCRYPT_R, SCRYPT_P), (65536, 8, 1), (131072, 8, 1)}:
        raise KeyDecryptError(f"unsupported scrypt parameters N={n} r={r} p={p}")
    try:
        return nacl.secret.SecretBox(_scrypt(passphrase, salt, n, r, p)).decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError as error:
        raise KeyDecryptError("wrong passphrase, or the key was altered") from error


def pem_armour(pem_type: str, body: bytes) -> bytes:
    """PEM as Go's encoding/pem writes it: 64-column base64 lines, no headers."""
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        f"-----BEGIN {pem_type}-----\n"
        + "".join(f"{line}\n" for line in lines)
        + f"-----END {pem_type}-----\n"
    ).encode()


def pem_unarmour(pem: bytes) -> tuple[str, bytes]:
    lines = pem.decode("ascii").strip().splitlines()
    if not lines or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise KeyDecryptError("not a PEM block")
    pem_type = lines[0][len("-----BEGIN ") : -len("-----")]
    end = f"-----END {pem_type}-----"
    if end not in lines:
        raise KeyDecryptError(f"PEM block {pem_type!r} has no END line")
    body = "".join(lines[1 : lines.index(end)])
    return pem_type, base64.b64decode(body, validate=True)


def encrypted_private_key_pem(der: bytes, passphrase: bytes, pem_type: str = SIGSTORE_PEM) -> bytes:
    return pem_armour(pem_type, encrypt_private_key(der, passphrase))


def read_encrypted_private_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    """Open a cosign `.key` file (either PEM type) with its passphrase."""
    pem_type, body = pem_unarmour(pem)
    if pem_type not in (SIGSTORE_PEM, COSIGN_PEM):
        raise KeyDecryptError(f"unsupported PEM type {pem_type!r}")
    key = serialization.load_der_private_key(decrypt_private_key(body, passphrase), password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyDecryptError(f"unsupported private key type {type(key).__name__}")
    return key


# --- signing --------------------------------------------------------------------------------


def _ecdsa_hash(curve: ec.EllipticCurve, override: str | None) -> hashes.HashAlgorithm:
    name = override or {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}.get(
        curve.name, "sha256"
    )
    return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[name]


def _ed25519_secret(key: ed25519.Ed25519PrivateKey) -> bytes:
    seed = key.private_bytes_raw()
    _, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    return secret


def sign(
    private_key: PrivateKey,
    payload: bytes,
    *,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> bytes:
    """The raw signature cosign would put (base64) in the layer annotation."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(payload, ec.ECDSA(_ecdsa_hash(private_key.curve, ecdsa_hash)))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    if ed25519_mode == "pure":
        return private_key.sign(payload)
    state = nacl.bindings.crypto_sign_ed25519ph_state()
    nacl.bindings.crypto_sign_ed25519ph_update(state, payload)
    return nacl.bindings.crypto_sign_ed25519ph_final_create(state, _ed25519_secret(private_key))


def verify_signature(
    public_key: PublicKey,
    payload: bytes,
    signature: bytes,
    *,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(
                signature, payload, ec.ECDSA(_ecdsa_hash(public_key.curve, ecdsa_hash))
            )
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        elif ed25519_mode == "pure":
            public_key.verify(signature, payload)
        else:
            state = nacl.bindings.crypto_sign_ed25519ph_state()
            nacl.bindings.crypto_sign_ed25519ph_update(state, payload)
            raw = public_key.public_bytes_raw()
            return bool(nacl.bindings.crypto_sign_ed25519ph_final_verify(state, signature, raw))
    except (InvalidSignature, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def simple_signing_payload(
    docker_reference: str, manifest_digest: str, annotations: Mapping[str, Any] | None = None
) -> bytes:
    """cosign's payload, byte for byte as its Go encoder writes it (compact, this key order)."""
    body = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": COSIGN_TYPE,
        },
        # A Go map: encoding/json sorts its keys. No annotations: the field is null.
        "optional": dict(sorted(annotations.items())) if annotations else None,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signature_tag(digest: str, suffix: str = "sig") -> str:
    """`sha256:<hex>` -> `sha256-<hex>.sig` (SIGNATURE_SPEC.md, Tag-based Discovery)."""
    algorithm, _, hex_part = digest.partition(":")
    if not hex_part:
        raise ValueError(f"{digest!r} is not a digest")
    return f"{algorithm}-{hex_part}.{suffix}" if suffix else f"{algorithm}-{hex_part}"


@dataclass(frozen=True)
class SignatureEntry:
    """One layer of a signature manifest: its blob (the payload) and the layer's annotations."""

    payload: bytes
    annotations: Mapping[str, str]
    media_type: str = SIMPLE_SIGNING

    @classmethod
    def signed(cls, payload: bytes, signature: bytes, **extra: str) -> SignatureEntry:
        return cls(payload, {SIGNATURE_ANNOTATION: _b64(signature), **extra})


def _descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    # go-containerregistry's Descriptor field order: mediaType, size, digest, ..., annotations.
    return {"mediaType": media_type, "size": len(blob), "digest": sha256(blob), **extra}


def signature_manifest(
    entries: Sequence[SignatureEntry], created: str = ZERO_TIME
) -> tuple[bytes, bytes, list[bytes]]:
    """(manifest, config, layer blobs) of the OCI image manifest cosign pushes under `.sig`."""
    blobs = [entry.payload for entry in entries]
    # The config of go-containerregistry's empty image with these layers appended, fields in
    # its ConfigFile order; a signature layer is not compressed, so its diff ID is its digest.
    config_body = {
        "architecture": "",
        "created": created,
        "history": [{"created": ZERO_TIME} for _ in entries],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [sha256(blob) for blob in blobs]},
        "config": {},
    }
    config = json.dumps(config_body, separators=(",", ":")).encode()
    manifest_body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config),
        "layers": [
            _descriptor(
                entry.media_type, entry.payload, annotations=dict(sorted(entry.annotations.items()))
            )
            for entry in entries
        ],
    }
    return json.dumps(manifest_body, separators=(",", ":")).encode(), config, blobs


# --- OCI layouts and publishing ----------------------------------------------------------------


def write_tagged_layout(
    path: Path, tags: Mapping[str, tuple[bytes, str]], blobs: Sequence[bytes]
) -> Path:
    """An OCI image layout holding `blobs` and, per tag, a root (manifest bytes, media type)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for blob in blobs:
        write_blob(path, blob)
    manifests = []
    for tag, (root, media_type) in tags.items():
        write_blob(path, root)
        manifests.append(
            {
                "mediaType": media_type,
                "digest": sha256(root),
                "size": len(root),
                "annotations": {REF_NAME: tag},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    (path / "index.json").write_text(json.dumps(index))
    return path


class _HasHost(Protocol):
    @property
    def host(self) -> str: ...


def _host(registry: str | _HasHost) -> str:
    host = registry if isinstance(registry, str) else registry.host
    return host.removeprefix("http://").removeprefix("https://").rstrip("/")


@contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cosign-witness-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def push_tagged(
    registry: str | _HasHost,
    repo: str,
    tag: str,
    root: bytes,
    media_type: str,
    blobs: Sequence[bytes],
) -> str:
    """Put one manifest (or index) and its blobs into `registry/repo:tag` with skopeo."""
    with _scratch() as work:
        layout = write_tagged_layout(work / "layout", {tag: (root, media_type)}, blobs)
        skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:{tag}",
            f"docker://{_host(registry)}/{repo}:{tag}",
        )
    return sha256(root)


@dataclass(frozen=True)
class Signed:
    tag: str
    manifest_digest: str  # of the `.sig` manifest
    payload: bytes
    signature: bytes
    layers: int


def sign_in_registry(
    registry: str | _HasHost,
    repo: str,
    digest: str,
    key: KeyPair | PrivateKey,
    identity: str | None = None,
    *,
    annotations: Mapping[str, Any] | None = None,
    append: bool = True,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> Signed:
    """`cosign sign --key`: sign `repo@digest` and push (or add to) its `.sig` manifest.

    The payload's docker-reference is `identity`, by default `host/repo` as cosign writes it.
    With `append`, signatures already under the tag are kept, the new one is added last.
    """
    private = key.private if isinstance(key, KeyPair) else key
    host = _host(registry)
    payload = simple_signing_payload(identity or f"{host}/{repo}", digest, annotations)
    signature = sign(private, payload, ecdsa_hash=ecdsa_hash, ed25519_mode=ed25519_mode)
    tag = signature_tag(digest)
    entries = list(existing_entries(host, repo, tag)) if append else []
    entries.append(SignatureEntry.signed(payload, signature))
    manifest, config, blobs = signature_manifest(entries)
    pushed = push_tagged(host, repo, tag, manifest, OCI_MANIFEST, [config, *blobs])
    return Signed(tag, pushed, payload, signature, len(entries))


def existing_entries(registry: str | _HasHost, repo: str, tag: str) -> list[SignatureEntry]:
    """The signatures already under a `.sig` tag (none if the tag does not exist)."""
    client = RegistryReader(_host(registry))
    found = client.manifest(repo, tag)
    if found is None:
        return []
    body, _ = found
    return [
        SignatureEntry(
            client.blob(repo, layer["digest"]), layer.get("annotations", {}), layer["mediaType"]
        )
        for layer in json.loads(body)["layers"]
    ]


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, what a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def push_attestation(
    registry: str | _HasHost,
    repo: str,
    digest: str,
    key: KeyPair,
    predicate_type: str = "https://slsa.dev/provenance/v1",
    predicate: Mapping[str, Any] | None = None,
) -> str:
    """An `.att`-style artifact: a signed in-toto statement in a DSSE envelope (cosign attest)."""
    host = _host(registry)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f"{host}/{repo}", "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate or {}),
    }
    body = json.dumps(statement, separators=(",", ":")).encode()
    signature = sign(key.private, dsse_pae(IN_TOTO, body))
    envelope = json.dumps(
        {
            "payloadType": IN_TOTO,
            "payload": _b64(body),
            "signatures": [{"keyid": "", "sig": _b64(signature)}],
        },
        separators=(",", ":"),
    ).encode()
    entry = SignatureEntry(
        envelope,
        {SIGNATURE_ANNOTATION: "", PREDICATE_TYPE_ANNOTATION: predicate_type},
        DSSE_ENVELOPE,
    )
    manifest, config, blobs = signature_manifest([entry])
    return push_tagged(
        host, repo, signature_tag(digest, "att"), manifest, OCI_MANIFEST, [config, *blobs]
    )


def push_sbom(
    registry: str | _HasHost, repo: str, digest: str, sbom: bytes, media_type: str = SPDX_JSON
) -> str:
    """An `.sbom`-style artifact (`cosign attach sbom`): the document as the single layer."""
    manifest, config, blobs = signature_manifest([SignatureEntry(sbom, {}, media_type)])
    return push_tagged(
        registry, repo, signature_tag(digest, "sbom"), manifest, OCI_MANIFEST, [config, *blobs]
    )


@dataclass(frozen=True)
class Artifact:
    """One referrer: an artifact type and its single layer."""

    artifact_type: str
    blob: bytes
    media_type: str = "application/octet-stream"
    annotations: Mapping[str, str] = field(default_factory=dict)


def artifact_manifest(artifact: Artifact, subject: Mapping[str, Any]) -> bytes:
    """An OCI 1.1 artifact manifest: empty config, one layer, `subject` = the image."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact.artifact_type,
        "config": _descriptor(OCI_EMPTY, EMPTY_JSON),
        "layers": [_descriptor(artifact.media_type, artifact.blob)],
        "subject": dict(subject),
    }
    if artifact.annotations:
        body["annotations"] = dict(artifact.annotations)
    return json.dumps(body, separators=(",", ":")).encode()


def push_referrers_fallback(
    registry: str | _HasHost, repo: str, digest: str, artifacts: Sequence[Artifact]
) -> tuple[str, list[str]]:
    """The referrers tag schema: tag `sha256-<hex>` = an index of artifact manifests whose
    subject is `repo@digest`. Returns (index digest, artifact manifest digests)."""
    host = _host(registry)
    found = RegistryReader(host).manifest(repo, digest)
    if found is None:
        raise AssertionError(f"{host}/{repo}@{digest} does not exist: no subject to refer to")
    body, media_type = found
    subject = {"mediaType": media_type, "size": len(body), "digest": digest}
    manifests = [artifact_manifest(artifact, subject) for artifact in artifacts]
    descriptors = []
    for artifact, manifest in zip(artifacts, manifests, strict=True):
        extra: dict[str, Any] = {"artifactType": artifact.artifact_type}
        if artifact.annotations:
            extra["annotations"] = dict(artifact.annotations)
        descriptors.append(_descriptor(OCI_MANIFEST, manifest, **extra))
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors},
        separators=(",", ":"),
    ).encode()
    # skopeo 1.9 re-serializes an index whose descriptors carry `artifactType` (its model has no
    # such field), which --preserve-digests forbids. So skopeo carries the artifacts and their
    # blobs under an index without that field, and one plain PUT then puts the real index there.
    bare = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [_descriptor(OCI_MANIFEST, manifest) for manifest in manifests],
        },
        separators=(",", ":"),
    ).encode()
    tag = signature_tag(digest, "")
    push_tagged(
        host, repo, tag, bare, OCI_INDEX, [EMPTY_JSON, *(a.blob for a in artifacts), *manifests]
    )
    RegistryReader(host).put_manifest(repo, tag, index, OCI_INDEX)
    return sha256(index), [sha256(m) for m in manifests]


# --- verifying -------------------------------------------------------------------------------


class RegistryReader:
    """GETs over plain HTTP with urllib: manifests with the full Accept list, blobs."""

    def __init__(self, registry_url: str, timeout: float = 30) -> None:
        url = registry_url if "://" in registry_url else f"http://{registry_url}"
        self.base = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, accept: str | None = None) -> tuple[bytes, str] | None:
        request = urllib.request.Request(f"{self.base}{path}")  # noqa: S310 - a test registry
        if accept:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise AssertionError(f"GET {self.base}{path}: HTTP {error.code}") from error

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> None:
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        request = urllib.request.Request(url, data=body, method="PUT")  # noqa: S310
        request.add_header("Content-Type", media_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                if response.status != 201:
                    raise AssertionError(f"PUT {url}: HTTP {response.status}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AssertionError(f"PUT {url}: HTTP {error.code} {detail}") from error

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str] | None:
        """(body, media type) of a manifest, None if the registry has none there."""
        return self._get(f"/v2/{repo}/manifests/{reference}", MANIFEST_ACCEPT)

    def blob(self, repo: str, digest: str) -> bytes:
        found = self._get(f"/v2/{repo}/blobs/{digest}")
        if found is None:
            raise BlobMissingError(f"{self.base}/v2/{repo}/blobs/{digest} is missing")
        return found[0]


def repository_of(reference: str) -> str:
    """`host/repo[:tag][@digest]` -> `host/repo` (a port's colon is not a tag's)."""
    name = reference.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def _check_payload(blob: bytes, digest: str, identity: str, where: str) -> str:
    # containers-signature(5): consumers MUST reject unknown members in `critical` and below.
    try:
        document = json.loads(blob)
        critical = document["critical"]
        kind = critical["type"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
        unexpected = (
            set(document) - {"critical", "optional"}
            or set(critical) - {"type", "image", "identity"}
            or set(critical["image"]) - {"docker-manifest-digest"}
            or set(critical["identity"]) - {"docker-reference"}
        )
    except (ValueError, KeyError, TypeError) as error:
        return f"{BAD_PAYLOAD}: {where}: not a simple signing payload ({error!r})"
    if unexpected:
        return f"{BAD_PAYLOAD}: {where}: unexpected members {sorted(unexpected)}"
    if document.get("optional") is not None and not isinstance(document["optional"], dict):
        return f"{BAD_PAYLOAD}: {where}: optional is not an object"
    if kind != COSIGN_TYPE:
        return f"{WRONG_TYPE}: {where}: critical.type is {kind!r}"
    if signed_digest != digest:
        return f"{DIGEST_MISMATCH}: {where}: signs {signed_digest}, not {digest}"
    if not isinstance(reference, str) or repository_of(reference) != repository_of(identity):
        return f"{IDENTITY_MISMATCH}: {where}: names {reference!r}, not {identity!r}"
    return VALID


def check_layer(
    layer: Mapping[str, Any],
    blob: bytes,
    public_key: PublicKey,
    digest: str,
    identity: str,
    *,
    index: int = 0,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> str:
    """One signature layer checked as a policy would: VALID, or the first reason to refuse."""
    where = f"layer {index} ({layer.get('digest')})"
    if layer.get("mediaType") != SIMPLE_SIGNING:
        return f"{NOT_SIMPLE_SIGNING}: {where}: media type {layer.get('mediaType')!r}"
    if sha256(blob) != layer.get("digest") or len(blob) != layer.get("size"):
        return f"{BLOB_MISMATCH}: {where}: the blob's sha256 is {sha256(blob)}"
    encoded = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
    if not encoded:
        return f"{NO_SIGNATURE}: {where}: no {SIGNATURE_ANNOTATION} annotation"
    try:
        signature = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return f"{BAD_SIGNATURE}: {where}: the annotation is not base64"
    if not verify_signature(
        public_key, blob, signature, ecdsa_hash=ecdsa_hash, ed25519_mode=ed25519_mode
    ):
        return f"{BAD_SIGNATURE}: {where}: does not verify with the given key"
    return _check_payload(blob, digest, identity, where)


def _check_manifest(
    body: bytes,
    fetch: Callable[[str], bytes],
    public_key_pem: bytes,
    digest: str,
    identity: str,
    options: dict[str, Any],
) -> list[str]:
    manifest = json.loads(body)
    if manifest.get("mediaType", OCI_MANIFEST) not in (OCI_MANIFEST, DOCKER_MANIFEST):
        return [f"{NO_SIGNATURES}: the signature tag holds a {manifest.get('mediaType')}"]
    key = load_public_key(public_key_pem)
    layers = manifest.get("layers") or []
    if not layers:
        return [f"{NO_SIGNATURES}: the signature manifest has no layers"]
    reasons = []
    for i, layer in enumerate(layers):
        try:
            blob = fetch(layer["digest"])
        except BlobMissingError as error:
            reasons.append(f"{BLOB_MISSING}: layer {i}: {error}")
            continue
        reasons.append(check_layer(layer, blob, key, digest, identity, index=i, **options))
    return reasons


def verify_in_registry(
    registry_url: str,
    repo: str,
    digest: str,
    public_key_pem: bytes,
    identity: str,
    *,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> list[str]:
    """`cosign verify --key`: one reason per signature under `repo:sha256-<hex>.sig`.

    The image is verified when at least one reason is VALID (see `verified`)."""
    client = RegistryReader(registry_url)
    tag = signature_tag(digest)
    found = client.manifest(repo, tag)
    if found is None:
        return [f"{NO_SIGNATURES}: {client.base}/v2/{repo}/manifests/{tag} does not exist"]
    options = {"ecdsa_hash": ecdsa_hash, "ed25519_mode": ed25519_mode}
    return _check_manifest(
        found[0], lambda d: client.blob(repo, d), public_key_pem, digest, identity, options
    )


def verify_layout(
    oci_dir: Path,
    digest: str,
    public_key_pem: bytes,
    identity: str,
    *,
    ecdsa_hash: str | None = None,
    ed25519_mode: Ed25519Mode = "ph",
) -> list[str]:
    """The same checks on an OCI layout, whose index.json names the `.sig` tag by ref.name."""
    tag = signature_tag(digest)
    index = json.loads((oci_dir / "index.json").read_text())
    named = [
        m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) == tag
    ]
    if not named:
        return [f"{NO_SIGNATURES}: {oci_dir}/index.json names no {tag}"]

    def fetch(blob_digest: str) -> bytes:
        algorithm, _, hex_part = blob_digest.partition(":")
        path = oci_dir / "blobs" / algorithm / hex_part
        if not path.is_file():
            raise BlobMissingError(f"{path} is missing")
        return path.read_bytes()

    body = fetch(named[0]["digest"])
    if sha256(body) != named[0]["digest"]:
        return [f"{BLOB_MISMATCH}: the {tag} manifest's sha256 is {sha256(body)}"]
    options = {"ecdsa_hash": ecdsa_hash, "ed25519_mode": ed25519_mode}
    return _check_manifest(body, fetch, public_key_pem, digest, identity, options)


def verified(reasons: Sequence[str]) -> bool:
    return VALID in reasons


def codes(reasons: Sequence[str]) -> list[str]:
    """The reason codes alone, for assertions: `["valid", "bad-signature"]`."""
    return [reason.split(":", 1)[0] for reason in reasons]


# --- GPG simple signing (containers-signature(5)), for `signedBy` policies -----------------------


@dataclass(frozen=True)
class GpgKey:
    home: Path
    fingerprint: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}


def make_gpg_key(home: Path, uid: str = "reconciler tests <tests@example.invalid>") -> GpgKey:
    """A throwaway signing key without a passphrase, in its own GNUPGHOME."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys", uid],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    return GpgKey(home, fingerprint)


def export_gpg_public_key(key: GpgKey, path: Path) -> Path:
    armored = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", key.fingerprint],
        env=key.env(),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    path.write_bytes(armored)
    return path


def standalone_sign(key: GpgKey, manifest: Path, docker_reference: str, output: Path) -> Path:
    """`skopeo standalone-sign`: a simple signing signature of one manifest file."""
    result = subprocess.run(
        [
            "skopeo",
            "standalone-sign",
            str(manifest),
            docker_reference,
            key.fingerprint,
            "--output",
            str(output),
        ],
        env=key.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"skopeo standalone-sign failed: {result.stderr.strip()}")
    return output


def standalone_verify(
    key: GpgKey, manifest: Path, docker_reference: str, signature: Path
) -> subprocess.CompletedProcess[str]:
    """`skopeo standalone-verify`; returncode 0 and the signed digest on stdout if it holds."""
    return subprocess.run(
        [
            "skopeo",
            "standalone-verify",
            str(manifest),
            docker_reference,
            key.fingerprint,
            str(signature),
        ],
        env=key.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
