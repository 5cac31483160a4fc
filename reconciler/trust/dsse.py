"""DSSE envelopes and cosign's attestation manifests (`sha256-<hex>.att`).

- DSSE v1 (secure-systems-lab/dsse, protocol.md): the signature is over the pre-authentication
  encoding `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`, LEN the byte length in ASCII
  decimal, never over the JSON. The envelope is `{"payloadType", "payload" (base64 of the
  body), "signatures": [{"keyid", "sig" (base64)}]}`.
- cosign's attestations (cosign `attest`, specs/ATTESTATION_SPEC.md): under the tag
  `sha256-<hex>.att` one image manifest whose layers are envelopes of media type
  `application/vnd.dsse.envelope.v1+json`, each annotated with its `predicateType` and an empty
  `dev.cosignproject.cosign/signature`. Several writers share the manifest; ours are replaced
  when they change (as `cosign attest --replace` does for its predicate type), theirs are kept.

Pure: the caller fetches the existing manifest and its envelopes, and pushes what comes back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import NamedTuple

from reconciler.errors import TrustError
from reconciler.oci.digest import Digest
from reconciler.oci.models import Descriptor
from reconciler.trust.artifacts import (
    SIGNATURE_ANNOTATION,
    Blob,
    layers_manifest,
    load_artifact_manifest,
)

DSSE_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_TYPE = "application/vnd.in-toto+json"
PREDICATE_ANNOTATION = "predicateType"
MAX_ENVELOPE = 4 * 1024 * 1024  # bytes: a provenance statement is a few KiB


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(
    body: bytes, sign: Callable[[bytes], bytes], payload_type: str = IN_TOTO_TYPE
) -> bytes:
    """A DSSE envelope of `body` with one signature (`sign` over its PAE), as cosign writes
    it: compact JSON, `keyid` empty."""
    signature = sign(pae(payload_type, body))
    document = {
        "payloadType": payload_type,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return json.dumps(document, separators=(",", ":")).encode()


class Envelope(NamedTuple):
    payload_type: str
    body: bytes
    signatures: tuple[bytes, ...]


def parse_envelope(raw: bytes, where: str) -> Envelope:
    """An envelope's parts; TrustError naming `where` when it is not one."""
    if len(raw) > MAX_ENVELOPE:
        raise TrustError(f"{where}: {len(raw)} bytes, over the {MAX_ENVELOPE}-byte limit")
    try:
        document = json.loads(raw)
        kind = document["payloadType"]
        body = base64.b64decode(document["payload"], validate=True)
        signatures = tuple(
            base64.b64decode(s["sig"], validate=True) for s in document["signatures"]
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise TrustError(f"{where}: not a DSSE envelope ({type(exc).__name__})") from None
    if not isinstance(kind, str):
        raise TrustError(f"{where}: not a DSSE envelope (payloadType is not a string)")
    return Envelope(kind, body, signatures)


def verifies(parsed: Envelope, verify: Callable[[bytes, bytes], bool]) -> bool:
    """Whether one of the envelope's signatures verifies (`verify(message, signature)`)."""
    message = pae(parsed.payload_type, parsed.body)
    return any(verify(message, signature) for signature in parsed.signatures)


class AttestationManifest(NamedTuple):
    raw: bytes
    blobs: tuple[Blob, ...]  # the config and the new envelope


def attestation_manifest(
    existing: bytes | None,
    replaced: Sequence[Digest],
    new: Sequence[tuple[bytes, str]],
) -> AttestationManifest:
    """The `.att` manifest: `existing`'s layers but those in `replaced` (our earlier
    envelopes that changed), then each `new` (envelope, predicate type). The config lists the
    layers as cosign's does; an envelope already there is not added twice."""
    base = load_artifact_manifest(existing, "existing attestation manifest") if existing else None
    gone = set(replaced)
    layers = [d for d in (base.manifest.layers if base else ()) if d.digest not in gone]
    blobs = []
    for data, predicate_type in new:
        blob = Blob.of(data, DSSE_TYPE)
        if any(d.digest == blob.digest for d in layers):
            continue
        blobs.append(blob)
        layers.append(
            Descriptor(
                media_type=DSSE_TYPE,
                digest=blob.digest,
                size=len(data),
                annotations={SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate_type},
            )
        )
    raw, config = layers_manifest(base, layers, "attestation manifest")
    return AttestationManifest(raw, (config, *blobs))
