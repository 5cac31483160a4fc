"""Render a run for people (`diff` text, like `terraform plan`), for programs (`-o json`) and
for pull-request comments (`-o markdown`).

Pure: takes a RunReport, returns text. The JSON shape is documented in docs/diff-json.md and
is stable within `reconciler.dev/v1alpha1`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from reconciler.model.plan import BlobAction, BlobMethod, SpecPlan
from reconciler.model.report import ExecResult, RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.digest import Digest

DIFF_KIND = "Diff"
API_VERSION = "reconciler.dev/v1alpha1"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def blob_how(action: BlobAction) -> str:
    """How a blob gets to its destination, in the words of -o json's `action`: `upload`,
    `mount from REPOSITORY`, `copy from SOURCE` (text and markdown alike)."""
    if action.method is BlobMethod.UPLOAD:
        return "upload"
    if action.method is BlobMethod.MOUNT:
        return f"mount from {action.mount_from.repository if action.mount_from else '?'}"
    return f"copy from {action.source}"


def _digest(digest: Digest, full: bool) -> str:
    return str(digest) if full else digest.short


def plan_lines(plan: SpecPlan, *, full: bool = False) -> list[str]:
    """A plan, one line per blob, manifest, tag and artifact: short digests unless `full`
    (the text output with -v; -o json always has them whole)."""
    lines = []
    for action in plan.blobs:
        blob = action.blob
        what = f"{blob.role} {blob.descriptor.media_type.rsplit('.', 1)[-1]}"
        lines.append(
            f"+ blob     {_digest(blob.digest, full)}  {human_size(blob.size):>10}  "
            f"{blob_how(action)}  ({what}) -> {action.destination}"
        )
    for manifest in plan.manifests:
        kind = "index   " if manifest.is_index else "manifest"
        platform = f"  {manifest.platform}" if manifest.platform else ""
        digest = _digest(manifest.document.digest, full)
        lines.append(f"+ {kind} {digest}{platform} -> {manifest.destination}")
    for tag in plan.tags:
        sign, old = ("~", _digest(tag.old, full)) if tag.old else ("+", "(none)")
        lines.append(f"{sign} tag      {tag.target}  {old} -> {_digest(tag.new, full)}")
    return lines + _artifact_lines(plan)


def _artifact_lines(plan: SpecPlan) -> list[str]:
    """One line per artifact pushed beside the image: "+ signature  host/repo:sha256-….sig
    signature of sha256:1a2b for host/repo:v1 (key 0f3c…) (1 blob, 243 B)"."""
    lines = []
    for artifact in plan.artifacts:
        tags = artifact.plan.tags
        where = str(tags[0].target) if tags else ""
        sign = "~" if tags and tags[0].old else "+"
        pushed = [a for a in artifact.plan.blobs if a.method is not BlobMethod.MOUNT]
        size = sum(a.blob.size for a in pushed)
        blobs = f" ({_plural(len(pushed), 'blob')}, {human_size(size)})" if pushed else ""
        lines.append(f"{sign} {artifact.kind:<9} {where}  {artifact.label}{blobs}")
    return lines


def describe_applied(plan: SpecPlan, result: ExecResult) -> str:
    """What applying one plan did, for the log: "2 tags moved, 3 blobs (1.2 MiB) pushed"."""
    moved = sum(1 for tag in plan.tags if tag.old is not None)
    pushed = result.copied + result.uploaded
    parts = [
        f"{_plural(moved, 'tag')} moved" if moved else "",
        f"{_plural(len(plan.tags) - moved, 'tag')} created" if len(plan.tags) > moved else "",
        f"{_plural(pushed, 'blob')} ({human_size(result.bytes_pushed)}) pushed" if pushed else "",
        f"{_plural(result.mounted, 'blob')} mounted" if result.mounted else "",
        f"{_plural(result.manifests, 'manifest')} pushed" if result.manifests else "",
        f"{_plural(result.artifacts, 'artifact')} (signatures, attestations, referrers) written"
        if result.artifacts
        else "",
    ]
    return ", ".join(p for p in parts if p) or "nothing to push"


def render_text(report: RunReport, *, verbose: bool = False) -> str:
    """One line per spec; a diff adds the plan under it. An apply says what it did per spec
    (the plan it carried out with `verbose`, which also shows digests whole)."""
    lines: list[str] = []
    for spec in report.specs:
        label = spec.name or "(invalid)"
        header = f"{label} ({spec.file}): {spec.state}"
        if spec.state is SpecState.SYNCED and spec.plan is not None:
            tags = len(spec.plan.in_sync_tags) + len(spec.plan.tags)
            header += f", {_plural(tags, 'tag')} at {_digest(spec.plan.root, verbose)}"
            if spec.result is not None:
                header += f" (applied: {describe_applied(spec.plan, spec.result)})"
        lines.append(header)
        shown = spec.plan is not None and (verbose or spec.result is None)
        if spec.plan is not None and shown:
            lines.extend(f"  {line}" for line in plan_lines(spec.plan, full=verbose))
        if spec.error:
            lines.append(f"  ! {spec.error}")
    lines.append("")
    lines.append(_total_line(report))
    return "\n".join(lines) + "\n"


def _total_line(report: RunReport) -> str:
    summary = summarize(report)
    specs = len(report.specs)
    if report.applied:
        changed = any(s.result is not None for s in report.specs)
    else:
        changed = bool(summary["blobs"] or summary["manifests"] or summary["tags"])
    if not changed and (summary["failed"] or summary["invalid"]):
        return _failures_line(summary, specs)
    parts = []
    if report.applied:
        parts.append(
            f"Applied: {summary['mounted']} blobs mounted, {summary['copied']} copied, "
            f"{summary['uploaded']} uploaded, {summary['skipped']} skipped "
            f"({human_size(summary['bytesPushed'])} pushed); "
            f"{_plural(summary['manifestsPushed'], 'manifest')}, "
            f"{_plural(summary['tagsSet'], 'tag')}"
            + (
                f", {_plural(summary['artifactsWritten'], 'artifact')}"
                if summary["artifactsWritten"]
                else ""
            )
        )
    elif not (summary["blobs"] or summary["manifests"] or summary["tags"]):
        parts.append("No changes")
    else:
        parts.append(
            f"Plan: {_plural(summary['blobs'], 'blob')} to push "
            f"({human_size(summary['bytes'])}: {summary['mounts']} mount, "
            f"{summary['copies']} copy, {summary['uploads']} upload), "
            f"{_plural(summary['manifests'], 'manifest')}, {_plural(summary['tags'], 'tag')}"
        )
    parts.append(f"{summary['inSync']} of {specs} specs in sync")
    for key, label in (
        ("failed", "failed"),
        ("invalid", "invalid"),
        ("suspended", "suspended"),
        ("baseMoved", "with a moved base"),
    ):
        if summary[key]:
            parts.append(f"{summary[key]} {label}")
    return "; ".join(parts) + "."


def _failures_line(summary: dict[str, int], specs: int) -> str:
    """The total of a run where only failures happened: never "No changes", since what the
    failed specs would change is unknown."""
    broken = summary["failed"] + summary["invalid"]
    what = [f"{_plural(summary[k], 'spec')} {k}" for k in ("failed", "invalid") if summary[k]]
    parts = [", ".join(what)]
    if specs > broken:
        parts.append("nothing to push for the " + ("other" if specs - broken == 1 else "others"))
    parts.append(f"{summary['inSync']} of {specs} specs in sync")
    return "; ".join(parts) + "."


def summarize(report: RunReport) -> dict[str, int]:
    plans = [s.plan for s in report.specs if s.plan is not None and s.result is None]
    results = [s.result for s in report.specs if s.result is not None]
    blob_actions = [a for p in plans for a in p.blobs]
    return {
        "specs": len(report.specs),
        "inSync": report.count(SpecState.SYNCED),
        "outOfSync": report.count(SpecState.OUT_OF_SYNC),
        "failed": report.count(SpecState.FAILED),
        "invalid": report.count(SpecState.INVALID),
        "suspended": report.count(SpecState.SUSPENDED),
        "baseMoved": report.count(SpecState.BASE_MOVED),
        "blobs": len(blob_actions),
        "bytes": sum(p.bytes_to_push for p in plans),
        "mounts": sum(1 for a in blob_actions if a.method is BlobMethod.MOUNT),
        "copies": sum(1 for a in blob_actions if a.method is BlobMethod.COPY),
        "uploads": sum(1 for a in blob_actions if a.method is BlobMethod.UPLOAD),
        "manifests": sum(len(p.manifests) for p in plans),
        "tags": sum(len(p.tags) for p in plans),
        "mounted": sum(r.mounted for r in results),
        "copied": sum(r.copied for r in results),
        "uploaded": sum(r.uploaded for r in results),
        "skipped": sum(r.skipped for r in results),
        "bytesPushed": sum(r.bytes_pushed for r in results),
        "manifestsPushed": sum(r.manifests for r in results),
        "tagsSet": sum(r.tags for r in results),
        "artifactsWritten": sum(r.artifacts for r in results),
    }


def plan_json(plan: SpecPlan) -> dict[str, Any]:
    """A plan's blobs, manifests and tags, as `diff -o json` and the daemon's /status show it
    (docs/diff-json.md): one function, so both always agree."""
    return {
        "blobs": [
            {
                "action": str(a.method),
                "digest": str(a.blob.digest),
                "size": a.blob.size,
                "mediaType": a.blob.descriptor.media_type,
                "role": a.blob.role,
                "source": str(a.mount_from or a.source or "") or None,
                "destination": str(a.destination),
            }
            for a in plan.blobs
        ],
        "manifests": [
            {
                "kind": "index" if m.is_index else "manifest",
                "digest": str(m.document.digest),
                "mediaType": m.document.media_type,
                "size": len(m.document.raw),
                "platform": str(m.platform) if m.platform else None,
                "destination": str(m.destination),
            }
            for m in plan.manifests
        ],
        "tags": [
            {"reference": str(t.target), "from": str(t.old) if t.old else None, "to": str(t.new)}
            for t in plan.tags
        ],
        "artifacts": [
            {"kind": str(a.kind), "label": a.label, "plan": plan_json(a.plan)}
            for a in plan.artifacts
        ],
    }


def _spec_json(spec: SpecReport) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name,
        "file": spec.file,
        "state": str(spec.state),
        "error": spec.error,
        "desired": str(spec.desired.root.digest) if spec.desired else None,
        "mirror": spec.desired.mirror if spec.desired else None,
        "targets": [],
        "blobs": [],
        "manifests": [],
        "tags": [],
    }
    if spec.observed is not None and spec.desired is not None:
        entry["targets"] = [
            {
                "reference": str(tag.target),
                "observed": str(tag.digest) if tag.digest else None,
                "desired": str(spec.desired.root.digest),
            }
            for tag in spec.observed.tags
        ]
    if spec.plan is not None:
        entry.update(plan_json(spec.plan))
    if spec.result is not None:
        r = spec.result
        entry["applied"] = {
            "mounted": r.mounted,
            "copied": r.copied,
            "uploaded": r.uploaded,
            "skipped": r.skipped,
            "bytesPushed": r.bytes_pushed,
            "manifests": r.manifests,
            "tags": r.tags,
            "artifacts": r.artifacts,
        }
    return entry


def render_json(report: RunReport) -> str:
    document = {
        "apiVersion": API_VERSION,
        "kind": DIFF_KIND,
        "applied": report.applied,
        "specs": [_spec_json(s) for s in report.specs],
        "summary": summarize(report),
    }
    return json.dumps(document, indent=2) + "\n"


# Markdown for pull-request comments. Everything a spec author, a store or a registry controls
# (names, files, references, messages) is escaped where it is placed, and the whole comment
# stays under GitHub's 65,536-character limit however many specs change.

MARKDOWN_LIMIT = 65_000
MARKDOWN_MARKER = "<!-- reconciler-diff -->"  # lets a CI job find and edit its earlier comment
_MAX_NAME = 200  # characters of a name or a file shown: a cell stays a cell
_MAX_PLAN_LINES = 100  # per spec, so that one huge spec cannot crowd all the others out
_MAX_LINE = 400
_MAX_ERROR = 2_000
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -/,.")
_BACKTICKS = re.compile(r"`+")
_DIFF_HEAD = (
    "| spec | state | tags to move | blobs to push | bytes to push |",
    "|---|---|--:|--:|--:|",
)
_APPLY_HEAD = (
    "| spec | state | tags moved | blobs pushed | bytes pushed |",
    "|---|---|--:|--:|--:|",
)


def _visible(text: str, keep: str = "") -> str:
    """Control and format characters (newlines, bidi overrides, ...) are shown as escapes, not
    obeyed: a message cannot add a line to a cell or reorder what a reader sees."""
    return "".join(
        char
        if char == " " or char in keep or unicodedata.category(char)[0] not in "CZ"
        else f"\\u{ord(char):04x}"
        for char in text
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def md_code(text: str) -> str:
    """`text` as an inline <code> element, safe in a table cell and inside <summary>.

    Every ASCII character but letters, digits, space, '-', '/', ',' and '.' becomes a numeric
    entity: no '|' splits a cell, no '<' opens a tag, no backtick, '*', '_', '[', '$' or '\\'
    means anything to Markdown, and no 'http:' or 'a@b' becomes a link. A '.' is kept (file
    names read as written) except after 'www', where GitHub would start a link. Entities are decoded
    after Markdown has parsed, so they show as the characters they stand for. The code element
    keeps GitHub from turning an '@team' in a name into a mention.
    """
    shown = _visible(_clip(text, _MAX_NAME))
    body = "".join(
        char
        if (char in _SAFE or ord(char) > 127)
        and not (char == "." and shown[max(0, i - 3) : i].lower() == "www")
        else f"&#{ord(char)};"
        for i, char in enumerate(shown)
    )
    return f"<code>{body}</code>"


def md_fence(lines: list[str], info: str = "") -> str:
    """A fenced code block that no line can close early: the fence is longer than any run of
    backticks inside (CommonMark: a closing fence is at least as long as the opening one)."""
    body = [_visible(line, keep="\t") for line in lines]
    longest = max((len(run) for line in body for run in _BACKTICKS.findall(line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + info, *body, fence])


def _md_plan(plan: SpecPlan) -> list[str]:
    """The text plan's lines (short digests), at most _MAX_PLAN_LINES of them."""
    lines = plan_lines(plan)
    if len(lines) > _MAX_PLAN_LINES:
        more = len(lines) - _MAX_PLAN_LINES
        lines = [*lines[:_MAX_PLAN_LINES], f"  … {more} more lines (-o json has them all)"]
    return [_clip(line, _MAX_LINE) for line in lines]


def _md_row(spec: SpecReport) -> str:
    label = md_code(spec.name or spec.file)
    result, plan = spec.result, spec.plan
    if result is not None:
        blobs = result.mounted + result.copied + result.uploaded
        cells = [str(result.tags), str(blobs), human_size(result.bytes_pushed)]
    elif plan is not None:
        cells = [str(len(plan.tags)), str(len(plan.blobs)), human_size(plan.bytes_to_push)]
    else:
        cells = ["—", "—", "—"]
    return f"| {label} | {spec.state} | " + " | ".join(cells) + " |"


def _md_section(spec: SpecReport) -> str:
    """One collapsible section: the plan in a diff block (GitHub colours + lines), then the
    error. A blank line after <summary> ends the HTML block so the fence is Markdown again."""
    if (spec.plan is None or spec.plan.in_sync) and not spec.error:
        return ""  # nothing to unfold: the row says it all
    summary = f"{md_code(spec.name or spec.file)} {spec.state}"
    if spec.name is not None:
        summary += f" in {md_code(spec.file)}"
    parts = [f"<details><summary>{summary}</summary>", ""]
    if spec.plan is not None and not spec.plan.in_sync:
        parts += [md_fence(_md_plan(spec.plan), "diff"), ""]
    if spec.error:
        parts += [md_fence(_clip(spec.error, _MAX_ERROR).splitlines() or [""], "text"), ""]
    parts.append("</details>")
    return "\n".join(parts)


def _md_changed(spec: SpecReport) -> bool:
    """Worth a row: anything with work, an error or news (a moved base); a suspended spec has
    none of these and is only counted, like a synced one."""
    if spec.plan is not None and not spec.plan.in_sync:
        return True
    return spec.state not in (SpecState.SYNCED, SpecState.SUSPENDED) or bool(spec.error)


def _md_omitted(count: int, command: str) -> str:
    specs = "spec" if count == 1 else "specs"
    return (
        f"_{count} more {specs} left out to stay under GitHub's comment size limit; "
        f"`reconciler {command} -o json` has them all._"
    )


def render_markdown(report: RunReport) -> str:
    """A pull-request comment: heading, total, one table row per spec that is not in sync (all
    specs when none changed), one collapsible section per changed or failed spec. Failed and
    invalid specs come first, so a cut for size never hides an error behind many changes."""
    command = "apply" if report.applied else "diff"
    head = [MARKDOWN_MARKER, f"### reconciler {command}", "", _total_line(report), ""]
    changed = [s for s in report.specs if _md_changed(s)]
    changed.sort(key=lambda s: s.state not in (SpecState.FAILED, SpecState.INVALID))
    listed = changed or list(report.specs)
    if not listed:
        return "\n".join(head)
    head += _APPLY_HEAD if report.applied else _DIFF_HEAD
    # Room left once the fixed parts and the longest possible "left out" line are counted.
    room = MARKDOWN_LIMIT - len("\n".join(head)) - len(_md_omitted(len(listed), command)) - 8
    rows: list[str] = []
    sections: list[str] = []
    for spec in listed:
        row, section = _md_row(spec), _md_section(spec)
        cost = len(row) + 1 + (len(section) + 2 if section else 0)
        if cost > room:
            break
        room -= cost
        rows.append(row)
        if section:
            sections.append(section)
    lines = [*head, *rows, ""]
    if sections:
        lines += ["\n\n".join(sections), ""]
    if len(rows) < len(listed):
        lines += [_md_omitted(len(listed) - len(rows), command), ""]
    return "\n".join(lines)
