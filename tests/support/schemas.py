"""The OCI image-spec JSON schemas (Debian golang-github-opencontainers-image-spec-dev).

The schema files name each other relatively ("defs.json", "content-descriptor.json") against
ids under https://opencontainers.org/schema/ and .../schema/image/, so every file is
registered under both prefixes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMA_DIR = Path("/usr/share/gocode/src/github.com/opencontainers/image-spec/schema")
PREFIXES = ("https://opencontainers.org/schema/", "https://opencontainers.org/schema/image/")
SCHEMAS = {
    "manifest": "image-manifest-schema.json",
    "index": "image-index-schema.json",
    "config": "config-schema.json",
    "layout": "image-layout-schema.json",
}


@cache
def _registry() -> Registry:
    if not SCHEMA_DIR.is_dir():
        raise RuntimeError(
            f"{SCHEMA_DIR} missing: apt-get install golang-github-opencontainers-image-spec-dev"
        )
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        resource = Resource.from_contents(
            json.loads(path.read_text()), default_specification=DRAFT4
        )
        resources.extend((prefix + path.name, resource) for prefix in PREFIXES)
    return Registry().with_resources(resources)


def validate(kind: str, document: bytes | dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `document` is not a valid OCI `kind`."""
    value = json.loads(document) if isinstance(document, bytes) else document
    schema = json.loads((SCHEMA_DIR / SCHEMAS[kind]).read_text())
    validator = jsonschema.Draft4Validator(schema, registry=_registry())
    validator.validate(value)
