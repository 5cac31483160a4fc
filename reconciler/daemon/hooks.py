"""Registry webhooks, as values: a request body in, the pushes it reports out; and which specs
a push concerns. Pure: no I/O, no clock; the HTTP server (http.py) feeds it, the daemon acts.

Five senders, told apart by their top-level keys:

- the distribution registry's notification envelope (`{"events": [...]}`, media type
  `application/vnd.docker.distribution.events.v1+json`): one event per manifest or blob pushed
  or pulled. Only manifest pushes count; the host is the one the pusher used
  (`request.host`), else the one in `target.url`. Pulls, mounts, deletes and blob pushes are
  read and left out: the registry retries a delivery that is not answered 2xx, so an event
  that is of no interest is no error.
- Harbor's `PUSH_ARTIFACT` (`event_data.resources[].resource_url`, `tag`, `digest`); other
  Harbor event types are left out likewise.
- Docker Hub's (`push_data.tag`, `repository.repo_name`; host docker.io).
- GitHub's `package` and `registry_package` events for a container package (ghcr.io,
  `<namespace>/<name>`, lowercased as GHCR names them; `package_version.container_metadata.tag`);
  a package of another ecosystem is left out, and GitHub's `ping` (`zen`, `hook_id`) too.
- Quay's repository push (`docker_url`, `updated_tags`, a list, or in old payloads a mapping of
  tag to image id).

Anything else, or a known shape with a field missing or malformed, is a `HookError` naming the
sender and the field: the server answers 400 and nothing changes.

Matching (`wanted_by`): a push concerns a spec when it is to the repository of the spec's base
or of one of its layer sources, host and repository compared after the same normalisation as
references (docker.io aliases, `library/`). A push that names a tag concerns a base that names
that tag, a fan-out spec whose tag selection takes it, and a base or layer pinned by a digest
only when that very digest arrived; a push with no tag (a manifest pushed by digest, such as
the platform manifests of a multi-platform push) concerns every spec using the repository.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.errors import ReconcilerError, ReferenceError_
from reconciler.model.fanout import select_tags
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.reference import DEFAULT_REGISTRY, TAG_PATTERN, Reference
from reconciler.spec import LoadedSpec, TagSelection

DOCKER_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
GHCR = "ghcr.io"
_MANIFEST_MEDIA_TYPES = mt.MANIFEST_TYPES | mt.INDEX_TYPES


class HookError(ReconcilerError):
    """A webhook body that is not a payload we know, or one with a field missing or malformed."""


@dataclass(frozen=True)
class Push:
    """A manifest pushed to a registry repository: under a tag, or by digest only (tag None)."""

    host: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        text += f":{self.tag}" if self.tag else ""
        return text + (f"@{self.digest}" if self.digest else "")


# -- the payloads, as far as we read them (senders add fields: they are ignored) -------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Target(_Model):
    mediaType: str | None = None  # the wire name
    digest: str | None = None
    repository: str
    url: str | None = None
    tag: str | None = None


class _Request(_Model):
    host: str | None = None


class _Event(_Model):
    action: str
    target: _Target
    request: _Request | None = None


class _Envelope(_Model):
    events: tuple[_Event, ...]


class _HarborResource(_Model):
    digest: str | None = None
    tag: str | None = None
    resource_url: str


class _HarborRepository(_Model):
    repo_full_name: str | None = None


class _HarborData(_Model):
    resources: tuple[_HarborResource, ...] = ()
    repository: _HarborRepository | None = None


class _Harbor(_Model):
    type: str
    event_data: _HarborData


class _HubPushData(_Model):
    tag: str | None = None


class _HubRepository(_Model):
    repo_name: str


class _Hub(_Model):
    push_data: _HubPushData
    repository: _HubRepository


class _GitHubTag(_Model):
    name: str | None = None
    digest: str | None = None


class _GitHubContainer(_Model):
    tag: _GitHubTag | None = None


class _GitHubVersion(_Model):
    version: str | None = None
    container_metadata: _GitHubContainer | None = None


class _GitHubPackage(_Model):
    name: str
    namespace: str
    package_type: str | None = None
    ecosystem: str | None = None
    package_version: _GitHubVersion | None = None


class _Quay(_Model):
    docker_url: str
    updated_tags: tuple[str, ...] | dict[str, Any]


# -- parsing ---------------------------------------------------------------------------------


def parse_registry_hook(body: bytes) -> tuple[Push, ...]:
    """The pushes a webhook body reports (none for an event of no interest)."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HookError(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HookError(f"the body is a JSON {type(value).__name__}, not an object")
    for keys, sender, parse in _SENDERS:
        if keys <= value.keys():
            try:
                return parse(value)
            except ValidationError as exc:
                raise HookError(f"a {sender} payload, but {_first_problem(exc)}") from None
    known = "; ".join(f"{sender} ({', '.join(sorted(keys))})" for keys, sender, _ in _SENDERS)
    found = ", ".join(sorted(value)[:10]) or "none"
    raise HookError(f"not a webhook payload we know (top-level keys: {found}); expected {known}")


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "the body"
    return f"{where}: {error['msg'].lower()}"


def _distribution(value: dict[str, Any]) -> tuple[Push, ...]:
    pushes = []
    for i, event in enumerate(_Envelope.model_validate(value).events):
        target = event.target
        if event.action != "push" or not _is_manifest(target):
            continue
        host = (event.request.host if event.request else None) or _url_host(target.url)
        if not host:
            raise HookError(f"events.{i}: neither request.host nor target.url names the registry")
        where = f"events.{i}.target"
        pushes.append(_push(host, target.repository, target.tag, target.digest, where))
    return tuple(pushes)


def _is_manifest(target: _Target) -> bool:
    if target.url:
        return "/manifests/" in urlsplit(target.url).path
    return target.mediaType in _MANIFEST_MEDIA_TYPES or bool(
        target.tag
    )  # only manifests are tagged


def _url_host(url: str | None) -> str | None:
    return urlsplit(url).netloc or None if url else None


def _harbor(value: dict[str, Any]) -> tuple[Push, ...]:
    harbor = _Harbor.model_validate(value)
    if harbor.type != "PUSH_ARTIFACT":
        return ()
    full_name = (
        harbor.event_data.repository.repo_full_name if harbor.event_data.repository else None
    )
    pushes = []
    for i, resource in enumerate(harbor.event_data.resources):
        where = f"event_data.resources.{i}"
        url = resource.resource_url.split("://", 1)[-1]  # host/namespace/name:tag (or @digest)
        host, sep, rest = url.partition("/")
        if not sep or not rest:
            raise HookError(f"{where}.resource_url {_clip(url)!r} names no host/repository")
        name = full_name or rest.split("@", 1)[0].rsplit(":", 1)[0]
        pushes.append(_push(host, name, resource.tag, resource.digest, where))
    return tuple(pushes)


def _hub(value: dict[str, Any]) -> tuple[Push, ...]:
    hub = _Hub.model_validate(value)
    return (
        _push(DEFAULT_REGISTRY, hub.repository.repo_name, hub.push_data.tag, None, "push_data"),
    )


def _github(value: dict[str, Any]) -> tuple[Push, ...]:
    key = "package" if "package" in value else "registry_package"
    package = _GitHubPackage.model_validate(value[key])
    kind = (package.package_type or package.ecosystem or "").lower()
    if kind != "container":
        return ()  # an npm, maven, ... package: not an image
    version = package.package_version
    tag = version.container_metadata.tag if version and version.container_metadata else None
    digest = (tag.digest if tag else None) or (version.version if version else None)
    if digest is not None and not digest.startswith("sha"):
        digest = None  # a container version is named by its digest; anything else is no digest
    name = f"{package.namespace}/{package.name}".lower()  # GHCR's names are lowercase
    return (_push(GHCR, name, (tag.name if tag else None) or None, digest, key),)


def _github_ping(value: dict[str, Any]) -> tuple[Push, ...]:
    return ()


def _quay(value: dict[str, Any]) -> tuple[Push, ...]:
    quay = _Quay.model_validate(value)
    url = quay.docker_url.split("://", 1)[-1]
    host, sep, name = url.partition("/")
    if not sep or not name:
        raise HookError(f"docker_url {_clip(url)!r} names no host/repository")
    tags = list(quay.updated_tags)  # a list, or a mapping's keys
    return tuple(_push(host, name, str(tag), None, "updated_tags") for tag in tags)


_SENDERS = (
    (frozenset({"events"}), "distribution registry notification", _distribution),
    (frozenset({"type", "event_data"}), "Harbor", _harbor),
    (frozenset({"push_data", "repository"}), "Docker Hub", _hub),
    (frozenset({"package"}), "GitHub package event", _github),
    (frozenset({"registry_package"}), "GitHub registry_package event", _github),
    (frozenset({"zen", "hook_id"}), "GitHub ping", _github_ping),
    (frozenset({"docker_url", "updated_tags"}), "Quay", _quay),
)


def _push(host: str, repository: str, tag: str | None, digest: str | None, where: str) -> Push:
    """A push, checked and normalised as references are (docker.io aliases, `library/`)."""
    host = canonical_host(host)
    try:
        ref = Reference.parse(f"{host}/{repository.strip('/').lower()}")
    except ReferenceError_ as exc:
        raise HookError(f"{where}: {exc}") from None
    if ref.registry != host:
        raise HookError(f"{where}: {_clip(host)!r} is not a registry host")
    if tag is not None and tag != "" and not TAG_PATTERN.fullmatch(tag):
        raise HookError(f"{where}: invalid tag {_clip(tag)!r}")
    try:
        parsed = Digest.parse(digest) if digest else None
    except ReferenceError_ as exc:
        raise HookError(f"{where}: {exc}") from None
    return Push(ref.registry, ref.repository, tag or None, parsed)


def canonical_host(host: str) -> str:
    host = host.strip().lower()
    return DEFAULT_REGISTRY if host in DOCKER_HOSTS else host


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- which specs a push concerns -------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A registry repository a spec reads: its base (by tag, by digest, or every selected tag
    of a fan-out), or a layer's blob."""

    host: str
    repository: str
    tag: str | None = None  # the base tag followed
    digest: Digest | None = None  # pinned content (a base by digest, a layer)
    selection: TagSelection | None = None  # a fan-out's tags

    def wants(self, push: Push) -> bool:
        if (push.host, push.repository) != (self.host, self.repository):
            return False
        if push.tag is None:
            return True  # by digest only: which tag moved, if any, is not known here
        if self.selection is not None:
            return bool(select_tags([push.tag], self.selection))
        if self.tag is not None:
            return push.tag == self.tag
        return push.digest is not None and push.digest == self.digest


def sources_of(spec: LoadedSpec) -> tuple[Source, ...]:
    out = []
    address = spec.base_address()
    if address is not None and address.location.is_registry:
        location = address.location
        host = canonical_host(location.authority)
        selection = spec.body.base_tags
        out.append(Source(host, location.repository, address.tag, address.digest, selection))
    for layer in spec.body.layers:
        if layer.path is None:
            ref = layer.source
            out.append(Source(canonical_host(ref.registry), ref.repository, None, ref.digest))
    return tuple(out)


class SourceIndex:
    """Which specs pushes concern, fast enough for the event loop with thousands of specs: each
    spec's sources are worked out once per version of the spec (`key`: its fingerprint), and
    pushes are looked up by repository."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, tuple[Source, ...]]] = {}

    def wanting(self, specs: Iterable[tuple[LoadedSpec, str]], pushes: Sequence[Push]) -> list[str]:
        """Names of the specs (each with its key) the pushes concern, each once, in order."""
        by_repository: dict[tuple[str, str], list[Push]] = {}
        for push in pushes:
            by_repository.setdefault((push.host, push.repository), []).append(push)
        if not by_repository:
            return []
        names: dict[str, None] = {}
        for spec, key in specs:
            known = self._known.get(spec.name)
            if known is None or known[0] != key:
                known = self._known[spec.name] = (key, sources_of(spec))
            if any(
                source.wants(push)
                for source in known[1]
                for push in by_repository.get((source.host, source.repository), ())
            ):
                names[spec.name] = None
        return list(names)


def specs_wanting(specs: Iterable[LoadedSpec], pushes: Sequence[Push]) -> list[str]:
    return SourceIndex().wanting(((s, "") for s in specs), pushes)
