"""Lock files: the digest each base tag named when it was resolved, kept in git beside the specs.

One `reconciler.lock` per directory of specs (not `*.yaml`, so the spec loader never reads it as
a spec). With a lock in a spec's directory, the desired state is a pure function of the
repository: `diff` and `apply` take a locked base's digest from the lock and never ask the
registry what the tag names now. The file is written in one stable, sorted form, so that a
change of one base is a change of a few lines in a pull request:

    apiVersion: reconciler.dev/v1alpha1
    kind: Lock
    bases:
      - reference: registry.example.com/library/python:3.12-slim
        digest: sha256:...
        mediaType: application/vnd.oci.image.index.v1+json
        platforms: [linux/amd64, linux/arm64]
        resolved: "2026-12-01T09:00:00Z"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from reconciler.errors import SpecError, SpecLocation
from reconciler.fileio import write_atomic
from reconciler.oci.digest import Digest
from reconciler.oci.reference import TAG_PATTERN

LOCK_NAME = "reconciler.lock"
LOCK_FILE_LIMIT = 4 * 1024 * 1024
HEADER = (
    "# Written by `reconciler lock`: the digest each base tag named when it was resolved.\n"
    "# Commit it with the specs. `reconciler lock --check` says when a tag has moved;\n"
    "# `reconciler lock --update [NAME...]` moves entries.\n"
)


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    reference: StrictStr
    digest: Digest
    media_type: StrictStr | None = Field(default=None, alias="mediaType")
    platforms: tuple[StrictStr, ...] = ()
    resolved: StrictStr


class _Selection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    spec: StrictStr
    tags: tuple[StrictStr, ...]


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    api_version: Literal["reconciler.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Lock"]
    bases: tuple[_Entry, ...] = ()
    fan_out: tuple[_Selection, ...] = Field(default=(), alias="fanOut")


@dataclass(frozen=True, order=True)
class LockedBase:
    """What one base tag named: its digest, media type and platforms, and when."""

    reference: str  # as written in the specs
    digest: Digest
    media_type: str | None = None
    platforms: tuple[str, ...] = ()
    resolved: str = ""


@dataclass(frozen=True, order=True)
class LockedSelection:
    """The tags a fan-out spec selected (highest first); each is a base entry too."""

    spec: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class LockFile:
    path: Path
    bases: tuple[LockedBase, ...]  # sorted by reference, each once
    fan_out: tuple[LockedSelection, ...] = ()  # sorted by spec name

    def get(self, reference: str) -> LockedBase | None:
        return next((b for b in self.bases if b.reference == reference), None)

    def selection(self, spec: str) -> LockedSelection | None:
        return next((f for f in self.fan_out if f.spec == spec), None)


def lock_path(spec_file: str | Path) -> Path:
    """The lock file that covers a spec file: the one in its directory."""
    return Path(spec_file).absolute().parent / LOCK_NAME


def read_lock(path: Path) -> LockFile | None:
    """The lock at `path`; None when there is none. A malformed lock is a SpecError that names
    the file, the line and the field."""
    try:
        with path.open("rb") as handle:
            data = handle.read(LOCK_FILE_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpecError(SpecLocation(str(path)), f"cannot read: {exc.strerror or exc}") from None
    if len(data) > LOCK_FILE_LIMIT:
        raise SpecError(SpecLocation(str(path)), f"larger than {LOCK_FILE_LIMIT} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(SpecLocation(str(path)), f"not UTF-8 text: {exc.reason}") from None
    from reconciler.yamlsource import format_path, read_documents  # PyYAML: a lock exists

    documents = list(read_documents(str(path), text))
    if len(documents) != 1 or not isinstance(documents[0].value, dict):
        raise SpecError(SpecLocation(str(path)), "a lock file is one YAML mapping")
    document = documents[0]
    try:
        model = _Document.model_validate(document.value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        message = "unknown field" if err["type"] == "extra_forbidden" else str(err["msg"])
        where = SpecLocation(str(path), document.line_of(loc), format_path(loc) or None)
        raise SpecError(where, message) from None
    specs: set[str] = set()
    for i, chosen in enumerate(model.fan_out):
        where = SpecLocation(str(path), document.line_of(("fanOut", i)), f"fanOut[{i}]")
        if chosen.spec in specs:
            raise SpecError(where, f"{chosen.spec}'s selection is locked twice")
        specs.add(chosen.spec)
        bad = [t for t in chosen.tags if not TAG_PATTERN.fullmatch(t)]
        if bad or not chosen.tags:
            raise SpecError(where, f"tags must be one or more valid tags (got {bad or 'none'})")
    seen: set[str] = set()
    for i, entry in enumerate(model.bases):
        if entry.reference in seen:
            where = SpecLocation(str(path), document.line_of(("bases", i)), f"bases[{i}]")
            raise SpecError(where, f"{entry.reference} is locked twice")
        seen.add(entry.reference)
    bases = tuple(
        sorted(
            LockedBase(e.reference, e.digest, e.media_type, e.platforms, e.resolved)
            for e in model.bases
        )
    )
    selections = tuple(sorted(LockedSelection(f.spec, f.tags) for f in model.fan_out))
    return LockFile(path, bases, selections)


def lock_text(bases: tuple[LockedBase, ...], fan_out: tuple[LockedSelection, ...] = ()) -> str:
    """The one form a lock is written in: sorted, one field a line, values quoted as JSON."""
    lines = [HEADER + "apiVersion: reconciler.dev/v1alpha1", "kind: Lock"]
    lines.append("bases:" if bases else "bases: []")
    for base in sorted(bases):
        lines.append(f"  - reference: {_quote(base.reference)}")
        lines.append(f"    digest: {base.digest}")
        if base.media_type:
            lines.append(f"    mediaType: {_quote(base.media_type)}")
        lines.append(f"    platforms: [{', '.join(_quote(p) for p in base.platforms)}]")
        lines.append(f"    resolved: {_quote(base.resolved)}")
    if fan_out:
        lines.append("fanOut:")
        for selection in sorted(fan_out):
            lines.append(f"  - spec: {_quote(selection.spec)}")
            lines.append(f"    tags: [{', '.join(_quote(t) for t in selection.tags)}]")
    return "\n".join(lines) + "\n"


def write_lock(
    path: Path, bases: tuple[LockedBase, ...], fan_out: tuple[LockedSelection, ...] = ()
) -> bool:
    """Write the lock (atomically); False when the file already says exactly this."""
    text = lock_text(bases, fan_out)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text.encode())
    return True


def _quote(value: str) -> str:
    # JSON strings are YAML strings: every character escaped the same way, never a surprise.
    return json.dumps(value, ensure_ascii=False)


class LockSet:
    """The lock files of a run, read once each, by spec directory."""

    def __init__(self) -> None:
        self._files: dict[Path, LockFile | SpecError | None] = {}

    def for_spec(self, spec_file: str) -> LockFile | None:
        """The lock covering `spec_file`, or None; a malformed lock raises its SpecError."""
        return self.at(lock_path(spec_file))

    def at(self, path: Path) -> LockFile | None:
        if path not in self._files:
            try:
                self._files[path] = read_lock(path)
            except SpecError as exc:
                self._files[path] = exc
        found = self._files[path]
        if isinstance(found, SpecError):
            raise found
        return found
