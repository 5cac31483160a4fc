"""Render a run for people (`diff` text, like `terraform plan`) and for programs (`-o json`).

Pure: takes a RunReport, returns text. The JSON shape is documented in docs/diff-json.md and
is stable within `reconciler.dev/v1alpha1`.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.model.plan import BlobAction, BlobMethod, SpecPlan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState

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


def _blob_line(action: BlobAction) -> str:
    blob = action.blob
    what = f"{blob.role} {blob.descriptor.media_type.rsplit('.', 1)[-1]}"
    if action.method is BlobMethod.UPLOAD:
        how = "generated"
    elif action.method is BlobMethod.MOUNT:
        how = f"mount-from {action.source.repository if action.source else '?'}"
    else:
        how = f"copy-from {action.source}"
    return (
        f"  + blob     {blob.digest}  {human_size(blob.size):>10}  {how}  ({what})"
        f" -> {action.destination}"
    )


def _plan_lines(plan: SpecPlan) -> list[str]:
    lines = [_blob_line(action) for action in plan.blobs]
    for manifest in plan.manifests:
        kind = "index   " if manifest.is_index else "manifest"
        platform = f"  {manifest.platform}" if manifest.platform else ""
        lines.append(f"  + {kind} {manifest.document.digest}{platform} -> {manifest.destination}")
    for tag in plan.tags:
        sign, old = ("~", str(tag.old)) if tag.old else ("+", "(none)")
        lines.append(f"  {sign} tag      {tag.target}  {old} -> {tag.new}")
    return lines


def render_text(report: RunReport) -> str:
    lines: list[str] = []
    for spec in report.specs:
        label = spec.name or "(invalid)"
        header = f"{label} ({spec.file}): {spec.state}"
        if spec.state is SpecState.SYNCED and spec.plan is not None:
            tags = len(spec.plan.in_sync_tags) + len(spec.plan.tags)
            header += f", {_plural(tags, 'tag')} at {spec.plan.root}"
            if spec.result is not None:
                header += " (applied)"
        lines.append(header)
        if spec.plan is not None:
            lines.extend(_plan_lines(spec.plan))
        if spec.error:
            lines.append(f"  ! {spec.error}")
    lines.append("")
    lines.append(_total_line(report))
    return "\n".join(lines) + "\n"


def _total_line(report: RunReport) -> str:
    summary = summarize(report)
    specs = len(report.specs)
    parts = []
    if report.applied:
        parts.append(
            f"Applied: {summary['mounted']} blobs mounted, {summary['copied']} copied, "
            f"{summary['uploaded']} uploaded, {summary['skipped']} skipped "
            f"({human_size(summary['bytesPushed'])} pushed); "
            f"{_plural(summary['manifestsPushed'], 'manifest')}, "
            f"{_plural(summary['tagsSet'], 'tag')}"
        )
    elif not (summary["blobs"] or summary["manifests"] or summary["tags"]):
        parts.append("No changes")
    else:
        parts.append(
            f"Plan: {_plural(summary['blobs'], 'blob')} to push "
            f"({human_size(summary['bytes'])}: {summary['mounts']} mount, "
            f"{summary['copies']} copy, {summary['uploads']} generated), "
            f"{_plural(summary['manifests'], 'manifest')}, {_plural(summary['tags'], 'tag')}"
        )
    parts.append(f"{summary['inSync']} of {specs} specs in sync")
    for key, label in (("failed", "failed"), ("invalid", "invalid")):
        if summary[key]:
            parts.append(f"{summary[key]} {label}")
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
    plan = spec.plan
    if plan is not None:
        entry["blobs"] = [
            {
                "action": str(a.method),
                "digest": str(a.blob.digest),
                "size": a.blob.size,
                "mediaType": a.blob.descriptor.media_type,
                "role": a.blob.role,
                "source": str(a.source) if a.source else None,
                "destination": str(a.destination),
            }
            for a in plan.blobs
        ]
        entry["manifests"] = [
            {
                "kind": "index" if m.is_index else "manifest",
                "digest": str(m.document.digest),
                "mediaType": m.document.media_type,
                "size": len(m.document.raw),
                "platform": str(m.platform) if m.platform else None,
                "destination": str(m.destination),
            }
            for m in plan.manifests
        ]
        entry["tags"] = [
            {"reference": str(t.target), "from": str(t.old) if t.old else None, "to": str(t.new)}
            for t in plan.tags
        ]
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
