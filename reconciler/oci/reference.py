"""Image references, with the docker reference grammar (distribution/reference).

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]            (a DNS name, IPv4, or [IPv6])
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

The first component is a registry host only when it contains "." or ":", is "localhost", or
has an uppercase letter; otherwise the reference lives on docker.io, and a one-component
docker.io repository is under `library/`. Every reference is kept fully qualified.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reconciler.errors import ReferenceError_
from reconciler.oci.digest import Digest

DEFAULT_REGISTRY = "docker.io"
_LEGACY_DEFAULT_REGISTRIES = frozenset({"index.docker.io", "registry-1.docker.io"})
NAME_TOTAL_MAX = 255
TAG_MAX = 128

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)


@dataclass(frozen=True, order=True)
class Repository:
    """A repository of a registry: where blobs and manifests are read from or pushed to."""

    registry: str
    repository: str

    def __str__(self) -> str:
        # A local store (an OCI layout, an archive) is one repository: its name says it all.
        return f"{self.registry}/{self.repository}" if self.repository else self.registry

    @classmethod
    def of(cls, reference: Reference) -> Repository:
        return cls(reference.registry, reference.repository)


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference: registry, repository, and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, value: str) -> Reference:
        if not isinstance(value, str) or not value:
            raise ReferenceError_("empty image reference")
        if value != value.strip() or any(c.isspace() for c in value):
            raise ReferenceError_(f"invalid reference {value!r}: contains whitespace")
        rest, digest = value, None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except ReferenceError_ as exc:
                raise ReferenceError_(f"invalid reference {value!r}: {exc}") from None
        tag = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if len(tag) > TAG_MAX:
                raise ReferenceError_(
                    f"invalid reference {value!r}: tag longer than {TAG_MAX} characters"
                )
            if not _TAG.fullmatch(tag):
                raise ReferenceError_(f"invalid reference {value!r}: invalid tag {tag!r}")
        registry, repository = _split_domain(rest, value)
        if len(rest) > NAME_TOTAL_MAX:
            raise ReferenceError_(
                f"invalid reference {value!r}: name longer than {NAME_TOTAL_MAX} characters"
            )
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest (a local store's name alone)."""
        return f"{self.registry}/{self.repository}" if self.repository else self.registry

    @property
    def identifier(self) -> str:
        """What goes after `/manifests/` in a URL: the digest when known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is None:
            raise ReferenceError_(f"reference {self} has neither a tag nor a digest")
        return self.tag

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Reference:
            if isinstance(value, Reference):
                return value
            try:
                return cls.parse(value)
            except ReferenceError_ as exc:
                raise ValueError(str(exc)) from None

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(min_length=1),
            serialization=core_schema.to_string_ser_schema(),
        )

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str, original: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    is_domain = sep and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if is_domain:
        registry, repository = first, remainder
        if not _DOMAIN.fullmatch(registry):
            raise ReferenceError_(f"invalid reference {original!r}: invalid registry {registry!r}")
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry in _LEGACY_DEFAULT_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not repository:
        raise ReferenceError_(f"invalid reference {original!r}: empty repository")
    for component in repository.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise ReferenceError_(
                f"invalid reference {original!r}: invalid repository component {component!r}"
                " (lowercase letters, digits and . _ __ - separators)"
            )
    return registry, repository


LOCAL_TRANSPORTS = ("oci", "docker-archive")


def is_local(host: str) -> bool:
    """True for the `registry` of a local store: `oci:/abs/path`, `docker-archive:/abs/path`."""
    return host.startswith(tuple(f"{t}:" for t in LOCAL_TRANSPORTS))


@dataclass(frozen=True)
class LocalSource:
    """`oci:PATH[:TAG]` or `docker-archive:PATH[:NAME:TAG]`, as skopeo writes them.

    The path ends at the first ':' after the transport (as in skopeo, a path cannot hold one);
    the rest selects the image: an OCI layout's tag, or an archive's NAME:TAG.
    """

    transport: str
    path: str
    selector: str | None = None

    @classmethod
    def parse(cls, value: str) -> LocalSource | None:
        """The local source `value` names, or None when it names no local transport."""
        transport, sep, rest = value.partition(":")
        if not sep or transport not in LOCAL_TRANSPORTS:
            return None
        path, sep, selector = rest.partition(":")
        if not path:
            raise ReferenceError_(f"invalid reference {value!r}: {transport}: needs a path")
        if sep and not selector:
            raise ReferenceError_(f"invalid reference {value!r}: empty selector after the path")
        if any(c.isspace() or c == "\0" for c in selector):
            raise ReferenceError_(f"invalid reference {value!r}: the selector has whitespace")
        if transport == "docker-archive" and selector:
            ref = Reference.parse(selector)
            if ref.tag is None or ref.digest is not None:
                raise ReferenceError_(
                    f"invalid reference {value!r}: select an archive's image by NAME:TAG"
                )
        return cls(transport, path, selector or None)

    def host(self, base: Path) -> str:
        """The store's key: its transport and absolute path (relative paths are from `base`)."""
        return f"{self.transport}:{os.path.normpath((base / self.path).absolute())}"

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.selector}" if self.selector else "")


def parse_target(value: str, base: Path | None = None) -> Reference:
    """A target tag: registry/repository:tag, or `oci:PATH:TAG` (a layout's tag)."""
    local = LocalSource.parse(value)
    if local is None:
        ref = Reference.parse(value)
        if ref.tag is None or ref.digest is not None:
            raise ReferenceError_(f"target {value} must be registry/repository:tag (no digest)")
        return ref
    if local.transport != "oci":
        raise ReferenceError_(f"target {value}: only oci:PATH:TAG is a local target")
    if local.selector is None or not _TAG.fullmatch(local.selector):
        raise ReferenceError_(f"target {value} must be oci:PATH:TAG, with a tag")
    return Reference(local.host(base or Path()), "", local.selector)


def parse_repository(registry: str, repository: str) -> Reference:
    """Validate a registry host and a repository given separately (a layer's triple)."""
    if "/" in registry or not ("." in registry or ":" in registry or registry == "localhost"):
        raise ReferenceError_(
            f"invalid registry host {registry!r} (a host name with a dot, a port, or localhost)"
        )
    ref = Reference.parse(f"{registry}/{repository}:latest")
    return Reference(ref.registry, ref.repository)
