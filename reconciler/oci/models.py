"""The OCI/Docker documents as frozen models: Descriptor, Manifest, Index, ImageConfig.

Wire names are aliases (`media_type` <-> `mediaType`). Documents read from registries may
carry fields this code does not know; `extra="allow"` keeps them so that a document we
rewrite loses nothing. A model is never hashed: digests come from exact bytes (see
`reconciler.oci.document`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reconciler.oci.digest import Digest
from reconciler.oci.platform import Platform


class WireModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True, defer_build=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


def canonical_json(model: WireModel) -> bytes:
    """The one serialization reconciler writes: sorted keys, no insignificant whitespace.

    Sorting makes the bytes independent of dict order in the base documents, so the same
    inputs give the same digest on every machine.
    """
    return json.dumps(
        model.to_wire(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


# A descriptor's size is a fact to check against the bytes; one past this is a lie, refused
# before any byte is read (4 TiB: far over any real layer).
SIZE_MAX = 1 << 42


class Descriptor(WireModel):
    # Strict scalars: untrusted JSON with a size of "12" or true is malformed, not coerced.
    media_type: str = Field(alias="mediaType", strict=True)
    digest: Digest
    size: int = Field(ge=0, le=SIZE_MAX, strict=True)
    urls: tuple[str, ...] | None = None
    annotations: dict[str, str] | None = None
    data: str | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")


class Manifest(WireModel):
    schema_version: int = Field(alias="schemaVersion", strict=True)
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class Index(WireModel):
    schema_version: int = Field(alias="schemaVersion", strict=True)
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class LayoutIndex(WireModel):
    """index.json of an OCI image layout (image-spec image-layout.md): the layout's images."""

    # Required by image-layout.md, but layouts written by hand often leave it out, and
    # containers/image reads them all the same; a version other than 2 is refused.
    schema_version: int | None = Field(default=None, alias="schemaVersion", strict=True)
    manifests: tuple[Descriptor, ...]


class ContainerConfig(WireModel):
    """The `config` object of an image config (the runtime defaults)."""

    user: str | None = Field(default=None, alias="User")
    exposed_ports: dict[str, dict[str, Any]] | None = Field(default=None, alias="ExposedPorts")
    env: tuple[str, ...] | None = Field(default=None, alias="Env")
    entrypoint: tuple[str, ...] | None = Field(default=None, alias="Entrypoint")
    cmd: tuple[str, ...] | None = Field(default=None, alias="Cmd")
    volumes: dict[str, dict[str, Any]] | None = Field(default=None, alias="Volumes")
    working_dir: str | None = Field(default=None, alias="WorkingDir")
    labels: dict[str, str] | None = Field(default=None, alias="Labels")
    stop_signal: str | None = Field(default=None, alias="StopSignal")


class RootFS(WireModel):
    type: str = "layers"
    diff_ids: tuple[Digest, ...] = ()


class History(WireModel):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(WireModel):
    created: str | None = None
    author: str | None = None
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: tuple[str, ...] | None = Field(default=None, alias="os.features")
    variant: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS
    history: tuple[History, ...] | None = None
