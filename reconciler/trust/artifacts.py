"""Where signatures and attached artifacts live in a registry, and the documents that hold them.

- cosign's tag scheme (specs/SIGNATURE_SPEC.md, "Tag-based Discovery"): the signatures of
  `sha256:HEX` are in the same repository under the tag `sha256-HEX.sig` (attestations `.att`,
  SBOMs `.sbom`). The tag holds one image manifest; each signature is a layer of media type
  `application/vnd.dev.cosign.simplesigning.v1+json` whose blob is the signed payload and whose
  annotation `dev.cosignproject.cosign/signature` is the base64 signature (optional
  `dev.sigstore.cosign/certificate`, `/chain`, `/bundle` annotations ride along untouched).
  Several signers share the manifest: a new signature is appended, the others are kept in
  order.
- The OCI 1.1 referrers fallback (distribution-spec, "Referrers Tag Schema"): a registry
  without the referrers API holds, under the tag `sha256-HEX`, an image index whose
  descriptors (with `artifactType` and annotations) are the manifests whose `subject` is
  `sha256:HEX`.
- An attached artifact (`attach:`) is an OCI 1.1 image manifest with `artifactType`, `subject`,
  the empty config (`application/vnd.oci.empty.v1+json`, the two bytes `{}`) and the files as
  layers.

Everything here is pure: the caller fetches and pushes. Documents are parsed with
`reconciler.oci.document` (strict JSON, size limits) and written with `canonical_json`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from reconciler.errors import DocumentError, TrustError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument, parse_document
from reconciler.oci.models import Descriptor, Index, Manifest, canonical_json
from reconciler.trust.simplesigning import MAX_PAYLOAD

if TYPE_CHECKING:  # keys load cryptography and PyNaCl; tag names need neither
    from reconciler.trust.keys import PublicKey

SIG_SUFFIX, ATT_SUFFIX, SBOM_SUFFIX = "sig", "att", "sbom"
SIMPLESIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"

# A signature manifest with more layers than this is refused (and never written): a real one
# holds a few signers, and each layer costs a blob fetch and a verification.
MAX_LAYERS = 1000
MAX_SIGNATURE = 16 * 1024  # bytes, decoded: an RSA-8192 signature is 1 KiB
MAX_REFERRERS = 10_000

_ARTIFACT_TAG = re.compile(r"(sha256-[0-9a-f]{64}|sha512-[0-9a-f]{128})(\.[A-Za-z0-9_-]{1,64})?")


def tag_for(digest: Digest, suffix: str | None) -> str:
    """`sha256-HEX.SUFFIX` (cosign's tags), or `sha256-HEX` (the referrers fallback tag)."""
    base = f"{digest.algorithm}-{digest.hex}"
    return f"{base}.{suffix}" if suffix else base


def is_artifact_tag(tag: str) -> bool:
    """Whether a tag is one of the above (a signature, attestation, SBOM or referrers tag)
    rather than an image's own tag."""
    return _ARTIFACT_TAG.fullmatch(tag) is not None


@dataclass(frozen=True)
class SignatureEntry:
    """One signature of a signature manifest: its payload layer's facts."""

    payload_digest: Digest
    payload_size: int
    signature: bytes
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class Blob:
    digest: Digest
    media_type: str
    data: bytes
    annotations: Mapping[str, str] | None = None  # for a layer descriptor (a file's title)

    @classmethod
    def of(cls, data: bytes, media_type: str, annotations: Mapping[str, str] | None = None) -> Blob:
        return cls(Digest.of(data), media_type, data, annotations)

    def descriptor(self) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=len(self.data),
            annotations=dict(self.annotations) if self.annotations else None,
        )


class SignatureManifest(NamedTuple):
    """What `signature_manifest` returns: the manifest bytes and the blobs to push (the config
    and the new payloads). `kept` lists what the manifest references that is not in `blobs`
    (the other signers' payloads), for the caller to check they are present."""

    raw: bytes
    blobs: tuple[Blob, ...]

    @property
    def kept(self) -> tuple[Descriptor, ...]:
        manifest = _load_manifest(self.raw, "signature manifest").manifest
        pushed = {blob.digest for blob in self.blobs}
        return tuple(d for d in (manifest.config, *manifest.layers) if d.digest not in pushed)


def load_artifact_manifest(raw: bytes, where: str) -> ManifestDocument:
    """A `.sig` or `.att` manifest: an image manifest of at most MAX_LAYERS layers."""
    return _load_manifest(raw, where)


def _load_manifest(raw: bytes, where: str) -> ManifestDocument:
    try:
        document = parse_document(raw, what=where)
    except DocumentError as exc:
        raise TrustError(str(exc)) from None
    if not isinstance(document, ManifestDocument):
        raise TrustError(f"{where}: an index where a signature manifest was expected")
    if len(document.manifest.layers) > MAX_LAYERS:
        raise TrustError(
            f"{where}: {len(document.manifest.layers)} layers, over the {MAX_LAYERS} limit"
        )
    return document


def _decode_signature(value: str, where: str) -> bytes:
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: {SIGNATURE_ANNOTATION} is not valid base64") from None
    if not signature:
        raise TrustError(f"{where}: {SIGNATURE_ANNOTATION} is empty")
    if len(signature) > MAX_SIGNATURE:
        raise TrustError(f"{where}: the signature is {len(signature)} bytes; refused")
    return signature


def _entry(layer: Descriptor, where: str) -> SignatureEntry:
    if layer.size > MAX_PAYLOAD:
        raise TrustError(f"{where}: payload of {layer.size} bytes, over the {MAX_PAYLOAD} limit")
    annotations = layer.annotations or {}
    value = annotations.get(SIGNATURE_ANNOTATION)
    if value is None:
        raise TrustError(f"{where}: no {SIGNATURE_ANNOTATION} annotation")
    return SignatureEntry(
        layer.digest, layer.size, _decode_signature(value, where), dict(annotations)
    )


def parse_signature_manifest(raw: bytes, where: str) -> tuple[SignatureEntry, ...]:
    """The signatures of a `.sig` manifest (OCI or Docker v2), in layer order. Layers of other
    media types are not signatures and are skipped; a malformed signature layer is an error
    naming `where` and the layer's index."""
    manifest = _load_manifest(raw, where).manifest
    return tuple(
        _entry(layer, f"{where}: layer {i}")
        for i, layer in enumerate(manifest.layers)
        if layer.media_type == SIMPLESIGNING_TYPE
    )


def read_signature_manifest(
    raw: bytes, where: str
) -> tuple[tuple[SignatureEntry, ...], tuple[str, ...]]:
    """The signatures of a `.sig` manifest that others may also write: a malformed signature
    layer (another signer's) is skipped, and why is returned beside the good ones, so that it
    never hides a valid signature nor stops our own from being added."""
    manifest = _load_manifest(raw, where).manifest
    entries: list[SignatureEntry] = []
    problems: list[str] = []
    for i, layer in enumerate(manifest.layers):
        if layer.media_type != SIMPLESIGNING_TYPE:
            continue
        try:
            entries.append(_entry(layer, f"{where}: layer {i}"))
        except TrustError as exc:
            problems.append(str(exc))
    return tuple(entries), tuple(problems)


def has_signature(entries: Sequence[SignatureEntry], payload: bytes, key: PublicKey) -> bool:
    """Whether `entries` already hold a signature by `key` over exactly `payload`. ECDSA
    signatures are randomised, so signing again never gives the same bytes: check this before
    signing, or every run appends one more layer."""
    digest = Digest.of(payload)
    return any(
        entry.payload_digest == digest
        and entry.payload_size == len(payload)
        and key.verify(payload, entry.signature)
        for entry in entries
    )


def _signature_key(layer: Descriptor) -> tuple[Digest, bytes] | None:
    value = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
    if layer.media_type != SIMPLESIGNING_TYPE or value is None:
        return None
    try:
        return layer.digest, base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def signature_config(layers: Sequence[Descriptor]) -> bytes:
    """The config cosign writes for a signature manifest (go-containerregistry's empty image
    with the payloads as layers): they are uncompressed, so each diff_id is the layer digest.
    The creation time is the zero time, so the same signatures give the same bytes."""
    document = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(layer.digest) for layer in layers]},
        "config": {},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signature_manifest(
    existing: bytes | None,
    new: Sequence[tuple[bytes, bytes]],
    carried: Sequence[Descriptor] = (),
) -> SignatureManifest:
    """The `.sig` manifest holding `existing`'s signatures, then the `carried` layers (another
    image's signatures copied along, descriptors kept whole: certificates and bundles too) it
    lacks, then the new (payload, signature) pairs. A signature already present (same payload
    digest, same signature) is not added twice; when nothing is new, `existing` comes back
    unchanged with no blobs. Carried layers' blobs are the caller's to copy (see `kept`)."""
    base = _load_manifest(existing, "existing signature manifest") if existing else None
    layers = list(base.manifest.layers) if base else []
    seen = {key for key in map(_signature_key, layers) if key is not None}
    added = False
    for layer in carried:
        key = _signature_key(layer)
        if layer.media_type != SIMPLESIGNING_TYPE or key is None or key in seen:
            continue
        seen.add(key)
        layers.append(layer)
        added = True
    blobs: dict[Digest, Blob] = {}
    for payload, signature in new:
        if len(payload) > MAX_PAYLOAD:
            raise TrustError(f"payload of {len(payload)} bytes, over the {MAX_PAYLOAD} limit")
        digest = Digest.of(payload)
        if (digest, signature) in seen:
            continue
        seen.add((digest, signature))
        annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode("ascii")}
        blob = Blob(digest, SIMPLESIGNING_TYPE, payload)
        blobs.setdefault(digest, blob)
        layers.append(
            Descriptor(
                media_type=SIMPLESIGNING_TYPE,
                digest=digest,
                size=len(payload),
                annotations=annotations,
            )
        )
    if base is not None and not blobs and not added:
        return SignatureManifest(base.raw, ())
    raw, config = layers_manifest(base, layers, "signature manifest")
    return SignatureManifest(raw, (config, *blobs.values()))


def layers_manifest(
    base: ManifestDocument | None, layers: Sequence[Descriptor], what: str
) -> tuple[bytes, Blob]:
    """A `.sig` or `.att` manifest of `layers` (in `base`'s media type and annotations, when
    it replaces one) and its config, as cosign writes them."""
    if len(layers) > MAX_LAYERS:
        raise TrustError(f"a {what} of {len(layers)} layers would pass {MAX_LAYERS}")
    media_type = base.media_type if base else mt.OCI_MANIFEST
    config = Blob.of(signature_config(layers), mt.format_of(media_type).config_type)
    manifest = Manifest(
        schema_version=2,
        media_type=media_type,
        config=config.descriptor(),
        layers=tuple(layers),
        annotations=base.manifest.annotations if base else None,
    )
    return canonical_json(manifest), config


def referrers_index(existing: bytes | None, descriptors: Sequence[Descriptor]) -> bytes:
    """The referrers fallback index: `existing`'s descriptors, then the new ones it does not
    list yet (by digest). `existing` comes back unchanged when nothing is new."""
    listed = list(parse_referrers_index(existing, "existing referrers index")) if existing else []
    known = {d.digest for d in listed}
    added = False
    for descriptor in descriptors:
        if descriptor.digest not in known:
            known.add(descriptor.digest)
            listed.append(descriptor)
            added = True
    if existing is not None and not added:
        return existing
    if len(listed) > MAX_REFERRERS:
        raise TrustError(f"a referrers index of {len(listed)} entries would pass {MAX_REFERRERS}")
    index = Index(schema_version=2, media_type=mt.OCI_INDEX, manifests=tuple(listed))
    return canonical_json(index)


def parse_referrers_index(raw: bytes, where: str) -> tuple[Descriptor, ...]:
    try:
        document = parse_document(raw, what=where)
    except DocumentError as exc:
        raise TrustError(str(exc)) from None
    if not isinstance(document, IndexDocument) or document.media_type != mt.OCI_INDEX:
        raise TrustError(f"{where}: not an OCI image index")
    if len(document.index.manifests) > MAX_REFERRERS:
        raise TrustError(f"{where}: more than {MAX_REFERRERS} referrers")
    return document.index.manifests


def empty_blob() -> Blob:
    return Blob.of(EMPTY_DATA, EMPTY_TYPE)


def artifact_manifest(
    subject: Descriptor,
    artifact_type: str,
    files: Sequence[Blob],
    annotations: Mapping[str, str] | None = None,
) -> tuple[bytes, tuple[Blob, ...]]:
    """An OCI 1.1 artifact manifest about `subject`: the manifest bytes, and the blobs it
    references (the empty config first, then the files). With no files, the one layer is the
    empty descriptor (image-spec manifest.md, "Guidelines for Artifact Usage")."""
    if not artifact_type or "/" not in artifact_type:
        raise TrustError(f"artifactType {artifact_type!r} is not a media type")
    empty = empty_blob()
    layers = tuple(f.descriptor() for f in files) or (empty.descriptor(),)
    manifest = Manifest(
        schema_version=2,
        media_type=mt.OCI_MANIFEST,
        artifact_type=artifact_type,
        config=empty.descriptor(),
        layers=layers,
        subject=Descriptor(media_type=subject.media_type, digest=subject.digest, size=subject.size),
        annotations=dict(annotations) if annotations else None,
    )
    unique = {empty.digest: empty}
    for blob in files:
        unique.setdefault(blob.digest, blob)
    return canonical_json(manifest), tuple(unique.values())
