"""Image specs (`reconciler.dev/v1alpha1`, kind `ImageSpec`): models and directory loading.

Strict: unknown fields, duplicate keys, malformed references, digests and platforms are errors
that name the file, the line and the field. A bad document never stops the others: loading
returns the good specs and the errors side by side.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconciler.errors import ReferenceError_, SpecError, SpecLocation
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.location import (
    Address,
    is_local_reference,
    parse_address,
    parse_target,
    parse_target_template,
)
from reconciler.oci.platform import PlatformKey
from reconciler.oci.reference import Reference, parse_repository
from reconciler.trust.policy import TrustPolicy

if TYPE_CHECKING:  # PyYAML only where a file is read: not for an empty directory (#13)
    from reconciler.yamlsource import YamlDocument

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "ImageSpec"
SCRATCH = "scratch"
SPEC_FILE_LIMIT = 1024 * 1024
SPEC_SUFFIXES = (".yaml", ".yml")

_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}(/(tcp|udp|sctp))?")


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class LayerSpec(SpecModel):
    """A layer appended on top of the base's layers, referenced by digest."""

    ref: Reference | None = Field(
        default=None, description="Shorthand: registry/repository@sha256:... (no tag)."
    )
    registry: str | None = Field(
        default=None, description="Registry host[:port] holding the layer."
    )
    repository: str | None = Field(default=None, description="Repository holding the layer.")
    digest: Digest | None = Field(
        default=None, description="Digest of the (compressed) layer blob."
    )
    media_type: str | None = Field(
        default=None,
        alias="mediaType",
        description="Layer media type; sniffed from the blob's first bytes when absent.",
    )
    diff_id: Digest | None = Field(
        default=None,
        alias="diffID",
        description="Digest of the uncompressed tar; computed once and cached when absent.",
    )
    platforms: tuple[PlatformKey, ...] | None = Field(
        default=None, description="Add the layer only to these platforms (os/arch[/variant])."
    )
    comment: str | None = Field(default=None, description="The history entry's created_by.")
    path: str | None = Field(
        default=None,
        description="A local file or directory (relative to the spec file), built into a "
        "reproducible tar+gzip layer: same files, same digest.",
    )
    image: Reference | None = Field(
        default=None,
        description="The image this layer comes from (registry/repository:tag or @digest): "
        "the trust policy checks that image's signatures, and the layer must be one of its "
        "layers.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LayerSpec:
        triple = (self.registry, self.repository, self.digest)
        if self.path is not None:
            given = [
                n
                for n, v in (
                    ("ref", self.ref),
                    ("registry", self.registry),
                    ("repository", self.repository),
                    ("digest", self.digest),
                    ("mediaType", self.media_type),
                    ("diffID", self.diff_id),
                )
                if v is not None
            ]
            if self.image is not None:
                given.append("image")
            if given:
                raise ValueError(f"a 'path' layer is built here; remove {', '.join(given)}")
            if not self.path.strip():
                raise ValueError("'path' is empty")
            return self
        if self.ref is not None:
            if any(v is not None for v in triple):
                raise ValueError("give either 'ref' or 'registry'/'repository'/'digest', not both")
            if self.ref.digest is None:
                raise ValueError("'ref' must name the layer by digest (repository@sha256:...)")
            if self.ref.tag is not None:
                raise ValueError("'ref' names a layer by digest only; remove the tag")
        elif None in triple:
            missing = [
                n
                for n, v in zip(("registry", "repository", "digest"), triple, strict=True)
                if v is None
            ]
            raise ValueError(
                f"a layer needs 'path', 'ref', or 'registry', 'repository' and 'digest' "
                f"(missing: {', '.join(missing)})"
            )
        else:
            assert self.registry is not None and self.repository is not None  # noqa: S101
            try:
                parse_repository(self.registry, self.repository)
            except ReferenceError_ as exc:
                raise ValueError(str(exc)) from None
        if self.media_type is not None and mt.compression_of(self.media_type) is None:
            raise ValueError(f"mediaType {self.media_type!r} is not a known layer media type")
        return self

    @property
    def source(self) -> Reference:
        """Where the layer lives, as `registry/repository@digest`."""
        if self.ref is not None:
            return self.ref
        assert self.registry and self.repository and self.digest  # noqa: S101 - validated
        return parse_repository(self.registry, self.repository).with_digest(self.digest)

    @property
    def layer_digest(self) -> Digest:
        digest = self.source.digest
        assert digest is not None  # noqa: S101 - validated
        return digest


class ConfigSpec(SpecModel):
    """Fields merged over the base image's config."""

    env: dict[str, str] | None = Field(default=None, description="Merged by variable name.")
    entrypoint: tuple[str, ...] | None = Field(
        default=None,
        description="Replaces the entrypoint; also clears an inherited cmd "
        "unless cmd is given, as a Dockerfile ENTRYPOINT does.",
    )
    cmd: tuple[str, ...] | None = Field(default=None, description="Replaces the cmd.")
    working_dir: str | None = Field(default=None, alias="workingDir")
    user: str | None = None
    exposed_ports: tuple[str, ...] | None = Field(
        default=None, alias="exposedPorts", description="Added to the base's: 8080/tcp, 53/udp."
    )
    labels: dict[str, str] | None = Field(default=None, description="Merged by key.")

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not name or "=" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return value

    @field_validator("exposed_ports")
    @classmethod
    def _ports(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for port in value or ():
            if not _PORT.fullmatch(port) or not 0 < int(port.split("/")[0]) < 65536:
                raise ValueError(f"invalid port {port!r}: expected PORT[/tcp|/udp|/sctp]")
        return value


class TagSelection(SpecModel):
    """`baseTags`: the tags of the base repository a spec fans out over, one image each."""

    regex: str | None = Field(
        default=None,
        description="Only tags this regular expression matches whole; a group named `version` "
        "is what the semver range and the sort read (else the whole tag).",
    )
    semver: str | None = Field(
        default=None,
        description="A version range as PEP 440 specifiers (e.g. '>=3.10,<4'); tags that are "
        "not versions are left out.",
    )
    sort: Literal["semver", "alphabetical"] | None = Field(
        default=None,
        description="How tags are ordered, highest first, before `keep`: by version (the "
        "default with a semver range; tags that are not versions are left out) or by text.",
    )
    keep: int | None = Field(
        default=None, ge=1, le=1000, description="Only the N highest tags (default: all)."
    )

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("semver")
    @classmethod
    def _semver(cls, value: str | None) -> str | None:
        if value is not None:
            # packaging only for specs that fan out over a version range (start-up, #13)
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(
                    f"invalid version range {value!r} (PEP 440 specifiers: '>=1.2,<2')"
                ) from None
        return value


class SigningSpec(SpecModel):
    """The key this spec's outputs are signed with, instead of the settings' (paths relative
    to the spec file; the key and passphrase themselves never belong in git)."""

    key_file: str = Field(alias="keyFile", description="Private key file (PEM or cosign's).")
    passphrase_file: str | None = Field(
        default=None, alias="passphraseFile", description="File holding the key's passphrase."
    )
    passphrase_env: str | None = Field(
        default=None,
        alias="passphraseEnv",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the passphrase.",
    )
    recursive: bool = Field(
        default=True, description="Sign an index's child manifests too, not only the index."
    )

    @model_validator(mode="after")
    def _one_passphrase(self) -> SigningSpec:
        if self.passphrase_file is not None and self.passphrase_env is not None:
            raise ValueError("give passphraseFile or passphraseEnv, not both")
        return self


class CarrySpec(SpecModel):
    """What a mirror copies along from its base, besides the image."""

    signatures: bool = Field(
        default=True, description="The base's .sig, .att and .sbom tags (cosign's)."
    )
    referrers: bool = Field(
        default=True,
        description="The base's referrers (OCI 1.1; read from the tag-schema fallback index).",
    )
    artifact_types: tuple[str, ...] | None = Field(
        default=None,
        alias="artifactTypes",
        description="Only referrers of these artifactTypes (default: all).",
    )


class AttachSpec(SpecModel):
    """A file pushed beside the image as an OCI artifact whose subject is the image."""

    file: str = Field(description="The file, relative to the spec file (at most 64 MiB).")
    artifact_type: str = Field(
        alias="artifactType",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$",
        description="The artifact's type, a media type: application/spdx+json, "
        "application/vnd.in-toto+json, ...",
    )
    media_type: str | None = Field(
        default=None,
        alias="mediaType",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$",
        description="The file's media type (default: the artifactType).",
    )
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def blob_media_type(self) -> str:
        return self.media_type or self.artifact_type


class ImageSpecBody(SpecModel):
    base: str = Field(
        description="Base image: a registry reference (tag or @digest), 'scratch', "
        "oci:PATH[:TAG] (an OCI layout directory or tar) or docker-archive:PATH[:NAME:TAG]; "
        "paths are relative to the spec file. With baseTags: a registry repository, no tag."
    )
    base_tags: TagSelection | None = Field(
        default=None,
        alias="baseTags",
        description="Fan out over the base repository's tags: one image per selected tag; "
        "targets are templates over it ({tag}, {spec.name}).",
    )
    platforms: tuple[PlatformKey, ...] | None = Field(
        default=None, description="Subset of the base's platforms to keep (os/arch[/variant])."
    )
    format: mt.Format | None = Field(
        default=None,
        description="oci or docker. Default: oci, except that a spec that changes nothing "
        "mirrors its base as it is.",
    )
    layers: tuple[LayerSpec, ...] = ()
    config: ConfigSpec | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    base_annotations: bool = Field(
        default=True,
        alias="baseAnnotations",
        description="Write org.opencontainers.image.base.name/.digest.",
    )
    created: str | None = Field(
        default=None, description="RFC 3339 time for the config; default: the base's."
    )
    suspend: bool = Field(
        default=False,
        description="true: still validated, never resolved or pushed; reported as Suspended.",
    )
    trust: TrustPolicy | None = Field(
        default=None,
        description="A trust policy for this spec's base and layer images, in the shape of "
        "containers-policy.json(5); replaces the settings' trust_policy. Key paths are "
        "relative to the spec file.",
    )
    signing: SigningSpec | Literal[False] | None = Field(
        default=None,
        description="Sign this spec's outputs with this key instead of the settings' "
        "signing key; false: do not sign them.",
    )
    provenance: bool = Field(
        default=True,
        description="With signing: write a signed SLSA provenance statement for each image "
        "signed (docs/provenance.md); false: none for this spec.",
    )
    carry: CarrySpec | None = Field(
        default=None,
        description="A mirror (a spec that adds nothing to its base) copies the base's "
        "signatures, attestations, SBOMs and referrers to its targets.",
    )
    attach: tuple[AttachSpec, ...] = Field(
        default=(), description="Files pushed as OCI artifacts whose subject is the image."
    )
    # minItems stays in the JSON Schema for editors; the validator below gives the message
    # (a Field min_length would also report an emptied list when one target is malformed).
    targets: tuple[Address, ...] = Field(
        description="At least one registry/repository:tag to publish the result under, "
        "or oci:PATH:TAG (a tag of an OCI layout directory, relative to the spec file).",
        json_schema_extra={"minItems": 1},
    )

    @field_validator("trust", mode="before")
    @classmethod
    def _trust_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and "default" not in value:
            raise ValueError(
                "a trust policy needs its 'default' requirements (as containers-policy.json "
                "does): [{type: insecureAcceptAnything}] to add scopes only"
            )
        return value

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if value != SCRATCH:
            try:
                parse_address(value, Path())
            except ReferenceError_ as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("targets", mode="before")
    @classmethod
    def _parse_targets(cls, value: Any, info: ValidationInfo) -> Any:
        """Targets parsed, `oci:PATH:TAG` paths made absolute from the spec file's directory."""
        if not isinstance(value, (list, tuple)):
            return value
        base = (info.context or {}).get("dir") or Path()
        fan_out = info.data.get("base_tags") is not None
        out: list[Any] = []
        for item in value:
            try:
                if isinstance(item, str) and fan_out:
                    out.append(parse_target_template(item, base))
                else:
                    out.append(parse_target(item, base) if isinstance(item, str) else item)
            except ReferenceError_ as exc:
                if fan_out:
                    raise ValueError(str(exc)) from None
                out.append(item)  # reported again by the item's own validator, with its index
        return out

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[Address, ...]) -> tuple[Address, ...]:
        if not value:
            raise ValueError("at least one target is needed")
        seen: set[str] = set()
        for target in value:
            if str(target) in seen:
                raise ValueError(f"target {target} is listed twice")
            seen.add(str(target))
        return value

    @field_validator("created")
    @classmethod
    def _created(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"created {value!r} is not an RFC 3339 time") from None
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: tuple[PlatformKey, ...] | None) -> tuple[PlatformKey, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("platforms lists a platform twice")
        if value is not None and not value:
            raise ValueError("platforms, when given, lists at least one platform")
        return value

    @model_validator(mode="after")
    def _carry(self) -> ImageSpecBody:
        if self.carry is not None and (self.base == SCRATCH or not self.adds_nothing):
            raise ValueError(
                "carry copies the base's signatures and referrers, which cover the base's "
                "digest only: it needs a spec that mirrors its base (no layers, config, "
                "annotations, created, and baseAnnotations: false)"
            )
        return self

    @model_validator(mode="after")
    def _scratch(self) -> ImageSpecBody:
        if self.base == SCRATCH and not self.layers:
            raise ValueError("a spec on 'scratch' needs at least one layer")
        ref = None
        if self.base != SCRATCH and not is_local_reference(self.base):
            ref = Reference.parse(self.base)
        if self.base_tags is not None:
            if ref is None or ref.tag is not None or ref.digest is not None:
                raise ValueError(
                    "with baseTags, base is a registry repository without a tag or digest"
                )
        elif ref is not None and ref.tag is None and ref.digest is None:
            raise ValueError(
                f"base {self.base} needs a tag or a digest (or baseTags, to fan out over tags)"
            )
        return self

    @property
    def fans_out(self) -> bool:
        return self.base_tags is not None

    def base_address(self, spec_dir: Path) -> Address | None:
        """Where the base is (local paths taken from the spec file's directory); None for
        scratch."""
        return None if self.base == SCRATCH else parse_address(self.base, spec_dir)

    @property
    def adds_nothing(self) -> bool:
        """True when the spec only mirrors its base (DESIGN.md section 2)."""
        return (
            not self.layers
            and self.config is None
            and not self.annotations
            and not self.base_annotations
            and self.created is None
        )


class Metadata(SpecModel):
    name: str | None = Field(
        default=None, description="Unique in the directory; default: file stem."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(f"invalid name {value!r}: lowercase letters, digits, '.', '_', '-'")
        return value


class ImageSpecDocument(SpecModel):
    api_version: Literal["reconciler.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ImageSpec"]
    metadata: Metadata = Field(default_factory=Metadata)
    spec: ImageSpecBody


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec and where it was read from."""

    name: str
    file: str
    line: int
    body: ImageSpecBody
    document: YamlDocument = field(repr=False, compare=False)
    group: str | None = None  # a fan-out instance: the name of the spec it was expanded from

    def location(self, path: tuple[str | int, ...] = ()) -> SpecLocation:
        from reconciler.yamlsource import format_path

        return SpecLocation(
            self.file, self.document.line_of(("spec", *path)), format_path(("spec", *path))
        )

    def base_address(self) -> Address | None:
        """Where the base is, local paths taken from this spec's directory; None for scratch."""
        return self.body.base_address(Path(self.file).parent)

    def base_tag(self) -> Address | None:
        """The base when it is a registry tag (what follows upstream, and what a lock pins);
        None for scratch, a digest or a local store."""
        address = self.base_address()
        if address is None or not address.location.is_registry or address.digest is not None:
            return None
        return address


@dataclass(frozen=True)
class LoadResult:
    specs: tuple[LoadedSpec, ...]
    errors: tuple[SpecError, ...]
    files: int


def json_schema() -> dict[str, Any]:
    schema = ImageSpecDocument.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reconciler ImageSpec (reconciler.dev/v1alpha1)"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True)


def find_spec_files(paths: Sequence[Path]) -> tuple[list[Path], list[SpecError]]:
    """Spec files under `paths`, sorted; names starting with '.' are skipped (..data swaps)."""
    files: list[Path] = []
    errors: list[SpecError] = []
    for root in paths:
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            errors.append(SpecError(SpecLocation(str(root)), "no such file or directory"))
            continue
        seen_dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and name.endswith(SPEC_SUFFIXES):
                    files.append(Path(dirpath) / name)
    return sorted(set(files)), errors


def load_specs(paths: Iterable[Path]) -> LoadResult:
    """Load every spec under `paths`. Invalid documents become errors; valid ones are kept."""
    files, errors = find_spec_files(list(paths))
    candidates: list[LoadedSpec] = []
    for path in files:
        specs, file_errors = load_file(path)
        candidates.extend(specs)
        errors.extend(file_errors)
    specs, cross_errors = _check_across(candidates)
    return LoadResult(tuple(specs), tuple(errors + cross_errors), len(files))


def load_file(path: Path) -> tuple[list[LoadedSpec], list[SpecError]]:
    from reconciler.yamlsource import read_documents

    file = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(SPEC_FILE_LIMIT + 1)
    except OSError as exc:
        return [], [SpecError(SpecLocation(file), f"cannot read: {exc.strerror or exc}")]
    if len(data) > SPEC_FILE_LIMIT:
        return [], [SpecError(SpecLocation(file), f"larger than {SPEC_FILE_LIMIT} bytes")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [SpecError(SpecLocation(file), f"not UTF-8 text: {exc.reason}")]
    specs: list[LoadedSpec] = []
    errors: list[SpecError] = []
    try:
        for document in read_documents(file, text):
            spec, doc_errors = _validate(path, document)
            errors.extend(doc_errors)
            if spec is not None:
                specs.append(spec)
    except SpecError as exc:
        errors.append(exc)
    return specs, errors


def _validate(path: Path, document: YamlDocument) -> tuple[LoadedSpec | None, list[SpecError]]:
    if not isinstance(document.value, dict):
        return None, [
            SpecError(
                SpecLocation(document.file, document.line), "a spec document must be a mapping"
            )
        ]
    try:
        model = ImageSpecDocument.model_validate(
            document.value, context={"dir": _spec_dir(str(path.parent), os.getcwd())}
        )
    except ValidationError as exc:
        name = _readable_name(path, document.value)
        return None, [_spec_error(document, err, name) for err in exc.errors()]
    name = model.metadata.name or path.stem
    if model.metadata.name is None and not _NAME.fullmatch(name):
        return None, [
            SpecError(
                SpecLocation(document.file, document.line, "metadata.name"),
                f"file stem {name!r} is not a valid name; set metadata.name",
            )
        ]
    return LoadedSpec(name, document.file, document.line, model.spec, document), []


@functools.lru_cache(maxsize=64)
def _spec_dir(parent: str, cwd: str) -> Path:
    """A spec file's directory, absolute (`Path.absolute`), once per directory and not once
    per file: ten thousand files in one directory are ten thousand lookups of the same."""
    return Path(cwd, parent)


def _readable_name(path: Path, value: dict[str, Any]) -> str | None:
    """The name of a document that does not validate, if its metadata still says one."""
    metadata = value.get("metadata", {})
    name = metadata.get("name", path.stem) if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and _NAME.fullmatch(name) else None


def _spec_error(document: YamlDocument, err: Any, spec_name: str | None = None) -> SpecError:
    from reconciler.yamlsource import format_path

    loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        message = "unknown field" + _did_you_mean(loc)
    elif err["type"] == "missing":
        message = "required field is missing"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err["type"] == "literal_error":
        message = f"{message} (got {err.get('input')!r})"
    return SpecError(
        SpecLocation(document.file, document.line_of(loc), format_path(loc) or None),
        message,
        spec_name=spec_name,
    )


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """ "; did you mean 'layers'?" when one field allowed where `loc` points is close to it."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    if len(loc) == 1:  # a spec field written at the top level: `layers:` at column 0
        names = {f.alias or n for n, f in ImageSpecBody.model_fields.items()}
        if loc[0] in names:
            return f"; {loc[0]!r} is a field of spec: indent it under 'spec:'"
    models: list[type[BaseModel]] = [ImageSpecDocument]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an item of a list: the list's item models are already in `models`
        fields = [f for m in models for n, f in m.model_fields.items() if part in (n, f.alias)]
        models = [m for f in fields for m in _models_in(f.annotation)]
    # Wire names only (`baseAnnotations`, not `base_annotations`): what the spec is written in.
    known = {
        (f.alias or n).lower(): f.alias or n for m in models for n, f in m.model_fields.items()
    }
    close = difflib.get_close_matches(loc[-1].lower(), list(known), n=1)
    return f"; did you mean {known[close[0]]!r}?" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type holds: `LayerSpec` in `tuple[LayerSpec, ...] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _check_across(candidates: list[LoadedSpec]) -> tuple[list[LoadedSpec], list[SpecError]]:
    """Names and target tags must be unique; every spec in a conflict is held back."""
    errors: list[SpecError] = []
    bad: set[int] = set()
    by_name: dict[str, LoadedSpec] = {}
    by_target: dict[str, tuple[int, LoadedSpec]] = {}
    for i, spec in enumerate(candidates):
        first = by_name.get(spec.name)
        if first is not None:
            errors.append(
                SpecError(
                    SpecLocation(spec.file, spec.line, "metadata.name"),
                    f"name {spec.name!r} is already used by {first.file}:{first.line}",
                    spec_name=spec.name,
                )
            )
            bad.add(i)
        else:
            by_name[spec.name] = spec
        for j, target in enumerate(spec.body.targets):
            key = str(target)
            if key in by_target:
                k, other = by_target[key]
                errors.append(
                    SpecError(
                        spec.location(("targets", j)),
                        f"target {key} is also written by spec {other.name!r} "
                        f"({other.file}:{other.document.line_of(('spec', 'targets'))})",
                        spec_name=spec.name,
                    )
                )
                bad.update((i, k))
            else:
                by_target[key] = (i, spec)
    return [s for i, s in enumerate(candidates) if i not in bad], errors
