"""Fan-out: which tags of a base repository a spec builds on (`baseTags`), and the concrete
spec for each. Pure: the tag list comes in, the selection and the instances go out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.oci.location import Address, parse_target, render_template
from reconciler.oci.reference import TAG_PATTERN
from reconciler.spec import LoadedSpec, TagSelection
from reconciler.trust.artifacts import is_artifact_tag

if TYPE_CHECKING:  # packaging is imported where a spec fans out (start-up, #13)
    from packaging.version import Version


def select_tags(tags: Iterable[str], selection: TagSelection) -> tuple[str, ...]:
    """The selected tags, highest first: those the regex matches whole, whose version (the
    regex's `version` group, else the tag) is in the range, sorted, the first `keep`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    pattern = re.compile(selection.regex) if selection.regex else None
    wanted = SpecifierSet(selection.semver) if selection.semver else None
    by_version = (
        selection.sort or ("semver" if wanted is not None else "alphabetical")
    ) == "semver"
    found: list[tuple[Version | None, str]] = []
    for tag in set(tags):
        if not TAG_PATTERN.fullmatch(tag) or is_artifact_tag(tag):
            continue  # not a tag a reference can name, or a signature's or referrers' tag
        text = tag
        if pattern is not None:
            match = pattern.fullmatch(tag)
            if match is None:
                continue
            text = match.groupdict().get("version") or tag
        version = _version(text) if by_version or wanted is not None else None
        if (by_version or wanted is not None) and version is None:
            continue  # neither in a range nor in version order
        # Pre-releases only when the range names one (PEP 440), whatever packaging's default,
        # and never when versions are only sorted.
        if wanted is not None and (
            version is None or not wanted.contains(version, prereleases=bool(wanted.prereleases))
        ):
            continue
        if wanted is None and version is not None and version.is_prerelease:
            continue
        found.append((version, tag))
    if by_version:
        found.sort(key=lambda vt: (vt[0] or Version("0"), vt[1]), reverse=True)
    else:
        found.sort(key=lambda vt: vt[1], reverse=True)
    chosen = [tag for _, tag in found]
    return tuple(chosen[: selection.keep] if selection.keep else chosen)


def _version(text: str) -> Version | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def instance_name(spec_name: str, tag: str) -> str:
    return f"{spec_name}[{tag}]"


def instance_base(base: str, tag: str) -> str:
    """The base of one instance: the spec's repository at a selected tag."""
    return f"{base}:{tag}"


def instances(spec: LoadedSpec, tags: Iterable[str]) -> tuple[LoadedSpec, ...]:
    """One concrete spec per selected tag: the base at that tag, the targets rendered."""
    body = spec.body
    out = []
    for tag in tags:
        targets = tuple(_render(t, tag, spec.name) for t in body.targets)
        # Every value here is validated already (the tag against the tag grammar, each target
        # by parse_target), so the copy needs no second validation.
        concrete = body.model_copy(
            update={"base": instance_base(body.base, tag), "base_tags": None, "targets": targets}
        )
        out.append(
            LoadedSpec(
                instance_name(spec.name, tag),
                spec.file,
                spec.line,
                concrete,
                spec.document,
                group=spec.name,
            )
        )
    return tuple(out)


def _render(template: Address, tag: str, name: str) -> Address:
    assert template.tag is not None  # noqa: S101 - a fan-out target always has its template
    text = f"{template.location}:{render_template(template.tag, tag, name)}"
    # The location is already absolute; rendering only fills the tag in.
    return parse_target(text, Path("/"))
