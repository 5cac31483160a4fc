"""Whether an image digest satisfies a scope's requirements, given its signatures: pure.

containers-policy.json(5) semantics: every requirement of the list must hold. A
`sigstoreSigned` requirement holds when at least one signature passes all of:

1. the payload bytes are the blob the layer names (sha256 and size; the caller fetched them
   from an untrusted registry, so they are checked here);
2. the signature verifies over those bytes with one of the requirement's keys;
3. the payload parses (simplesigning.parse_payload) and names `digest`;
4. its identity matches the image per `signedIdentity` (default `matchRepoDigestOrExact`).

Steps run in that order, so nothing an unverified payload claims is read. When no signature
passes, the reason given is the one that got furthest (a signature by the right key for
another digest says more than a stranger's signature).

Every refusal names the key that signed and the keys the scope wants. A cosign signature does
not carry its key, so the signer is named by trying the keys the policy names elsewhere
(`KnownKey`: other scopes); failing that, by the key type its encoding shows
(`signature_kind`), which is as far as the bytes go.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import ReferenceError_, TrustError
from reconciler.oci.digest import Digest
from reconciler.oci.location import Address
from reconciler.oci.reference import Reference
from reconciler.trust.artifacts import SignatureEntry
from reconciler.trust.policy import (
    ExactReference,
    ExactRepository,
    InsecureAcceptAnything,
    MatchExact,
    MatchRepository,
    Reject,
    RemapIdentity,
    Requirement,
    SignedBy,
    SigstoreAttested,
    SigstoreSigned,
    key_source,
    normalise,
)
from reconciler.trust.simplesigning import parse_payload

if TYPE_CHECKING:  # keys load cryptography: only when a key is read
    from reconciler.trust.keys import PublicKey

KeysFor = Callable[["SigstoreSigned | SigstoreAttested"], "tuple[PublicKey, ...]"]


@dataclass(frozen=True)
class KnownKey:
    """A key the policy names for another requirement, and where (`keyPath keys/tools.pub,
    scope registry.example.com/tools`): it names the signer of a signature no wanted key
    verifies."""

    key: PublicKey
    source: str


KnownKeys = Callable[[], "Sequence[KnownKey]"]


def _no_known() -> Sequence[KnownKey]:
    return ()


def _once(known: KnownKeys) -> KnownKeys:
    """`known` asked at most once per verdict (it reads key files), however many signatures."""
    found: list[Sequence[KnownKey]] = []

    def first() -> Sequence[KnownKey]:
        if not found:
            found.append(known())
        return found[0]

    return first


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str


@dataclass(frozen=True)
class ImageIdentity:
    """The image as the policy sees it: registry host, repository, and the tag it was asked
    for (None when it is referenced by digest alone)."""

    host: str
    repository: str
    tag: str | None = None

    @classmethod
    def of(cls, address: Address) -> ImageIdentity:
        return cls(address.location.authority, address.location.repository, address.tag)

    def reference(self, digest: Digest) -> Reference:
        host, repository = normalise(self.host, self.repository)
        if self.tag is not None:
            return Reference(host, repository, self.tag)
        return Reference(host, repository, None, digest)


@dataclass(frozen=True, order=True)
class _Failure:
    rank: int  # how far the signature got: higher says more
    reason: str


def verify(
    requirements: Sequence[Requirement],
    scope: str,
    image: ImageIdentity | Address,
    digest: Digest,
    signatures: Sequence[tuple[bytes, SignatureEntry]],
    keys_for: KeysFor,
    known: KnownKeys = _no_known,
) -> Verdict:
    """The verdict of `requirements` (the list of `scope`) on `image` at `digest`; `known`
    gives the policy's other keys, to name a stranger's signature."""
    identity = image if isinstance(image, ImageIdentity) else ImageIdentity.of(image)
    known = _once(known)
    if not requirements:
        return Verdict(False, f"policy scope {scope} has no requirements")
    reasons = []
    for requirement in requirements:
        verdict = _one(requirement, scope, identity, digest, signatures, keys_for, known)
        if not verdict.accepted:
            return verdict
        reasons.append(verdict.reason)
    return Verdict(True, "; ".join(dict.fromkeys(reasons)))


def _one(
    requirement: Requirement,
    scope: str,
    image: ImageIdentity,
    digest: Digest,
    signatures: Sequence[tuple[bytes, SignatureEntry]],
    keys_for: KeysFor,
    known: KnownKeys,
) -> Verdict:
    if isinstance(requirement, InsecureAcceptAnything):
        return Verdict(True, f"accepted without a signature by policy scope {scope}")
    if isinstance(requirement, Reject):
        return Verdict(False, f"rejected by policy scope {scope}")
    if isinstance(requirement, SigstoreAttested):  # checked on the attestations (attest.py)
        return Verdict(True, f"attestation required by policy scope {scope}")
    if isinstance(requirement, SignedBy):
        return Verdict(
            False,
            f"policy scope {scope} wants a GPG signature (signedBy, {key_source(requirement)}),"
            " which reconciler cannot verify",
        )
    keys = keys_for(requirement)
    if not keys:
        return Verdict(False, f"policy scope {scope} names no key")
    wants = f"policy scope {scope} wants {wanted(requirement, keys)}"
    if not signatures:
        return Verdict(False, f"no signature for {digest}; {wants}")
    failures = []
    for index, (payload, entry) in enumerate(signatures):
        outcome = _check(requirement, image, digest, payload, entry, keys, known)
        if not isinstance(outcome, _Failure):
            return Verdict(True, f"signed by {outcome} (policy scope {scope})")
        failures.append(_Failure(outcome.rank, f"{outcome.reason} (signature {index + 1})"))
    best = max(failures)
    return Verdict(False, f"{best.reason}; {wants}")


def wanted(requirement: SigstoreSigned, keys: Sequence[PublicKey]) -> str:
    """The keys a requirement wants and where the policy names them: `ECDSA P-256 key
    3f1c0e9a5b7d2468 (keyPath keys/base.pub)`."""
    return f"{' or '.join(k.described for k in keys)} ({key_source(requirement)})"


def _check(
    requirement: SigstoreSigned,
    image: ImageIdentity,
    digest: Digest,
    payload: bytes,
    entry: SignatureEntry,
    keys: tuple[PublicKey, ...],
    known: KnownKeys,
) -> PublicKey | _Failure:
    actual = Digest.of(payload, entry.payload_digest.algorithm)
    if actual != entry.payload_digest or len(payload) != entry.payload_size:
        return _Failure(
            0,
            f"payload blob {actual} ({len(payload)} bytes) does not match its layer"
            f" {entry.payload_digest} ({entry.payload_size} bytes)",
        )
    key = next((k for k in keys if k.verify(payload, entry.signature)), None)
    if key is None:
        return _Failure(1, signer(payload, entry.signature, known))
    signed = f"signed by {key.described}"
    try:
        claims = parse_payload(payload, "signed payload")
    except TrustError as exc:
        return _Failure(2, f"{signed}, but {exc}")
    if claims.digest != digest:
        return _Failure(3, f"{signed}, but for {claims.digest}, not {digest}")
    problem = identity_problem(requirement, image, digest, claims.reference)
    if problem is not None:
        return _Failure(4, f"{signed}, but {problem}")
    return key


def signer(payload: bytes, signature: bytes, known: KnownKeys) -> str:
    """Who made a signature no wanted key verifies: a key the policy names elsewhere, else
    the key type the signature's encoding shows."""
    for other in known():
        if other.key.verify(payload, signature):
            return f"signed by {other.key.described} ({other.source})"
    kind = signature_kind(signature)
    if kind is None:
        return f"the signature ({len(signature)} bytes) is not an ECDSA, RSA or Ed25519 signature"
    return f"signed by an unknown {kind} key (no key of the policy verifies it)"


# The longest DER INTEGER (with its sign byte) of an ECDSA signature on each curve.
_ECDSA_INTEGER = ((33, "ECDSA P-256"), (49, "ECDSA P-384"), (67, "ECDSA P-521"))


def signature_kind(signature: bytes) -> str | None:
    """The key type a signature's encoding shows, None when it is no signature cosign makes:
    ECDSA is a DER SEQUENCE of two INTEGERs no longer than the curve's order, Ed25519 is 64
    bytes, RSA (PKCS#1 v1.5 or PSS) is as long as the modulus."""
    sizes = _der_integer_pair(signature)
    if sizes is not None:
        return next((name for limit, name in _ECDSA_INTEGER if max(sizes) <= limit), None)
    if len(signature) == 64:
        return "Ed25519"
    bits = len(signature) * 8
    if 2048 <= bits <= 8192 and bits % 1024 == 0:
        return f"RSA-{bits}"
    return None


def _der_integer_pair(data: bytes) -> tuple[int, int] | None:
    """The lengths of the two INTEGERs of a DER `SEQUENCE { INTEGER, INTEGER }` that is all
    of `data`, else None."""
    if len(data) < 8 or data[0] != 0x30:
        return None
    length, at = _der_length(data, 1)
    if length is None or at + length != len(data):
        return None
    sizes = []
    for _ in range(2):
        if at >= len(data) or data[at] != 0x02:
            return None
        size, at = _der_length(data, at + 1)
        if size is None or size == 0 or at + size > len(data):
            return None
        sizes.append(size)
        at += size
    return (sizes[0], sizes[1]) if at == len(data) else None


def _der_length(data: bytes, at: int) -> tuple[int | None, int]:
    if at >= len(data):
        return None, at
    if data[at] < 0x80:
        return data[at], at + 1
    if data[at] == 0x81 and at + 1 < len(data):
        return data[at + 1], at + 2
    return None, at


def identity_problem(
    requirement: SigstoreSigned, image: ImageIdentity, digest: Digest, signed: str
) -> str | None:
    """None when the signed identity is acceptable for `image`, else why not."""
    try:
        claimed = Reference.parse(signed)
    except ReferenceError_:
        return f"identity {signed[:200]!r} is not an image reference"
    intended = image.reference(digest)
    rule = requirement.identity
    if isinstance(rule, MatchExact):
        ok = _exact(claimed, intended)
        expected = str(intended)
    elif isinstance(rule, MatchRepository):
        ok, expected = claimed.name == intended.name, intended.name
    elif isinstance(rule, ExactReference):
        wanted = Reference.parse(rule.docker_reference)
        ok, expected = _exact(claimed, wanted), str(wanted)
    elif isinstance(rule, ExactRepository):
        wanted_name = Reference.parse(rule.docker_repository).name
        ok, expected = claimed.name == wanted_name, wanted_name
    else:
        if isinstance(rule, RemapIdentity):
            intended = _remap(intended, rule)
        ok, expected = _repo_digest_or_exact(claimed, intended)
    if ok:
        return None
    return f"identity {claimed} is not {expected} (signedIdentity {rule.type})"


def _exact(claimed: Reference, intended: Reference) -> bool:
    if claimed.tag is None and claimed.digest is None:
        return False  # a repository alone (what cosign signs) never matches exactly
    return str(claimed) == str(intended)


def _repo_digest_or_exact(claimed: Reference, intended: Reference) -> tuple[bool, str]:
    if intended.tag is not None:
        return _exact(claimed, intended), str(intended)
    return claimed.name == intended.name, intended.name


def _remap(intended: Reference, rule: RemapIdentity) -> Reference:
    name = intended.name
    if name != rule.prefix and not name.startswith(rule.prefix + "/"):
        return intended
    remapped = rule.signed_prefix + name[len(rule.prefix) :]
    try:
        base = Reference.parse(remapped)
    except ReferenceError_:
        return intended
    return Reference(base.registry, base.repository, intended.tag, intended.digest)


def cache_key(
    digest: Digest,
    requirements: Sequence[Requirement],
    *,
    image: ImageIdentity | Address | None = None,
    keys_for: KeysFor | None = None,
) -> str:
    """A stable key for caching a verdict: the digest, each requirement as written (its rule,
    identity and key sources), the fingerprints of the keys it resolves to when `keys_for` is
    given (a key file replaced in place changes the key), and the image identity when given
    (identity rules depend on the repository and tag)."""
    parts: list[object] = [str(digest)]
    if image is not None:
        identity = image if isinstance(image, ImageIdentity) else ImageIdentity.of(image)
        parts.append([*normalise(identity.host, identity.repository), identity.tag])
    for requirement in requirements:
        parts.append(requirement.model_dump(mode="json", by_alias=True, exclude_none=True))
        if keys_for is not None and isinstance(requirement, (SigstoreSigned, SigstoreAttested)):
            parts.append(sorted(k.fingerprint for k in keys_for(requirement)))
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return f"{digest}/{hashlib.sha256(text.encode()).hexdigest()[:32]}"
