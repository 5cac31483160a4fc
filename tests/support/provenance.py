"""The tests' witness for provenance attestations: reads a `.att` manifest from a registry,
verifies each DSSE envelope's signature over its pre-authentication encoding with the test's
own crypto (tests/support/cosign.py), decodes the in-toto statement and validates it against
the in-toto Statement v1 and SLSA Provenance v1 schemas kept beside this file (written from
the published specifications). Imports nothing from reconciler."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import cosign

HERE = Path(__file__).parent / "intoto"
DSSE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SLSA_V1 = "https://slsa.dev/provenance/v1"


@dataclass(frozen=True)
class Attestation:
    layer: dict[str, Any]
    envelope: dict[str, Any]
    statement: dict[str, Any]
    verified: bool  # the envelope's signature verifies with the key asked about


@cache
def _schemas() -> tuple[jsonschema.Draft202012Validator, jsonschema.Draft202012Validator]:
    documents = {p.name: json.loads(p.read_text()) for p in HERE.glob("*.schema.json")}
    registry: Registry = Registry()
    for name, document in documents.items():
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        registry = registry.with_resource(document["$id"], resource)
        registry = registry.with_resource(name, resource)
    checker = jsonschema.FormatChecker()
    statement = jsonschema.Draft202012Validator(
        documents["statement-v1.schema.json"], registry=registry, format_checker=checker
    )
    provenance = jsonschema.Draft202012Validator(
        documents["slsa-provenance-v1.schema.json"], registry=registry, format_checker=checker
    )
    return statement, provenance


def validate(statement: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError unless `statement` is an in-toto Statement v1 whose
    predicate is a valid SLSA Provenance v1."""
    statement_schema, provenance_schema = _schemas()
    statement_schema.validate(statement)
    assert statement["predicateType"] == SLSA_V1
    provenance_schema.validate(statement["predicate"])


def statement_schema_check(statement: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError unless `statement` is an in-toto Statement v1 (any
    predicate)."""
    _schemas()[0].validate(statement)


def attestations(host: str, repo: str, digest: str, key: cosign.KeyPair) -> list[Attestation]:
    """Every DSSE layer of `host/repo`'s `.att` manifest for `digest` (none when the tag is
    missing), each decoded, with whether `key` signed it."""
    reader = cosign.RegistryReader(host)
    found = reader.manifest(repo, cosign.signature_tag(digest, "att"))
    if found is None:
        return []
    manifest = json.loads(found[0])
    out = []
    for layer in manifest["layers"]:
        if layer["mediaType"] != DSSE:
            continue
        envelope = json.loads(reader.blob(repo, layer["digest"]))
        body = base64.b64decode(envelope["payload"], validate=True)
        message = cosign.dsse_pae(envelope["payloadType"], body)
        verified = envelope["payloadType"] == IN_TOTO and any(
            cosign.verify_signature(key.public, message, base64.b64decode(s["sig"]))
            for s in envelope["signatures"]
        )
        out.append(Attestation(layer, envelope, json.loads(body), verified))
    return out
