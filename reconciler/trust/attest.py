"""Whether an image's attestations satisfy a `sigstoreAttested` requirement: pure.

An attestation holds when one DSSE envelope of the `.att` manifest passes all of, in order
(nothing an unverified statement claims is read):

1. it is an envelope of payload type `application/vnd.in-toto+json`;
2. its signature over the pre-authentication encoding verifies with one of the keys;
3. its payload is an in-toto Statement v1 of the wanted `predicateType`;
4. one of its subjects is the image's digest;
5. for `builderIds` / `buildTypes`: the SLSA predicate's `runDetails.builder.id` and
   `buildDefinition.buildType` are among them.

When none passes, the reason is the one that got furthest, naming the keys the scope wants.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.errors import TrustError
from reconciler.oci.digest import Digest
from reconciler.trust.dsse import IN_TOTO_TYPE, parse_envelope, verifies
from reconciler.trust.policy import SigstoreAttested, key_source

if TYPE_CHECKING:
    from reconciler.trust.keys import PublicKey

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
MAX_ATTESTATIONS = 64  # envelopes read per image, the newest: a real .att holds a few


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    reason: str
    rank: int = 0


def wants(requirement: SigstoreAttested, keys: Sequence[PublicKey]) -> str:
    """What a requirement asks for: `an attestation of type T signed by K (keyPath ...),
    builder.id one of [...]`."""
    text = (
        f"an attestation of type {requirement.predicate_type} signed by "
        f"{' or '.join(k.described for k in keys)} ({key_source(requirement)})"
    )
    if requirement.builder_ids:
        text += f", builder.id one of {list(requirement.builder_ids)}"
    if requirement.build_types:
        text += f", buildType one of {list(requirement.build_types)}"
    return text


def check_attestations(
    requirement: SigstoreAttested,
    scope: str,
    digest: Digest,
    envelopes: Sequence[bytes],
    keys: Sequence[PublicKey],
) -> Outcome:
    """The verdict of one requirement on the image at `digest`, given the envelopes of its
    `.att` manifest that carry the requirement's predicate type."""
    wanted = f"policy scope {scope} wants {wants(requirement, keys)}"
    if not keys:
        return Outcome(False, f"policy scope {scope} names no key")
    if not envelopes:
        return Outcome(
            False, f"no attestation of type {requirement.predicate_type} for {digest}; {wanted}"
        )
    failures = [
        _check(requirement, digest, raw, keys, index)
        for index, raw in enumerate(envelopes[-MAX_ATTESTATIONS:])
    ]
    passed = next((f for f in failures if f.accepted), None)
    if passed is not None:
        return Outcome(True, f"{passed.reason} (policy scope {scope})")
    best = max(failures, key=lambda f: f.rank)
    return Outcome(False, f"{best.reason}; {wanted}")


def _check(
    requirement: SigstoreAttested,
    digest: Digest,
    raw: bytes,
    keys: Sequence[PublicKey],
    index: int,
) -> Outcome:
    where = f"attestation {index + 1}"
    try:
        parsed = parse_envelope(raw, where)
    except TrustError as exc:
        return Outcome(False, str(exc), 0)
    if parsed.payload_type != IN_TOTO_TYPE:
        return Outcome(False, f"{where}: payload type {parsed.payload_type!r}, not in-toto", 0)
    key = next((k for k in keys if verifies(parsed, k.verify)), None)
    if key is None:
        return Outcome(False, f"{where}: not signed by a key the scope names", 1)
    signed = f"{where}: signed by {key.described}"
    try:
        statement = json.loads(parsed.body)
        kind, predicate_type = statement["_type"], statement["predicateType"]
        subjects = statement["subject"]
        digests = {s["digest"].get(digest.algorithm) for s in subjects}
    except (ValueError, KeyError, TypeError, AttributeError):
        return Outcome(False, f"{signed}, but its payload is not an in-toto statement", 2)
    if kind != STATEMENT_V1 or predicate_type != requirement.predicate_type:
        return Outcome(False, f"{signed}, but it is a {predicate_type!r} statement", 2)
    if digest.hex not in digests:
        return Outcome(False, f"{signed}, but for another image, not {digest}", 3)
    problem = _predicate_problem(requirement, statement.get("predicate"))
    if problem is not None:
        return Outcome(False, f"{signed}, but {problem}", 4)
    return Outcome(True, f"attested ({requirement.predicate_type}) by {key.described}", 5)


def _predicate_problem(requirement: SigstoreAttested, predicate: Any) -> str | None:
    if not requirement.builder_ids and not requirement.build_types:
        return None
    try:
        builder = predicate["runDetails"]["builder"]["id"]
        build_type = predicate["buildDefinition"]["buildType"]
    except (KeyError, TypeError):
        return "its predicate has no runDetails.builder.id or buildDefinition.buildType"
    if requirement.builder_ids and builder not in requirement.builder_ids:
        return f"builder.id is {builder!r}"
    if requirement.build_types and build_type not in requirement.build_types:
        return f"buildType is {build_type!r}"
    return None
