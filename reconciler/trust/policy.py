"""The trust policy, in the shape of containers-policy.json(5), so that a user can point at the
`/etc/containers/policy.json` podman and skopeo already read.

    {"default": [REQUIREMENT, ...],
     "transports": {"docker": {SCOPE: [REQUIREMENT, ...], ...}, OTHER: {...}}}

Requirements (every one of a list must hold): `insecureAcceptAnything`, `reject`,
`sigstoreSigned` (a cosign signature by one of the keys in `keyPath`, `keyPaths` or `keyData`,
with `signedIdentity`), and `signedBy` (GPG simple signing: modelled so such files load, but
not verified here: a `signedBy` requirement is never satisfied). Keyless sigstore (`fulcio`,
`rekorPublicKey*`, `pki`) is refused with a message saying so.

Scopes of the docker transport, most specific first (containers/image
`DockerReferenceNamespaces`): `host/ns/repo:tag` (or `@digest`), `host/ns/repo`, `host/ns`,
`host`, then `*.example.com` for each parent domain of the host (port stripped), then the
transport's `""`, then the global `default`. Names are the fully expanded form:
`docker.io/library/busybox`, never `busybox`. Parsing is strict as containers/image's is:
unknown fields, a duplicated key, an empty requirement list or a scope that is not fully
expanded refuse the whole file. Other transports (`docker-daemon`, `oci`, ...) are read and
validated but not used: reconciler only asks about registry images.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reconciler.errors import DocumentError, ReferenceError_, SpecError, TrustError
from reconciler.oci.digest import Digest
from reconciler.oci.document import first_error, load_json
from reconciler.oci.reference import Reference
from reconciler.trust.files import MAX_KEY_FILE, read_small_file

if TYPE_CHECKING:  # keys load cryptography and PyNaCl: only where keys are read (a spec loads this)
    from reconciler.trust.keys import PublicKey

MAX_POLICY_FILE = 4 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


# --- signedIdentity ---------------------------------------------------------------------


class MatchExact(_Model):
    type: Literal["matchExact"] = "matchExact"


class MatchRepoDigestOrExact(_Model):
    type: Literal["matchRepoDigestOrExact"] = "matchRepoDigestOrExact"


class MatchRepository(_Model):
    type: Literal["matchRepository"] = "matchRepository"


class ExactReference(_Model):
    type: Literal["exactReference"] = "exactReference"
    docker_reference: str = Field(alias="dockerReference")

    @field_validator("docker_reference")
    @classmethod
    def _tagged(cls, value: str) -> str:
        reference = _reference(value)
        if reference.tag is None and reference.digest is None:
            raise ValueError(f"{value!r} must carry a tag or a digest")
        return value


class ExactRepository(_Model):
    type: Literal["exactRepository"] = "exactRepository"
    docker_repository: str = Field(alias="dockerRepository")

    @field_validator("docker_repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        _reference(value)
        return value


class RemapIdentity(_Model):
    type: Literal["remapIdentity"] = "remapIdentity"
    prefix: str
    signed_prefix: str = Field(alias="signedPrefix")

    @field_validator("prefix", "signed_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        check_prefix(value)
        return value


IdentityRule = (
    MatchExact
    | MatchRepoDigestOrExact
    | MatchRepository
    | ExactReference
    | ExactRepository
    | RemapIdentity
)
SignedIdentity = Annotated[
    MatchExact
    | MatchRepoDigestOrExact
    | MatchRepository
    | ExactReference
    | ExactRepository
    | RemapIdentity,
    Field(discriminator="type"),
]


# --- requirements -----------------------------------------------------------------------

_KEYLESS = ("fulcio", "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData", "pki")


class InsecureAcceptAnything(_Model):
    type: Literal["insecureAcceptAnything"] = "insecureAcceptAnything"


class Reject(_Model):
    type: Literal["reject"] = "reject"


class _Keyed(_Model):
    key_path: str | None = Field(default=None, alias="keyPath")
    key_paths: tuple[str, ...] | None = Field(default=None, alias="keyPaths")
    key_data: str | None = Field(default=None, alias="keyData")
    signed_identity: SignedIdentity | None = Field(default=None, alias="signedIdentity")

    @model_validator(mode="after")
    def _one_key_source(self) -> _Keyed:
        given = [
            name
            for name, value in (
                ("keyPath", self.key_path),
                ("keyPaths", self.key_paths),
                ("keyData", self.key_data),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "exactly one of keyPath, keyPaths and keyData must be given"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.key_paths is not None and not self.key_paths:
            raise ValueError("keyPaths is empty")
        return self

    @property
    def identity(self) -> IdentityRule:
        """The signedIdentity rule, matchRepoDigestOrExact when none is written."""
        return self.signed_identity or MatchRepoDigestOrExact()


class SigstoreSigned(_Keyed):
    type: Literal["sigstoreSigned"] = "sigstoreSigned"

    @model_validator(mode="before")
    @classmethod
    def _no_keyless(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keyless = [k for k in _KEYLESS if k in data]
            if keyless:
                raise ValueError(
                    f"{keyless[0]}: keyless sigstore verification (Fulcio, Rekor, PKI) is not"
                    " supported; use keyPath, keyPaths or keyData"
                )
        return data


class SignedBy(_Keyed):
    type: Literal["signedBy"] = "signedBy"
    key_type: Literal["GPGKeys"] = Field(alias="keyType")


SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"


class SigstoreAttested(_Keyed):
    """reconciler's extension (docs/provenance.md): the image carries an in-toto attestation
    of `predicateType`, signed by one of the keys, in cosign's `.att` manifest; `builderIds`
    and `buildTypes` narrow an SLSA provenance to whose and which build. containers/image
    does not know this type: a policy that uses it is reconciler's own."""

    type: Literal["sigstoreAttested"] = "sigstoreAttested"
    predicate_type: str = Field(default=SLSA_PROVENANCE_V1, alias="predicateType", min_length=1)
    builder_ids: tuple[str, ...] | None = Field(default=None, alias="builderIds", min_length=1)
    build_types: tuple[str, ...] | None = Field(default=None, alias="buildTypes", min_length=1)

    @model_validator(mode="after")
    def _no_identity(self) -> SigstoreAttested:
        if self.signed_identity is not None:
            raise ValueError("signedIdentity: an attestation names its image by digest")
        return self


Requirement = Annotated[
    InsecureAcceptAnything | Reject | SigstoreSigned | SignedBy | SigstoreAttested,
    Field(discriminator="type"),
]
Requirements = Annotated[tuple[Requirement, ...], Field(min_length=1)]


class TrustPolicy(_Model):
    default: Requirements = (InsecureAcceptAnything(),)
    transports: dict[str, dict[str, Requirements]] = Field(default_factory=dict)

    @field_validator("transports")
    @classmethod
    def _docker_scopes(
        cls, value: dict[str, dict[str, tuple[Any, ...]]]
    ) -> dict[str, dict[str, tuple[Any, ...]]]:
        for scope in value.get("docker", {}):
            try:
                check_scope(scope)
            except ValueError as exc:
                raise ValueError(f"docker scope {scope!r}: {exc}") from None
        return value

    def requirements_for(
        self, host: str, repository: str, tag: str | None, digest: Digest | None = None
    ) -> tuple[str, tuple[Requirement, ...]]:
        """The most specific scope matching a registry image, and its requirements. The scope
        is named as the file names it (`"docker.io/library/busybox"`), `transports.docker.""`
        for the transport's default, or `default`."""
        docker = self.transports.get("docker", {})
        for scope in scopes_of(host, repository, tag, digest):
            if scope in docker:
                return scope, docker[scope]
        if "" in docker:
            return 'transports.docker.""', docker[""]
        return "default", self.default


def normalise(host: str, repository: str) -> tuple[str, str]:
    """docker.io's names as containers/image expands them: `index.docker.io` is `docker.io`,
    and a one-component repository there is under `library/`."""
    if host == "index.docker.io":
        host = "docker.io"
    if host == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository


def scopes_of(
    host: str, repository: str, tag: str | None, digest: Digest | None = None
) -> list[str]:
    """The docker scopes an image is looked up under, most specific first."""
    host, repository = normalise(host, repository)
    name = f"{host}/{repository}"
    scopes = []
    if tag:
        scopes.append(f"{name}:{tag}")
    if digest is not None:
        scopes.append(f"{name}@{digest}")
    while True:
        scopes.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    domain = name.split(":", 1)[0]
    while "." in domain:
        domain = domain.split(".", 1)[1]
        scopes.append(f"*.{domain}")
    return scopes


_WILDCARD = re.compile(r"\*\.[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def check_scope(scope: str) -> None:
    """A docker scope: "", `*.domain`, a host, or a fully expanded name (maybe with a tag or a
    digest). ValueError says what is wrong."""
    if scope == "" or _WILDCARD.fullmatch(scope):
        return
    if "*" in scope:
        raise ValueError("a wildcard is only allowed as '*.domain'")
    first = scope.split("/", 1)[0]
    if not _looks_like_host(first):
        raise ValueError(
            "not the fully expanded form (write docker.io/library/busybox, not busybox)"
        )
    if "/" not in scope:
        if any(c.isspace() for c in scope) or "@" in scope:
            raise ValueError("not a host name")
        return
    reference = _reference(scope)
    if str(reference) != scope:
        raise ValueError(f"not the fully expanded form (that is {reference})")


def check_prefix(prefix: str) -> None:
    """A remapIdentity prefix: a host, a namespace or a repository, without tag or digest."""
    if not prefix or "*" in prefix:
        raise ValueError("must be a host, a namespace or a repository")
    check_scope(prefix)
    if "/" in prefix and (_reference(prefix).tag or _reference(prefix).digest):
        raise ValueError("must not carry a tag or a digest")


def _reference(value: str) -> Reference:
    try:
        return Reference.parse(value)
    except ReferenceError_ as exc:
        raise ValueError(str(exc)) from None


# --- loading ----------------------------------------------------------------------------


def parse_policy(data: Any, where: str) -> TrustPolicy:
    """A policy from already-parsed data (JSON or YAML); TrustError names `where` and the
    field."""
    if not isinstance(data, dict):
        raise TrustError(f"{where}: a trust policy is an object with 'default' and 'transports'")
    if "default" not in data:
        raise TrustError(f"{where}: default: required (containers-policy.json(5))")
    try:
        return TrustPolicy.model_validate(data)
    except ValidationError as exc:
        raise TrustError(f"{where}: {_policy_error(exc)}") from None


def _policy_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    # Drop the discriminator tags pydantic puts in the path ("sigstoreSigned").
    parts = [str(p) for p in err["loc"] if p not in _TAGS]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "too_short":
        msg = "must list at least one requirement (containers-policy.json(5))"
    if err["type"] == "union_tag_invalid":
        msg = (
            f"unknown type {err['input'].get('type')!r}" if isinstance(err["input"], dict) else msg
        )
    return f"{'.'.join(parts)}: {msg}" if parts else first_error(exc)


_TAGS = frozenset(
    {
        "insecureAcceptAnything",
        "reject",
        "sigstoreSigned",
        "signedBy",
        "matchExact",
        "matchRepoDigestOrExact",
        "matchRepository",
        "exactReference",
        "exactRepository",
        "remapIdentity",
    }
)


def load_policy_file(path: Path) -> TrustPolicy:
    """A policy file: JSON (policy.json) or YAML (by the suffix .yaml/.yml)."""
    where = str(path)
    raw = read_small_file(path, MAX_POLICY_FILE, where, "the trust policy")
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_policy(_load_yaml(raw, where), where)
    try:
        data = load_json(raw, where, MAX_POLICY_FILE)
    except DocumentError as exc:
        raise TrustError(str(exc)) from None
    return parse_policy(data, where)


def _load_yaml(raw: bytes, where: str) -> Any:
    from reconciler.yamlsource import read_documents  # PyYAML where a policy is YAML (#13)

    try:
        documents = list(read_documents(where, raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise TrustError(f"{where}: not UTF-8") from None
    except SpecError as exc:
        raise TrustError(str(exc)) from None
    if len(documents) != 1:
        raise TrustError(f"{where}: expected one YAML document, found {len(documents)}")
    return documents[0].value


def key_source(requirement: _Keyed) -> str:
    """Where a requirement's keys come from, as the policy names them (for messages):
    `keyPath keys/base.pub`, `keyPaths a.pub, b.pub` or `keyData` (its bytes are not shown)."""
    if requirement.key_data is not None:
        return "keyData"
    if requirement.key_paths is not None:
        return "keyPaths " + ", ".join(requirement.key_paths)
    return f"keyPath {requirement.key_path}"


def keys_of(
    requirement: _Keyed, base_dir: Path, where: str = "trust policy"
) -> tuple[PublicKey, ...]:
    """The public keys a requirement names: `keyPath`/`keyPaths` read relative to `base_dir`
    (a policy file's directory), or `keyData` (base64 of the PEM, as in policy.json)."""
    from reconciler.trust.keys import load_public_keys

    if isinstance(requirement, SignedBy):
        raise TrustError(f"{where}: signedBy (GPG) keys are not supported; use sigstoreSigned")
    if requirement.key_data is not None:
        try:
            pem = base64.b64decode(requirement.key_data, validate=True)
        except (binascii.Error, ValueError):
            raise TrustError(f"{where}: keyData is not valid base64") from None
        return load_public_keys(pem, f"{where}: keyData")
    paths = requirement.key_paths if requirement.key_paths is not None else (requirement.key_path,)
    keys: list[PublicKey] = []
    for name in paths:
        assert name is not None  # noqa: S101 - the model guarantees one source
        path = base_dir / name
        keys.extend(load_public_keys(_read_key(path), str(path)))
    return tuple(dict.fromkeys(keys))


def describe_gpg_keys(requirement: SignedBy, base_dir: Path) -> str:
    """A signedBy requirement's keys for a message: `GPG key 4F0E...C2A1 (keyPath k.gpg)`,
    or why they cannot be named. Never raises: the refusal it goes into is the error."""
    from reconciler.trust.gpg import gpg_fingerprints

    source = key_source(requirement)
    try:
        if requirement.key_data is not None:
            try:
                data = base64.b64decode(requirement.key_data, validate=True)
            except (binascii.Error, ValueError):
                raise TrustError("keyData is not valid base64") from None
            fingerprints = gpg_fingerprints(data, "keyData")
        else:
            paths = requirement.key_paths or (requirement.key_path or "",)
            fingerprints = tuple(
                f
                for name in paths
                for f in gpg_fingerprints(_read_key(base_dir / name), str(base_dir / name))
            )
    except TrustError as exc:
        return f"{source}, whose key cannot be named: {exc}"
    return f"{' or '.join(f'GPG key {f}' for f in fingerprints)} ({source})"


def _read_key(path: Path) -> bytes:
    return read_small_file(path, MAX_KEY_FILE, str(path), "the key")
