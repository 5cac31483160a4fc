"""Media types of OCI and Docker v2 schema 2 documents and blobs, and how they map."""

from __future__ import annotations

from enum import StrEnum

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

# Sent on every manifest request. distribution 2.8 answers 404 for an OCI document, or
# converts a manifest list, when the client does not list the type it holds.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])


class Format(StrEnum):
    """The family of media types an image is written in."""

    OCI = "oci"
    DOCKER = "docker"

    @property
    def manifest_type(self) -> str:
        return OCI_MANIFEST if self is Format.OCI else DOCKER_MANIFEST

    @property
    def index_type(self) -> str:
        return OCI_INDEX if self is Format.OCI else DOCKER_MANIFEST_LIST

    @property
    def config_type(self) -> str:
        return OCI_CONFIG if self is Format.OCI else DOCKER_CONFIG


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


# (format, compression) -> layer media type; None where the format has no such type.
_LAYER_TYPES: dict[tuple[Format, Compression], str] = {
    (Format.OCI, Compression.NONE): OCI_LAYER,
    (Format.OCI, Compression.GZIP): OCI_LAYER_GZIP,
    (Format.OCI, Compression.ZSTD): OCI_LAYER_ZSTD,
    (Format.DOCKER, Compression.NONE): DOCKER_LAYER,
    (Format.DOCKER, Compression.GZIP): DOCKER_LAYER_GZIP,
}

_COMPRESSION_OF: dict[str, Compression] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_LAYER_NONDIST: Compression.NONE,
    OCI_LAYER_NONDIST_GZIP: Compression.GZIP,
    DOCKER_LAYER: Compression.NONE,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_FOREIGN_LAYER_GZIP: Compression.GZIP,
}

_FOREIGN_TYPES = {
    Format.OCI: OCI_LAYER_NONDIST_GZIP,
    Format.DOCKER: DOCKER_FOREIGN_LAYER_GZIP,
}


def format_of(media_type: str) -> Format:
    """Which family a manifest or index media type belongs to."""
    if media_type in (OCI_MANIFEST, OCI_INDEX):
        return Format.OCI
    if media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
        return Format.DOCKER
    raise ValueError(f"not a manifest or index media type: {media_type!r}")


def format_of_layer(media_type: str) -> Format | None:
    """Which family a layer media type is written in (None for types of neither)."""
    if media_type.startswith("application/vnd.oci."):
        return Format.OCI
    if media_type.startswith("application/vnd.docker."):
        return Format.DOCKER
    return None


def compression_of(layer_media_type: str) -> Compression | None:
    """The compression a layer media type declares, or None if it is not a known layer type."""
    return _COMPRESSION_OF.get(layer_media_type)


def is_foreign_layer(media_type: str) -> bool:
    return media_type in (DOCKER_FOREIGN_LAYER_GZIP, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST)


def layer_media_type(fmt: Format, compression: Compression) -> str:
    media_type = _LAYER_TYPES.get((fmt, compression))
    if media_type is None:
        raise ValueError(f"{compression} layers have no {fmt} media type")
    return media_type


def convert_layer_media_type(media_type: str, fmt: Format) -> str:
    """The same layer bytes, described in another format's vocabulary."""
    compression = compression_of(media_type)
    if compression is None:
        raise ValueError(f"unknown layer media type {media_type!r}")
    if is_foreign_layer(media_type):
        if compression is not Compression.GZIP:
            raise ValueError(f"{media_type} has no {fmt} equivalent")
        return _FOREIGN_TYPES[fmt]
    return layer_media_type(fmt, compression)
