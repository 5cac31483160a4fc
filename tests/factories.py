"""Hand-built values for the pure steps: specs, resolved bases and layers, without I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from reconciler.model.observed import ObservedImage, ObservedTag, Presence
from reconciler.model.sources import ResolvedBase, ResolvedImage, ResolvedLayer
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import (
    IndexDocument,
    ManifestDocument,
    parse_config,
    parse_document,
)
from reconciler.oci.location import Address, Location
from reconciler.oci.reference import Reference
from reconciler.spec import ImageSpecBody, LoadedSpec
from reconciler.yamlsource import YamlDocument

BASE = "r.io/library/base:1"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def make_spec(name: str = "app", **body: Any) -> LoadedSpec:
    body.setdefault("base", BASE)
    body.setdefault("targets", ["t.io/team/app:1"])
    document = YamlDocument(f"{name}.yaml", 1, 1, {}, {})
    return LoadedSpec(name, f"{name}.yaml", 1, ImageSpecBody.model_validate(body), document)


def make_image(
    arch: str,
    layers: list[int],
    *,
    variant: str | None = None,
    fmt: mt.Format = mt.Format.OCI,
    history: bool = True,
    annotations: dict[str, str] | None = None,
    cmd: list[str] | None = None,
) -> ResolvedImage:
    config: dict[str, Any] = {
        "created": "2020-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "LANG=C.UTF-8"],
            "Cmd": cmd or ["sh"],
            "ExposedPorts": {"22/tcp": {}},
            "Labels": {"base": "yes"},
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(1000 + n) for n in layers]},
    }
    if variant:
        config["variant"] = variant
    if history:
        config["history"] = [{"created_by": f"base {n}"} for n in layers]
    config_raw = json.dumps(config).encode()
    config_doc = parse_config(config_raw, fmt.config_type)
    layer_type = mt.layer_media_type(fmt, mt.Compression.GZIP)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": fmt.manifest_type,
        "config": {
            "mediaType": fmt.config_type,
            "digest": str(config_doc.digest),
            "size": len(config_raw),
        },
        "layers": [{"mediaType": layer_type, "digest": digest(n), "size": n} for n in layers],
    }
    if annotations:
        manifest["annotations"] = annotations
    document = parse_document(json.dumps(manifest).encode())
    assert isinstance(document, ManifestDocument)
    platform: dict[str, str] = {"os": "linux", "architecture": arch}
    if variant:
        platform["variant"] = variant
    entry = document.descriptor(platform=platform)
    return ResolvedImage(document, config_doc, entry)


def make_base(
    images: list[ResolvedImage],
    *,
    index: bool = True,
    fmt: mt.Format = mt.Format.OCI,
    attachments: list[tuple[dict[str, Any], ManifestDocument]] = (),  # type: ignore[assignment]
    filtered: bool = False,
    annotations: dict[str, str] | None = None,
    reference: str = BASE,
) -> ResolvedBase:
    ref = Reference.parse(reference)
    if not index:
        image = images[0]
        single = ResolvedImage(image.manifest, image.config, None)
        return ResolvedBase(Location.of(ref), str(ref), str(ref), image.manifest, (single,))
    entries = [
        json.loads(i.entry.model_dump_json(by_alias=True, exclude_none=True))  # type: ignore[union-attr]
        for i in images
    ]
    entries += [entry for entry, _ in attachments]
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": fmt.index_type, "manifests": entries}
    if annotations:
        body["annotations"] = annotations
    root = parse_document(json.dumps(body).encode())
    assert isinstance(root, IndexDocument)
    attached = tuple(
        (root.index.manifests[len(images) + i], document)
        for i, (_, document) in enumerate(attachments)
    )
    return ResolvedBase(
        Location.of(ref), str(ref), str(ref), root, tuple(images), attached, filtered
    )


def make_layer(
    n: int,
    spec: LoadedSpec,
    index: int = 0,
    compression: mt.Compression = mt.Compression.GZIP,
) -> ResolvedLayer:
    layer_spec = spec.body.layers[index]
    return ResolvedLayer(
        layer_spec,
        layer_spec.source,
        layer_spec.layer_digest,
        n,
        compression,
        Digest.parse(digest(5000 + n)),
    )


def make_observed(
    tags: Iterable[tuple[Address, Digest | None]],
    present: Iterable[tuple[Location, frozenset[Digest]]] = (),
) -> ObservedImage:
    """An ObservedImage from (target, digest) and (destination, digests) pairs."""
    return ObservedImage(
        tuple(ObservedTag(t, d) for t, d in tags), tuple(Presence(p, d) for p, d in present)
    )
