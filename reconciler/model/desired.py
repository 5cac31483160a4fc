"""Build the desired state of a spec: a pure function of the spec and its resolved sources.

No I/O here. The same (spec, base manifests, layer digests) give the same bytes, and so the
same digests, on every machine (DESIGN.md section 1). Rules implemented (section 2):

- A spec that adds nothing mirrors its base byte for byte (filtered only by `platforms`).
- An index base gives an index (children in the base's order); a manifest base a manifest.
- An added layer appends its diff_id to `rootfs.diff_ids` and one `history` entry.
- `org.opencontainers.image.base.name` is the base reference, fully qualified, as written;
  `.base.digest` is each platform's base manifest digest, and the base index digest on the index.
- Spec annotations go on every manifest written and on the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import ResolveError
from reconciler.model.sources import ResolvedBase, ResolvedImage, ResolvedLayer
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import (
    ConfigDocument,
    IndexDocument,
    ManifestDocument,
    make_config_document,
    make_index_document,
    make_manifest_document,
)
from reconciler.oci.location import Address, Location
from reconciler.oci.models import (
    ContainerConfig,
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    RootFS,
)
from reconciler.oci.platform import Platform, PlatformKey
from reconciler.spec import ConfigSpec, ImageSpecBody, LoadedSpec

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
# buildx attestation manifests name the image they attest with this annotation.
ATTESTED_DIGEST = "vnd.docker.reference.digest"
SCRATCH_CREATED = "1970-01-01T00:00:00Z"
SCRATCH_PLATFORM = PlatformKey("linux", "amd64")


@dataclass(frozen=True)
class DesiredBlob:
    descriptor: Descriptor
    role: str  # "layer" or "config"
    source: Location | None = None  # None: generated here, `data` or `file` holds it
    data: bytes | None = None
    file: Path | None = None  # a layer built from local files

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def foreign(self) -> bool:
        """Non-distributable layers (with `urls`) are never pushed (image-spec layer rules)."""
        return bool(self.descriptor.urls) and mt.is_foreign_layer(self.descriptor.media_type)


@dataclass(frozen=True)
class DesiredManifest:
    document: ManifestDocument
    platform: PlatformKey | None
    blobs: tuple[DesiredBlob, ...]  # config first, then layers


@dataclass(frozen=True)
class DesiredImage:
    """Everything a spec's targets must hold: blobs, manifests, optional index, tags."""

    name: str
    root: ManifestDocument | IndexDocument
    manifests: tuple[DesiredManifest, ...]
    targets: tuple[Address, ...]
    mirror: bool

    @property
    def index(self) -> IndexDocument | None:
        return self.root if isinstance(self.root, IndexDocument) else None


def build_desired(
    spec: LoadedSpec, base: ResolvedBase | None, layers: Sequence[ResolvedLayer]
) -> DesiredImage:
    body = spec.body
    if base is None:
        return _build_scratch(spec, layers)
    source = base.source
    base_format = mt.format_of(base.root.media_type)
    if body.adds_nothing and body.format in (None, base_format):
        return _build_mirror(spec, base, source)
    fmt = body.format or mt.Format.OCI
    manifests = tuple(
        _build_image(body, image, layers, fmt, base, spec.file) for image in base.images
    )
    if isinstance(base.root, ManifestDocument):
        return DesiredImage(spec.name, manifests[0].document, manifests, body.targets, False)
    index = _build_index(body, base.root, base.images, manifests, fmt, base)
    return DesiredImage(spec.name, index, manifests, body.targets, False)


def _base_blobs(document: ManifestDocument, source: Location) -> tuple[DesiredBlob, ...]:
    manifest = document.manifest
    layers = (DesiredBlob(layer, "layer", source) for layer in manifest.layers)
    return (DesiredBlob(manifest.config, "config", source), *layers)


def _build_mirror(spec: LoadedSpec, base: ResolvedBase, source: Location) -> DesiredImage:
    kept = {image.manifest.digest for image in base.images}
    attachments = [
        (entry, document)
        for entry, document in base.attachments
        if not base.filtered
        or (entry.annotations or {}).get(ATTESTED_DIGEST) in {str(d) for d in kept}
    ]
    manifests = tuple(
        DesiredManifest(image.manifest, image.platform, _base_blobs(image.manifest, source))
        for image in base.images
    ) + tuple(
        DesiredManifest(document, None, _base_blobs(document, source))
        for _, document in attachments
    )
    root: ManifestDocument | IndexDocument = base.root
    if isinstance(base.root, IndexDocument) and base.filtered:
        kept |= {entry.digest for entry, _ in attachments}
        index = base.root.index.model_copy(
            update={
                "media_type": base.root.media_type,
                "manifests": tuple(e for e in base.root.index.manifests if e.digest in kept),
            }
        )
        root = make_index_document(index)
    return DesiredImage(spec.name, root, manifests, spec.body.targets, True)


def _applies(layer: ResolvedLayer, platform: PlatformKey) -> bool:
    wanted = layer.spec.platforms
    return wanted is None or any(p.matches(platform) for p in wanted)


def _added_blob(layer: ResolvedLayer, fmt: mt.Format, file: str) -> DesiredBlob:
    """An added layer as a blob of `fmt`, read from where the spec says it lives."""
    media_type = layer.spec.media_type
    try:
        if media_type is None or mt.format_of_layer(media_type) is not fmt:
            media_type = mt.layer_media_type(fmt, layer.compression)
    except ValueError as exc:
        raise ResolveError(f"{file}: layer {layer.label}: {exc}") from None
    descriptor = Descriptor(media_type=media_type, digest=layer.digest, size=layer.size)
    if layer.source is None:
        return DesiredBlob(descriptor, "layer", file=layer.local)
    return DesiredBlob(descriptor, "layer", Location.of(layer.source))


def _history_entry(layer: ResolvedLayer, created: str | None) -> History:
    return History(created=created, created_by=layer.spec.comment or f"layer {layer.digest}")


def _make_manifest(
    fmt: mt.Format, blobs: Sequence[DesiredBlob], annotations: dict[str, str]
) -> ManifestDocument:
    """The manifest of `blobs` (config first), serialized once."""
    fields: dict[str, Any] = {
        "schema_version": 2,
        "media_type": fmt.manifest_type,
        "config": blobs[0].descriptor,
        "layers": tuple(blob.descriptor for blob in blobs[1:]),
    }
    if annotations:
        fields["annotations"] = annotations
    return make_manifest_document(Manifest(**fields))


def _make_index(
    fmt: mt.Format, entries: Sequence[Descriptor], annotations: dict[str, str]
) -> IndexDocument:
    fields: dict[str, Any] = {
        "schema_version": 2,
        "media_type": fmt.index_type,
        "manifests": tuple(entries),
    }
    if annotations:
        fields["annotations"] = annotations
    return make_index_document(Index(**fields))


def _build_image(
    body: ImageSpecBody,
    image: ResolvedImage,
    layers: Sequence[ResolvedLayer],
    fmt: mt.Format,
    base: ResolvedBase,
    file: str,
) -> DesiredManifest:
    source = base.source
    platform = image.platform
    added = [layer for layer in layers if _applies(layer, platform)]
    base_manifest = image.manifest.manifest
    annotations = _annotations(base_manifest.annotations, body, base.name, image.manifest.digest)
    unchanged = (
        not added
        and body.config is None
        and body.created is None
        and annotations == (base_manifest.annotations or {})
        and mt.format_of(image.manifest.media_type) is fmt
    )
    if unchanged:
        return DesiredManifest(image.manifest, platform, _base_blobs(image.manifest, source))

    config_doc = _build_config(image.config, body, added, fmt)
    if config_doc.raw == image.config.raw:  # only the media type may differ: same bytes
        config_blob = DesiredBlob(config_doc.descriptor(), "config", source)
    else:
        config_blob = DesiredBlob(config_doc.descriptor(), "config", None, config_doc.raw)
    blobs = [config_blob]
    for base_layer in base_manifest.layers:
        try:
            converted = mt.convert_layer_media_type(base_layer.media_type, fmt)
        except ValueError as exc:
            raise ResolveError(f"{file}: base {base.label}: {exc}") from None
        blobs.append(
            DesiredBlob(base_layer.model_copy(update={"media_type": converted}), "layer", source)
        )
    blobs.extend(_added_blob(layer, fmt, file) for layer in added)
    document = _make_manifest(fmt, blobs, annotations)
    return DesiredManifest(document, platform, tuple(blobs))


def _annotations(
    inherited: dict[str, str] | None,
    body: ImageSpecBody,
    base_name: str | None,
    base_digest: Digest,
) -> dict[str, str]:
    merged = {k: v for k, v in (inherited or {}).items() if k not in (BASE_NAME, BASE_DIGEST)}
    merged.update(body.annotations)
    if body.base_annotations:
        if base_name is not None:  # a local base that records no registry name has none
            merged[BASE_NAME] = base_name
        merged[BASE_DIGEST] = str(base_digest)
    return merged


def _build_config(
    base: ConfigDocument, body: ImageSpecBody, added: Sequence[ResolvedLayer], fmt: mt.Format
) -> ConfigDocument:
    config = base.config
    if not added and body.config is None and body.created is None:
        return ConfigDocument(base.raw, base.digest, fmt.config_type, config)
    created = body.created or config.created
    history = list(config.history or ())
    if added and not history and base.config.rootfs.diff_ids:
        # Loaders check non-empty history entries against layers: give the base's layers theirs.
        history = [History(created=created, created_by="(base layer)")] * len(
            base.config.rootfs.diff_ids
        )
    history.extend(_history_entry(layer, created) for layer in added)
    update: dict[str, Any] = {
        "rootfs": RootFS(
            type=config.rootfs.type,
            diff_ids=config.rootfs.diff_ids + tuple(layer.diff_id for layer in added),
        ),
    }
    if history:
        update["history"] = tuple(history)
    if created is not None:
        update["created"] = created
    if body.config is not None:
        update["config"] = merge_container_config(config.config, body.config)
    new = config.model_copy(update=update)
    return make_config_document(new, fmt.config_type)


def merge_container_config(base: ContainerConfig | None, spec: ConfigSpec) -> ContainerConfig:
    """The spec's config fields over the base's: env and labels by key, ports added."""
    current = base or ContainerConfig()
    update: dict[str, Any] = {}
    if spec.env:
        env = list(current.env or ())
        positions = {item.split("=", 1)[0]: i for i, item in enumerate(env)}
        for name, value in spec.env.items():
            if name in positions:
                env[positions[name]] = f"{name}={value}"
            else:
                positions[name] = len(env)
                env.append(f"{name}={value}")
        update["env"] = tuple(env)
    if spec.entrypoint is not None:
        update["entrypoint"] = spec.entrypoint
        if spec.cmd is None:
            update["cmd"] = None  # as a Dockerfile ENTRYPOINT resets an inherited CMD
    if spec.cmd is not None:
        update["cmd"] = spec.cmd
    if spec.working_dir is not None:
        update["working_dir"] = spec.working_dir
    if spec.user is not None:
        update["user"] = spec.user
    if spec.exposed_ports:
        ports = dict(current.exposed_ports or {})
        for port in spec.exposed_ports:
            ports.setdefault(port if "/" in port else f"{port}/tcp", {})
        update["exposed_ports"] = ports
    if spec.labels:
        update["labels"] = {**(current.labels or {}), **spec.labels}
    return current.model_copy(update=update)


def _build_index(
    body: ImageSpecBody,
    base: IndexDocument,
    images: Sequence[ResolvedImage],
    manifests: Sequence[DesiredManifest],
    fmt: mt.Format,
    resolved: ResolvedBase,
) -> IndexDocument:
    entries = []
    for image, manifest in zip(images, manifests, strict=True):
        assert image.entry is not None  # noqa: S101 - an index base gives entries
        entries.append(
            image.entry.model_copy(
                update={
                    "media_type": manifest.document.media_type,
                    "digest": manifest.document.digest,
                    "size": len(manifest.document.raw),
                }
            )
        )
    return _make_index(
        fmt, entries, _annotations(base.index.annotations, body, resolved.name, base.digest)
    )


def _build_scratch(spec: LoadedSpec, layers: Sequence[ResolvedLayer]) -> DesiredImage:
    body = spec.body
    fmt = body.format or mt.Format.OCI
    created = body.created or SCRATCH_CREATED
    manifests = []
    for platform in body.platforms or (SCRATCH_PLATFORM,):
        added = [layer for layer in layers if _applies(layer, platform)]
        config_fields: dict[str, Any] = {
            "created": created,
            "architecture": platform.architecture,
            "os": platform.os,
            "variant": platform.variant,
            "rootfs": RootFS(diff_ids=tuple(layer.diff_id for layer in added)),
            "history": tuple(_history_entry(layer, created) for layer in added),
        }
        if body.config is not None:
            config_fields["config"] = merge_container_config(None, body.config)
        config_doc = make_config_document(ImageConfig(**config_fields), fmt.config_type)
        blobs = [
            DesiredBlob(config_doc.descriptor(), "config", None, config_doc.raw),
            *(_added_blob(layer, fmt, spec.file) for layer in added),
        ]
        document = _make_manifest(fmt, blobs, dict(body.annotations))
        manifests.append(DesiredManifest(document, platform, tuple(blobs)))
    if len(manifests) == 1:
        return DesiredImage(spec.name, manifests[0].document, tuple(manifests), body.targets, False)
    entries = [
        m.document.descriptor(
            platform=Platform(os=p.os, architecture=p.architecture, variant=p.variant)
        )
        for m, p in zip(manifests, body.platforms or (), strict=True)
    ]
    index = _make_index(fmt, entries, dict(body.annotations))
    return DesiredImage(spec.name, index, tuple(manifests), body.targets, False)


@dataclass(frozen=True)
class ImageParts:
    """What a sink must hold for a desired image, in the order that keeps it whole: blobs, then
    per-platform manifests, then the index (DESIGN.md section 7). Every sink walks this one
    value: a registry or a layout through the plan (less what it holds), an archive whole."""

    blobs: tuple[DesiredBlob, ...]  # each distributable blob once, in manifest order
    manifests: tuple[DesiredManifest, ...]
    index: IndexDocument | None

    @property
    def documents(self) -> tuple[ManifestDocument | IndexDocument, ...]:
        """The manifests' and the index's bytes, children first."""
        children = tuple(m.document for m in self.manifests)
        return children if self.index is None else (*children, self.index)


def artifact_image(
    name: str,
    root: ManifestDocument | IndexDocument,
    target: Address | None,
    blobs: Sequence[DesiredBlob] = (),
    children: Sequence[DesiredManifest] = (),
) -> DesiredImage:
    """An artifact pushed beside an image under a tag of its own (a cosign `.sig` manifest over
    its blobs, or a referrers index over its referrer manifests), planned as an image is;
    `target` None for an archive, which names it by tag alone."""
    targets = (target,) if target is not None else ()
    if isinstance(root, ManifestDocument):
        return DesiredImage(
            name, root, (DesiredManifest(root, None, tuple(blobs)),), targets, False
        )
    return DesiredImage(name, root, tuple(children), targets, False)


def image_parts(desired: DesiredImage, present: frozenset[Digest] = frozenset()) -> ImageParts:
    """The parts a sink lacks, given the digests it holds. A manifest it holds vouches for its
    blobs (a store accepts a manifest only over its blobs); its blobs are left out with it.
    Non-distributable layers (with `urls`) are never part of it."""
    manifests = tuple(m for m in desired.manifests if m.document.digest not in present)
    seen: set[Digest] = set()
    blobs: list[DesiredBlob] = []
    for manifest in manifests:
        for blob in manifest.blobs:
            if blob.digest not in seen and not blob.foreign:
                seen.add(blob.digest)
                blobs.append(blob)
    index = (
        desired.index if desired.index is not None and desired.index.digest not in present else None
    )
    return ImageParts(tuple(blobs), manifests, index)
