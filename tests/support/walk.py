"""Walk what a tag names in a registry, with plain httpx (not reconciler's client): every child
manifest of an index, every config and layer blob of a manifest, must be there."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field

import httpx

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_INDEXES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_FOREIGN = ("foreign", "nondistributable")


@dataclass
class Walk:
    tag_present: bool = False
    root: str | None = None  # digest the tag names
    manifests: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)


def walk(
    host: str,
    repository: str,
    tag: str,
    *,
    scheme: str = "http",
    verify: str | bool = True,
    headers: dict[str, str] | None = None,
) -> Walk:
    out = Walk()
    with httpx.Client(
        base_url=f"{scheme}://{host}/v2/{repository}",
        timeout=30,
        verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
        headers=headers or {},
    ) as http:
        response = http.get(f"/manifests/{tag}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return out
        response.raise_for_status()
        out.tag_present = True
        out.root = response.headers["Docker-Content-Digest"]
        _check(http, response.content, response.headers["Content-Type"], out)
    return out


def _check(http: httpx.Client, raw: bytes, media_type: str, out: Walk) -> None:
    out.manifests += 1
    body = json.loads(raw)
    if media_type in _INDEXES:
        for child in body["manifests"]:
            response = http.get(f"/manifests/{child['digest']}", headers={"Accept": ACCEPT})
            if response.status_code != 200:
                out.problems.append(f"child manifest {child['digest']} -> {response.status_code}")
                continue
            _check(http, response.content, response.headers["Content-Type"], out)
        return
    for blob in [body["config"], *body.get("layers", [])]:
        if any(word in blob["mediaType"] for word in _FOREIGN):
            continue
        response = http.head(f"/blobs/{blob['digest']}")
        out.blobs += 1
        if response.status_code != 200:
            out.problems.append(f"blob {blob['digest']} -> {response.status_code}")
        elif int(response.headers["Content-Length"]) != blob["size"]:
            out.problems.append(f"blob {blob['digest']} has the wrong size")
