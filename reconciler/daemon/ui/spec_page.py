"""One spec's page (GET /specs/NAME): its lineage as far as the daemon holds it (the base as
the spec names it, each layer and its source, the image built, each target with its desired
and current digest), the plan while it is not in sync (the fields of `diff -o json`), its
fan-out images, and the spec as it was loaded (YAML, escaped).

Pure, as `page` is: every value escaped, relative URLs from `/specs/NAME` (`../`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from reconciler.daemon.status import LineageStep, SpecStatus
from reconciler.daemon.ui.page import (
    Board,
    attention,
    esc,
    message_text,
    page,
    section,
    short_digest,
    shown_path,
    state_badge,
    tags_list,
    when,
)
from reconciler.render import human_size, plan_json

ROOT = "../"


def _facts(status: SpecStatus, board: Board) -> str:
    reason = attention(status, board)
    rows = [
        ("State", state_badge(status.state) + (f" {esc(reason)}" if reason else "")),
        ("File", esc(shown_path(status.file, board))),
        ("Base policy", esc(board.policies.get(status.key, board.facts.base_policy))),
        ("Last attempt", when(status.last_attempt)),
        ("Last success", when(status.last_success)),
        ("Failures in a row", str(status.failures)),
        ("Message", message_text(status.message, board) or '<span class="none">none</span>'),
    ]
    items = "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in rows)
    return f'<section aria-label="Facts"><dl class="facts">{items}</dl></section>'


def _layer_words(layer: Any) -> str:
    """A layer as its spec writes it, on one line (its source and what it adds)."""
    fields = layer.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    return json.dumps(fields, sort_keys=True, default=str)


def _traced(steps: Sequence[LineageStep]) -> list[str]:
    """The lineage the last pass recorded: each step a box of the picture, in order."""
    items = []
    for step in steps:
        digest = f" {short_digest(step.digest)}" if step.digest else ""
        detail = f' <span class="detail">{esc(step.detail)}</span>' if step.detail else ""
        items.append(
            f'<li class="step step-{esc(step.kind.replace(" ", "-"))}">'
            f'<span class="kind">{esc(step.kind)}</span> <code>{esc(step.name)}</code>'
            f"{digest}{detail}</li>"
        )
    return items


def _declared(status: SpecStatus) -> list[str]:
    """Before any pass recorded one: the lineage as the spec writes it, and while it is not in
    sync the manifests its plan would push."""
    steps = []
    spec = status.spec
    if spec is not None:
        steps.append(f'<li><span class="kind">base</span> <code>{esc(spec.body.base)}</code></li>')
        for index, layer in enumerate(spec.body.layers):
            steps.append(
                f'<li><span class="kind">layer {index + 1}</span> '
                f"<code>{esc(_layer_words(layer))}</code></li>"
            )
    if status.plan is not None and status.plan.manifests:
        children = "".join(
            f"<li>{esc('index' if m.is_index else 'manifest')} "
            f"{short_digest(str(m.document.digest))}"
            f"{' ' + esc(m.platform) if m.platform else ''}</li>"
            for m in status.plan.manifests
        )
        steps.append(f'<li><span class="kind">built (to push)</span><ul>{children}</ul></li>')
    return steps


def _lineage(status: SpecStatus, board: Board) -> str:
    traced = board.lineage(status.key)
    steps = _traced(traced) if traced else _declared(status)
    targets = tags_list(status.tags)
    steps.append(f'<li class="step step-targets"><span class="kind">targets</span> {targets}</li>')
    return section("lineage", "Lineage", f'<ol class="lineage">{"".join(steps)}</ol>')


def _plan(status: SpecStatus) -> str:
    if status.plan is None:
        return ""
    shown = plan_json(status.plan)
    rows = [
        f"<tr><td>blob</td><td>{short_digest(b['digest'])}</td>"
        f"<td>{esc(b['action'])} {esc(human_size(b['size']))}</td>"
        f"<td>{esc(b['destination'])}</td></tr>"
        for b in shown["blobs"]
    ]
    rows += [
        f"<tr><td>{esc(m['kind'])}</td><td>{short_digest(m['digest'])}</td>"
        f"<td>{esc(m['platform'] or '')}</td><td>{esc(m['destination'])}</td></tr>"
        for m in shown["manifests"]
    ]
    rows += [
        f"<tr><td>tag</td><td>{short_digest(t['to'])}</td>"
        f"<td>from {short_digest(t['from'])}</td><td>{esc(t['reference'])}</td></tr>"
        for t in shown["tags"]
    ]
    whole = json.dumps(shown, indent=2)
    return section(
        "plan",
        "Plan (not in sync)",
        '<table class="specs plan"><thead><tr><th scope="col">What</th>'
        '<th scope="col">Digest</th><th scope="col">How</th><th scope="col">Where</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<details><summary>As diff -o json</summary><pre class="json">{esc(whole)}</pre>'
        "</details>",
    )


def _instances(status: SpecStatus, board: Board) -> str:
    if not status.instances:
        return ""
    items = "".join(
        f"<li>{esc(i.name)} {state_badge(i.state)} {tags_list(i.tags)} "
        f"{message_text(i.message, board)}</li>"
        for i in status.instances
    )
    return section("instances", "Images", f'<ul class="attention">{items}</ul>')


def _source(status: SpecStatus) -> str:
    if status.spec is None:
        return ""
    text = yaml.safe_dump(status.spec.document.value, sort_keys=False, allow_unicode=True)
    return section("yaml", "The spec as loaded", f'<pre class="yaml">{esc(text)}</pre>')


def _events(status: SpecStatus, board: Board) -> str:
    """The spec's last events (what notifications carry), the newest first."""
    notes = board.events(status.key)
    if not notes:
        body = '<p class="none">No event yet.</p>'
    else:
        rows = "".join(
            f'<tr><td><time datetime="{esc(n.time)}">{esc(n.time)}</time></td>'
            f"<td>{esc(n.kind)}</td><td>{state_badge(n.state)}</td>"
            f"<td>{message_text(n.message, board)}</td></tr>"
            for n in notes
        )
        body = (
            '<table class="specs events"><thead><tr><th scope="col">When</th>'
            '<th scope="col">Event</th><th scope="col">State</th><th scope="col">Message</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    return section("events", "Last events", body)


def spec_fragment(status: SpecStatus, board: Board) -> str:
    return (
        _facts(status, board)
        + _lineage(status, board)
        + _plan(status)
        + _events(status, board)
        + _instances(status, board)
        + _source(status)
    )


def spec_page(status: SpecStatus, board: Board, etag: str | None = None) -> str:
    shown = shown_path(status.key, board)
    heading = f"<h1>{esc(shown)}</h1>"
    title = f"{shown}: {status.state} - reconciler"
    body = spec_fragment(status, board)
    return page(title, heading, body, root=ROOT, live="?fragment=1", etag=etag)


def missing_page(name: str) -> str:
    body = f'<p>No spec is named {esc(name)}. <a href="{ROOT}">All specs</a></p>'
    return page("no such spec - reconciler", "<h1>No such spec</h1>", body, root=ROOT)
