"""The sources a spec resolves to: its base (manifests, configs, index entries) and its added
layers (size, compression, diff_id). Values only: reconciler.resolve reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import ConfigDocument, Document, ManifestDocument
from reconciler.oci.location import Location
from reconciler.oci.models import Descriptor
from reconciler.oci.platform import PlatformKey
from reconciler.oci.reference import Reference
from reconciler.spec import LayerSpec


@dataclass(frozen=True)
class ResolvedImage:
    """One platform of the base: its manifest and config, and its entry in the base index."""

    manifest: ManifestDocument
    config: ConfigDocument
    entry: Descriptor | None

    @property
    def platform(self) -> PlatformKey:
        if self.entry is not None and self.entry.platform is not None:
            return self.entry.platform.key()
        cfg = self.config.config
        return PlatformKey(cfg.os, cfg.architecture, cfg.variant)


@dataclass(frozen=True)
class ResolvedBase:
    source: Location  # where its blobs are read from
    name: str | None  # for org.opencontainers.image.base.name: the reference, as written
    label: str  # how messages name it
    root: Document
    images: tuple[ResolvedImage, ...]
    # Index entries that are manifests but not runnable images (buildx attestations): a
    # mirror carries them along, a changed image drops them (they attest the old children).
    attachments: tuple[tuple[Descriptor, ManifestDocument], ...] = ()
    # True when `platforms` left out some of the base's images.
    filtered: bool = False


@dataclass(frozen=True)
class ResolvedLayer:
    spec: LayerSpec
    source: Reference | None  # None: built here from a local path (`local`)
    digest: Digest
    size: int
    compression: mt.Compression
    diff_id: Digest
    local: Path | None = None

    @property
    def label(self) -> str:
        return str(self.source) if self.source is not None else f"path {self.spec.path}"
