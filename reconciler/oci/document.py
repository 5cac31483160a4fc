"""Manifests, indexes and configs kept with the exact bytes they were read or written as.

A `ManifestDocument`/`IndexDocument` pairs the raw bytes with the parsed model and the digest of
those bytes. Parsing rejects what a registry or a tool could read two ways: a document whose
`mediaType` disagrees with the Content-Type it came with, or one that has both `layers` and
`manifests` (seeds/002: "a document that could be read as both must be rejected").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from reconciler.errors import DocumentError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.models import Descriptor, ImageConfig, Index, Manifest, canonical_json

MANIFEST_SIZE_LIMIT = 4 * 1024 * 1024
CONFIG_SIZE_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class ManifestDocument:
    raw: bytes
    digest: Digest
    media_type: str
    manifest: Manifest

    def descriptor(self, **fields: Any) -> Descriptor:
        return Descriptor(
            media_type=self.media_type, digest=self.digest, size=len(self.raw), **fields
        )


@dataclass(frozen=True)
class IndexDocument:
    raw: bytes
    digest: Digest
    media_type: str
    index: Index

    def descriptor(self, **fields: Any) -> Descriptor:
        return Descriptor(
            media_type=self.media_type, digest=self.digest, size=len(self.raw), **fields
        )


Document = ManifestDocument | IndexDocument


@dataclass(frozen=True)
class ConfigDocument:
    raw: bytes
    digest: Digest
    media_type: str
    config: ImageConfig

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.raw))


def load_json(raw: bytes, what: str, limit: int) -> Any:
    """Untrusted JSON, refused unless it is plain: UTF-8 without a BOM, no NaN or Infinity, no
    key twice in one object (parsers disagree on which copy wins), nesting bounded (the
    decoder's recursion guard), at most `limit` bytes."""
    if len(raw) > limit:
        raise DocumentError(f"{what} is {len(raw)} bytes, over the {limit}-byte limit")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{what} is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{what} nests too deeply; refused") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise json.JSONDecodeError(f"key {twice!r} appears twice", "", 0)
    return value


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", "", 0)


def _load_object(raw: bytes, what: str, limit: int) -> dict[str, Any]:
    value = load_json(raw, what, limit)
    if not isinstance(value, dict):
        raise DocumentError(f"{what} is not a JSON object")
    return value


def _strip_parameters(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip() or None


def parse_document(
    raw: bytes,
    content_type: str | None = None,
    expected_digest: Digest | None = None,
    what: str = "manifest",
) -> Document:
    """Parse a manifest or an index from exact bytes, verifying them against a digest."""
    data = _load_object(raw, what, MANIFEST_SIZE_LIMIT)
    digest = Digest.of(raw, expected_digest.algorithm if expected_digest else "sha256")
    if expected_digest is not None and digest != expected_digest:
        raise DocumentError(f"{what}: digest mismatch: expected {expected_digest}, got {digest}")
    if "manifests" in data and ("layers" in data or "config" in data):
        raise DocumentError(
            f"{what} has both 'manifests' and 'layers'/'config': ambiguous, refused"
        )
    declared = data.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise DocumentError(f"{what}: mediaType is not a string")
    header = _strip_parameters(content_type)
    if header in ("application/json", "application/octet-stream", ""):
        header = None  # generic types say nothing (OCI layouts, some proxies)
    if declared and header and declared != header:
        raise DocumentError(
            f"{what}: mediaType {declared!r} disagrees with Content-Type {header!r}"
        )
    media_type = declared or header
    if data.get("schemaVersion") != 2:
        raise DocumentError(
            f"{what}: schemaVersion {data.get('schemaVersion')!r} is not supported"
            " (only schema 2; Docker schema 1 is deprecated)"
        )
    if media_type is None:
        media_type = mt.OCI_INDEX if "manifests" in data else mt.OCI_MANIFEST
    try:
        if media_type in mt.INDEX_TYPES:
            if "manifests" not in data:
                raise DocumentError(f"{what}: {media_type} without 'manifests'")
            return IndexDocument(raw, digest, media_type, Index.model_validate(data))
        if media_type in mt.MANIFEST_TYPES:
            if "layers" not in data or "config" not in data:
                raise DocumentError(f"{what}: {media_type} without 'config' and 'layers'")
            return ManifestDocument(raw, digest, media_type, Manifest.model_validate(data))
    except ValidationError as exc:
        raise DocumentError(f"{what} ({media_type}) is malformed: {first_error(exc)}") from None
    raise DocumentError(f"{what}: unsupported media type {media_type!r}")


def parse_config(
    raw: bytes, media_type: str, expected_digest: Digest | None = None
) -> ConfigDocument:
    data = _load_object(raw, "image config", CONFIG_SIZE_LIMIT)
    digest = Digest.of(raw, expected_digest.algorithm if expected_digest else "sha256")
    if expected_digest is not None and digest != expected_digest:
        raise DocumentError(
            f"image config: digest mismatch: expected {expected_digest}, got {digest}"
        )
    try:
        config = ImageConfig.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(f"image config {digest} is malformed: {first_error(exc)}") from None
    return ConfigDocument(raw, digest, media_type, config)


def make_manifest_document(manifest: Manifest) -> ManifestDocument:
    raw = canonical_json(manifest)
    assert manifest.media_type is not None  # noqa: S101 - we always write it
    return ManifestDocument(raw, Digest.of(raw), manifest.media_type, manifest)


def make_index_document(index: Index) -> IndexDocument:
    raw = canonical_json(index)
    assert index.media_type is not None  # noqa: S101 - we always write it
    return IndexDocument(raw, Digest.of(raw), index.media_type, index)


def make_config_document(config: ImageConfig, media_type: str) -> ConfigDocument:
    raw = canonical_json(config)
    return ConfigDocument(raw, Digest.of(raw), media_type, config)


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]
