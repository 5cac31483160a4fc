"""The payload cosign signs: a "simple signing" JSON document naming an image digest.

    {"critical":{"identity":{"docker-reference":REF},
                 "image":{"docker-manifest-digest":DIGEST},
                 "type":"cosign container image signature"},
     "optional":ANNOTATIONS-or-null}

cosign (sigstore's payload package) writes it with Go's encoding/json: keys in that order, no
whitespace, `optional` null without annotations (map keys sorted). `critical.identity` holds a
repository for cosign (`host/ns/repo`) and a full reference for containers/image.

Reading follows containers/image, the strictest reader: exactly the keys above in `critical`
(no more, none missing, each once), `type` compared exactly (cosign compares it exactly too),
a valid digest, `optional` an object or null. Payloads are small; over `MAX_PAYLOAD` is refused
before parsing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import DocumentError, ReferenceError_, TrustError
from reconciler.oci.digest import Digest
from reconciler.oci.document import load_json

MAX_PAYLOAD = 64 * 1024
COSIGN_SIGNATURE_TYPE = "cosign container image signature"


@dataclass(frozen=True)
class Payload:
    reference: str  # critical.identity.docker-reference, as signed
    digest: Digest  # critical.image.docker-manifest-digest
    type: str
    optional: dict[str, Any] | None


def signing_payload(
    reference: str, digest: Digest, annotations: Mapping[str, str] | None = None
) -> bytes:
    """The exact bytes to sign for `digest`, claiming identity `reference`."""
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": str(digest)},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": dict(sorted(annotations.items())) if annotations else None,
    }
    # Go's encoding/json escapes <, >, & and U+2028/9 in strings and keeps the rest as is.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def _exact_object(value: Any, keys: tuple[str, ...], what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrustError(f"{where}: {what} is not a JSON object")
    missing = [k for k in keys if k not in value]
    extra = sorted(k for k in value if k not in keys)
    if missing:
        raise TrustError(f"{where}: {what} has no {missing[0]!r}")
    if extra:
        raise TrustError(f"{where}: {what} has an unknown field {extra[0]!r}")
    return value


def _string(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise TrustError(f"{where}: {what} is not a string")
    return value


def parse_payload(raw: bytes, where: str) -> Payload:
    """A signed payload's claims, refused unless the document is exactly the format."""
    if len(raw) > MAX_PAYLOAD:
        raise TrustError(f"{where}: payload is {len(raw)} bytes, over the {MAX_PAYLOAD} limit")
    try:
        document = load_json(raw, f"{where}: payload", MAX_PAYLOAD)
    except DocumentError as exc:
        raise TrustError(str(exc)) from None
    top = _exact_object(document, ("critical", "optional"), "the payload", where)
    critical = _exact_object(top["critical"], ("identity", "image", "type"), "critical", where)
    kind = _string(critical["type"], "critical.type", where)
    if kind != COSIGN_SIGNATURE_TYPE:
        raise TrustError(f"{where}: critical.type {kind[:80]!r} is not {COSIGN_SIGNATURE_TYPE!r}")
    image = _exact_object(critical["image"], ("docker-manifest-digest",), "critical.image", where)
    digest_text = _string(
        image["docker-manifest-digest"], "critical.image.docker-manifest-digest", where
    )
    try:
        digest = Digest.parse(digest_text)
    except ReferenceError_ as exc:
        raise TrustError(f"{where}: critical.image.docker-manifest-digest: {exc}") from None
    identity = _exact_object(
        critical["identity"], ("docker-reference",), "critical.identity", where
    )
    reference = _string(identity["docker-reference"], "critical.identity.docker-reference", where)
    optional = top["optional"]
    if optional is not None and not isinstance(optional, dict):
        raise TrustError(f"{where}: optional is neither an object nor null")
    return Payload(reference, digest, kind, optional)
