"""Local image stores: OCI layouts and docker-save archives."""

from __future__ import annotations

from pathlib import Path

from reconciler.local.dockerarchive import DockerArchive
from reconciler.local.store import LocalStore, OciLayout


def open_store(host: str) -> LocalStore:
    """The store a local host names (`oci:/abs/path`, `docker-archive:/abs/path`)."""
    transport, _, path = host.partition(":")
    if transport == "oci":
        return OciLayout(host, Path(path))
    return DockerArchive(host, Path(path))
