"""Image references, parsed as distribution/reference's ParseNormalizedNamed parses them.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-comp ( "/" path-comp )*
    domain     := host [ ":" port ]       host: a DNS-like name, IPv4, or [IPv6] (hex and ':')
    dns-label  := [A-Za-z0-9] | [A-Za-z0-9] [A-Za-z0-9-]* [A-Za-z0-9]
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}

The first component is a registry only when the name has a "/" after it and it is
"localhost", contains "." or ":", or has an uppercase letter; otherwise the image is on
docker.io. "index.docker.io" is docker.io, and a one-component docker.io repository is under
`library/`. The repository (after that prefix, without the registry) is at most 255
characters; a bare 64-hex string is an image ID, not a name. Every reference is kept fully
qualified, so a first component that looks like a host but is not one is an error (where
distribution would keep the whole name with no registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reconciler.errors import ReferenceError_
from reconciler.oci.digest import Digest
from reconciler.oci.strings import string_value_schema

DEFAULT_REGISTRY = "docker.io"
# splitDockerDomain maps only the old "Docker Index" name to docker.io, and case-sensitively:
# registry-1.docker.io or Docker.io name a registry of their own.
_LEGACY_DEFAULT_REGISTRY = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
# RepositoryNameTotalLengthMax: since distribution/reference#9 it bounds the path alone.
NAME_TOTAL_MAX = 255
TAG_MAX = 128

# ParseNormalizedNamed refuses a whole input of exactly this (anchoredIdentifierRegexp).
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# Hex digits and colons only: no zone ("%eth0") and no embedded IPv4 ("::ffff:1.2.3.4").
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace (Unicode), in one C scan


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference: registry, repository, and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, value: str) -> Reference:
        if not isinstance(value, str):
            raise ReferenceError_(f"image reference must be a string, not {type(value).__name__}")
        if not value:
            raise ReferenceError_("invalid reference '': empty image reference")
        if _SPACE.search(value):
            raise ReferenceError_(f"invalid reference {value!r}: contains whitespace")
        if _IDENTIFIER.fullmatch(value):
            # ParseNormalizedNamed: "cannot specify 64-byte hexadecimal strings"; with a
            # registry, a namespace or a tag the same characters are an ordinary name.
            raise ReferenceError_(
                f"invalid reference {value!r}: a bare 64-character hex string is an image ID,"
                " not a repository name"
            )
        # Neither a name nor a tag holds "@", and a digest holds no "/": the first "@" ends
        # the name, and a ":" after the last "/" starts the tag (a port's ":" is followed by "/").
        rest, digest = value, None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except ReferenceError_ as exc:
                raise ReferenceError_(f"invalid reference {value!r}: {exc}") from None
        tag = None
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1 :]
            if len(tag) > TAG_MAX:
                raise ReferenceError_(
                    f"invalid reference {value!r}: tag longer than {TAG_MAX} characters"
                )
            if not _TAG.fullmatch(tag):
                raise ReferenceError_(
                    f"invalid reference {value!r}: invalid tag {tag!r} (a letter, digit or '_',"
                    " then letters, digits, '_', '.' or '-')"
                )
        registry, repository = _split_domain(rest, value)
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
        return string_value_schema(Reference, cls.parse)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str, original: str) -> tuple[str, str]:
    """The registry and repository of `name` (no tag or digest), normalised and checked."""
    first, sep, remainder = name.partition("/")
    # splitDockerDomain: a name without "/" is always an official image ("localhost",
    # "r.io" and "192.168.0.1" included); otherwise the first component is a registry when
    # it is "localhost", has "." or ":", or has an uppercase letter (a path never does).
    if sep and (first == "localhost" or "." in first or ":" in first or first.lower() != first):
        registry, repository = first, remainder
        if not _DOMAIN.fullmatch(registry):
            raise ReferenceError_(
                f"invalid reference {original!r}: invalid registry {registry!r} (a host name,"
                " an IPv4 address or a [hex:colon] IPv6 address, with an optional :port)"
            )
        if registry == _LEGACY_DEFAULT_REGISTRY:
            registry = DEFAULT_REGISTRY
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = _OFFICIAL_PREFIX + repository
    for component in repository.split("/"):
        _check_component(component, original)
    # Parse checks the path it got from the normalised name: "library/" counts, the
    # registry does not (distribution/reference#9).
    if len(repository) > NAME_TOTAL_MAX:
        raise ReferenceError_(
            f"invalid reference {original!r}: repository {repository[:40]!r}... is longer than"
            f" {NAME_TOTAL_MAX} characters"
        )
    return registry, repository


def _check_component(component: str, original: str) -> None:
    if _PATH_COMPONENT.fullmatch(component):
        return
    if not component:
        problem = "an empty path component (a leading, trailing or doubled '/')"
    elif _PATH_COMPONENT.fullmatch(component.lower()):
        problem = f"the repository must be lowercase ({component!r})"
    else:
        problem = (
            f"invalid repository component {component!r} (lowercase letters and digits,"
            " joined by one '.', one '_', two '_' or any number of '-')"
        )
    raise ReferenceError_(f"invalid reference {original!r}: {problem}")


TAG_PATTERN = _TAG  # a tag alone (an OCI layout's tag is one too)


def parse_repository(registry: str, repository: str) -> Reference:
    """Validate a registry host and a repository given separately (a layer's triple)."""
    if "/" in registry or not ("." in registry or ":" in registry or registry == "localhost"):
        raise ReferenceError_(
            f"invalid registry host {registry!r} (a host name with a dot, a port, or localhost)"
        )
    ref = Reference.parse(f"{registry}/{repository}:latest")
    return Reference(ref.registry, ref.repository)
