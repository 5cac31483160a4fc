from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.errors import DocumentError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import (
    MANIFEST_SIZE_LIMIT,
    IndexDocument,
    ManifestDocument,
    make_manifest_document,
    parse_config,
    parse_document,
)
from reconciler.oci.models import Manifest

D = "sha256:" + "d" * 64
DESC = {"mediaType": mt.OCI_CONFIG, "digest": D, "size": 2}
MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_MANIFEST,
    "config": DESC,
    "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D, "size": 3}],
}
INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_INDEX,
    "manifests": [
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": D,
            "size": 5,
            "platform": {"os": "linux", "architecture": "amd64"},
        }
    ],
}


def raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def test_parse_keeps_exact_bytes_and_their_digest() -> None:
    data = b'{ "schemaVersion" : 2, ' + raw(MANIFEST)[1:].replace(b'"schemaVersion": 2, ', b"")
    document = parse_document(data, mt.OCI_MANIFEST)
    assert isinstance(document, ManifestDocument)
    assert document.raw == data and document.digest == Digest.of(data)
    assert document.manifest.layers[0].size == 3


@pytest.mark.parametrize(
    ("value", "content_type", "kind"),
    [
        (MANIFEST, mt.OCI_MANIFEST, ManifestDocument),
        (INDEX, mt.OCI_INDEX, IndexDocument),
        ({k: v for k, v in MANIFEST.items() if k != "mediaType"}, None, ManifestDocument),
        ({k: v for k, v in INDEX.items() if k != "mediaType"}, "application/json", IndexDocument),
        ({**MANIFEST, "mediaType": mt.DOCKER_MANIFEST}, mt.DOCKER_MANIFEST, ManifestDocument),
        ({**INDEX, "mediaType": mt.DOCKER_MANIFEST_LIST}, None, IndexDocument),
        (
            {k: v for k, v in MANIFEST.items() if k != "mediaType"},
            mt.DOCKER_MANIFEST,
            ManifestDocument,
        ),
    ],
)
def test_parse_accepts(value: dict[str, Any], content_type: str | None, kind: type) -> None:
    assert isinstance(parse_document(raw(value), content_type), kind)


@pytest.mark.parametrize(
    ("value", "content_type", "message"),
    [
        ({**MANIFEST, "manifests": INDEX["manifests"]}, None, "ambiguous"),
        ({**INDEX, "layers": []}, None, "ambiguous"),
        (MANIFEST, mt.OCI_INDEX, "disagrees"),
        ({**MANIFEST, "mediaType": mt.OCI_INDEX}, None, "without 'manifests'"),
        ({**INDEX, "mediaType": mt.OCI_MANIFEST}, None, "without 'config'"),
        ({**MANIFEST, "schemaVersion": 1}, None, "schemaVersion"),
        ({**MANIFEST, "mediaType": "application/x-other"}, None, "unsupported media type"),
        ({**MANIFEST, "config": {**DESC, "digest": "sha256:nope"}}, None, "malformed"),
        ({**MANIFEST, "config": {**DESC, "size": -1}}, None, "malformed"),
    ],
)
def test_parse_rejects(value: dict[str, Any], content_type: str | None, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_document(raw(value), content_type)


def test_parse_rejects_non_objects_and_oversize() -> None:
    for data in (b"[]", b"not json", b"\xff\xfe"):
        with pytest.raises(DocumentError):
            parse_document(data)
    with pytest.raises(DocumentError, match="limit"):
        parse_document(b" " * (MANIFEST_SIZE_LIMIT + 1))


def test_parse_verifies_the_expected_digest() -> None:
    data = raw(MANIFEST)
    parse_document(data, expected_digest=Digest.of(data))
    with pytest.raises(DocumentError, match="digest mismatch"):
        parse_document(data, expected_digest=Digest.parse(D))


def test_canonical_serialization_is_stable_and_drops_nothing_known() -> None:
    manifest = Manifest.model_validate({**MANIFEST, "annotations": {"b": "2", "a": "1"}})
    first = make_manifest_document(manifest)
    again = make_manifest_document(Manifest.model_validate(json.loads(first.raw)))
    assert first.raw == again.raw and first.digest == again.digest
    assert b" " not in first.raw and first.raw.index(b'"a"') < first.raw.index(b'"b"')


def test_unknown_fields_survive_a_round_trip() -> None:
    manifest = Manifest.model_validate({**MANIFEST, "x-vendor": {"keep": True}})
    assert json.loads(make_manifest_document(manifest).raw)["x-vendor"] == {"keep": True}


def test_config_parse() -> None:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [D]},
        "config": {"Env": ["A=1"]},
        "unknown": 1,
    }
    document = parse_config(raw(config), mt.OCI_CONFIG)
    assert document.config.rootfs.diff_ids == (Digest.parse(D),)
    with pytest.raises(DocumentError):
        parse_config(raw({"os": "linux"}), mt.OCI_CONFIG)
