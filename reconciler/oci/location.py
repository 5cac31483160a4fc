"""Where an image lives, and which image there: `Location` and `Address`.

A spec names a place as skopeo does, with a transport before the first ':' when it is not a
registry: `oci:PATH[:TAG]` (an OCI image layout, a directory or a tar file holding one),
`docker-archive:PATH[:NAME:TAG]` (a `docker save` archive), or a plain reference (a registry,
the docker grammar of reference.py). The path ends at the first ':' after the transport, as in
skopeo, so a path cannot hold one; relative paths are taken from the spec file's directory.

A `Location` is the parsed place: its scheme, its authority (a registry's host, or a local
store's absolute path) and its repository (empty for a local store, which is one repository).
Stores are opened for a Location (reconciler.store.open) and nowhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reconciler.errors import ReferenceError_
from reconciler.oci.digest import Digest
from reconciler.oci.reference import TAG_PATTERN, Reference
from reconciler.oci.strings import string_value_schema


class Scheme(StrEnum):
    REGISTRY = "registry"
    OCI = "oci"
    DOCKER_ARCHIVE = "docker-archive"


LOCAL_SCHEMES = frozenset({Scheme.OCI, Scheme.DOCKER_ARCHIVE})


@dataclass(frozen=True, order=True)
class Location:
    """A place that holds images: a registry repository, an OCI layout, a docker archive."""

    scheme: Scheme
    authority: str  # a registry's host[:port]; a local store's absolute path
    repository: str = ""  # a registry's repository; empty for a local store

    @classmethod
    def of(cls, reference: Reference) -> Location:
        return cls(Scheme.REGISTRY, reference.registry, reference.repository)

    @property
    def is_registry(self) -> bool:
        return self.scheme is Scheme.REGISTRY

    @property
    def store(self) -> Location:
        """The store this location belongs to: a registry host, or the local store itself."""
        return Location(self.scheme, self.authority) if self.is_registry else self

    def __str__(self) -> str:
        if self.is_registry:
            return f"{self.authority}/{self.repository}" if self.repository else self.authority
        return f"{self.scheme}:{self.authority}"


@dataclass(frozen=True)
class Address:
    """An image in a Location: by tag (a docker archive's NAME:TAG), by digest, or, in a local
    store that holds a single image, by nothing at all."""

    location: Location
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def of(cls, reference: Reference) -> Address:
        return cls(Location.of(reference), reference.tag, reference.digest)

    @property
    def identifier(self) -> str:
        """What a store looks the image up by: the digest when known, else the tag ('' for the
        only image of a local store)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or ""

    @property
    def reference(self) -> Reference | None:
        """The docker reference of a registry address; None for a local store."""
        if not self.location.is_registry:
            return None
        return Reference(self.location.authority, self.location.repository, self.tag, self.digest)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # As a field, an Address is a target (bases stay strings in a spec); a relative path
        # was made absolute before, from the spec's directory (ImageSpecBody).
        return string_value_schema(Address, lambda value: parse_target(value, Path()))

    def __str__(self) -> str:
        # As str(self.reference) spells it, without building a Reference: targets are
        # printed and compared as text many times per spec.
        text = str(self.location) + (f":{self.tag}" if self.tag else "")
        return text + f"@{self.digest}" if self.location.is_registry and self.digest else text


def registry_location(host: str, repository: str) -> Location:
    return Location(Scheme.REGISTRY, host, repository)


# By the text before the first ':' (a dict lookup: calling the enum on a registry host such as
# "127.0.0.1" raises and catches a ValueError, which cost more than parsing the reference).
_LOCAL_BY_PREFIX = {str(scheme): scheme for scheme in LOCAL_SCHEMES}


def _scheme_of(value: str) -> Scheme | None:
    prefix, sep, _ = value.partition(":")
    return _LOCAL_BY_PREFIX.get(prefix) if sep else None


def is_local_reference(value: str) -> bool:
    """True when `value` names a local store (`oci:...`, `docker-archive:...`)."""
    return _scheme_of(value) is not None


def parse_address(value: str, base: Path) -> Address:
    """`value` as written in a spec; a local path is made absolute from `base`."""
    if not isinstance(value, str):
        raise ReferenceError_("an image reference must be a string")
    scheme = _scheme_of(value)
    if scheme is None:
        return Address.of(Reference.parse(value))
    rest = value.partition(":")[2]
    path, sep, selector = rest.partition(":")
    if not path:
        raise ReferenceError_(f"invalid reference {value!r}: {scheme}: needs a path")
    if sep and not selector:
        raise ReferenceError_(f"invalid reference {value!r}: empty selector after the path")
    if any(c.isspace() or c == "\0" for c in selector) or "\0" in path:
        raise ReferenceError_(f"invalid reference {value!r}: the selector has whitespace")
    if scheme is Scheme.DOCKER_ARCHIVE and selector:
        ref = Reference.parse(selector)
        if ref.tag is None or ref.digest is not None:
            raise ReferenceError_(
                f"invalid reference {value!r}: select an archive's image by NAME:TAG"
            )
    absolute = os.path.normpath((base / path).absolute())
    return Address(Location(scheme, absolute), selector or None)


def parse_target(value: str, base: Path) -> Address:
    """A tag to write: registry/repository:tag, or `oci:PATH:TAG` (a layout's tag)."""
    address = parse_address(value, base)
    scheme = address.location.scheme
    if scheme is Scheme.REGISTRY:
        if address.tag is None or address.digest is not None:
            raise ReferenceError_(f"target {value} must be registry/repository:tag (no digest)")
    elif scheme is not Scheme.OCI:
        raise ReferenceError_(f"target {value}: only oci:PATH:TAG is a local target")
    elif address.tag is None or not TAG_PATTERN.fullmatch(address.tag):
        raise ReferenceError_(f"target {value} must be oci:PATH:TAG, with a tag")
    return address


TEMPLATE_FIELDS = ("{tag}", "{spec.name}")


_FIELD = re.compile(r"\{tag\}|\{spec\.name\}")


def render_template(template: str, tag: str, name: str) -> str:
    """A fan-out target's tag for one selected base tag and the spec's name, in one pass (a
    tag is never read as a template itself)."""
    return _FIELD.sub(lambda m: tag if m.group() == "{tag}" else name, template)


def parse_target_template(value: str, base: Path) -> Address:
    """A fan-out target: `registry/repository:TEMPLATE` or `oci:PATH:TEMPLATE`, where TEMPLATE
    is a tag with `{tag}` (and maybe `{spec.name}`) in it. The template is kept as the
    Address's tag; each selected base tag renders it (render_template)."""
    head, sep, template = value.rpartition(":")
    if not sep or "/" in template or "{tag}" not in template:
        raise ReferenceError_(
            f"target {value}: a fan-out spec's targets are templates over the selected tag, "
            "e.g. registry/team/web:{tag} (else every selected tag would write the same one)"
        )
    rest = template
    for name in TEMPLATE_FIELDS:
        rest = rest.replace(name, "")
    if "{" in rest or "}" in rest:
        raise ReferenceError_(
            f"target {value}: only {' and '.join(TEMPLATE_FIELDS)} may stand in braces"
        )
    # Any real tag and spec name are valid tag characters; a sample shows the rest is valid.
    sample = parse_target(f"{head}:{render_template(template, '1.0.0', 'spec')}", base)
    return Address(sample.location, template)
