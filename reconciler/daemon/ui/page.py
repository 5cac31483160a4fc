"""The overview page as HTML, rendered on the server so that it reads without JavaScript.

Pure: a `BoardView` and the daemon's facts in, text out. Every value that comes from a spec, a
registry or an error goes through `_e` (html.escape, quotes included): a spec named
`<img src=x onerror=...>` is text. URLs are relative (`./static/app.css`, `?page=2`), so the
page works behind an Ingress that serves it under a path prefix. No inline script or style:
the Content-Security-Policy forbids both.

The list is paged (`PAGE_SIZE` rows): with 10,000 specs a page is still a hundred rows of DOM.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from reconciler.daemon.status import (
    BoardView,
    EventNote,
    InstanceStatus,
    LineageStep,
    SpecStatus,
    TagStatus,
)
from reconciler.model.state import SpecState

PAGE_SIZE = 100
ATTENTION_SHOWN = 20  # the "needs attention" list shows this many; the filter shows them all
ATTENTION = "attention"  # the pseudo-state of the filter: every spec the list would name
_QUERY_CAP = 400  # characters of a search kept (a query string is the client's)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class Query:
    """What the page was asked for: `?state=Failed&q=web&page=2` (all optional)."""

    state: str | None = None
    text: str = ""
    page: int = 1
    sort: str = "name"  # a key of SORTS, `-` first for the other way round

    @classmethod
    def parse(cls, query_string: str) -> Query:
        fields = parse_qs(query_string, max_num_fields=16)
        state = (fields.get("state") or [""])[0]
        known = {str(s) for s in SpecState} | {ATTENTION}
        page = (fields.get("page") or ["1"])[0]
        sort = (fields.get("sort") or ["name"])[0]
        return cls(
            state if state in known else None,
            (fields.get("q") or [""])[0].strip()[:_QUERY_CAP],
            max(1, int(page)) if page.isascii() and page.isdigit() and len(page) < 7 else 1,
            sort if sort.removeprefix("-") in SORTS else "name",
        )

    def link(self, **changes: object) -> str:
        """A relative link to this page with `changes` (state, q, page, sort, fragment):
        `?...`, or `./` for the page as it comes."""
        fields: dict[str, object] = {
            "state": self.state,
            "q": self.text,
            "page": self.page,
            "sort": self.sort,
        }
        fields |= changes
        if fields["page"] == 1:
            del fields["page"]
        if fields["sort"] == "name":
            del fields["sort"]
        kept = {k: str(v) for k, v in fields.items() if v not in (None, "")}
        return "?" + urlencode(kept) if kept else "./"


@dataclass(frozen=True)
class Counter:
    """One counter of the daemon's metrics, by its labels: `(("registry", "accepted"), 3.0)`."""

    title: str
    values: tuple[tuple[tuple[str, ...], float], ...]

    def count(self, *labels: str) -> float:
        """The sum over the series whose last labels are `labels` (all series without)."""
        n = len(labels)
        return sum(v for key, v in self.values if not n or key[-n:] == labels)


@dataclass(frozen=True)
class DaemonFacts:
    version: str
    shard: str
    mode: str
    base_policy: str
    ready: bool
    started: float
    resync_interval: float
    counters: tuple[Counter, ...] = ()
    specs_dir: str = ""  # shown paths are relative to it
    last_resync: float | None = None  # when the last resync began
    last_resync_seconds: float | None = None  # how long it took (None: none ended yet)
    next_resync: float | None = None
    budgets: tuple[tuple[str, float, int | None], ...] = ()  # (host, requests/s, burst)


@dataclass(frozen=True)
class Board:
    """What the page shows: the board's view and what the snapshot adds beside it."""

    view: BoardView
    policies: Mapping[str, str]
    waiting: Mapping[str, str]  # spec name -> host whose request budget it waits for
    facts: DaemonFacts
    events: Callable[[str], Sequence[EventNote]] = lambda _name: ()  # a spec's, newest first
    lineage: Callable[[str], Sequence[LineageStep]] = lambda _name: ()  # its last pass's


# -- which specs, in which order ----------------------------------------------------------


def attention(status: SpecStatus, board: Board) -> str | None:
    """Why a spec needs someone to look at it, or None."""
    state = status.state
    if state is SpecState.FAILED:
        failures = status.failures
        return f"failed {failures} times in a row" if failures > 1 else "failed"
    if state is SpecState.INVALID:
        return "its file is invalid"
    if state is SpecState.BASE_MOVED:
        return "its locked base tag moved: update the lock"
    if state is SpecState.OUT_OF_SYNC and board.facts.mode == "observe":
        return "not in sync (observe mode: nothing is written)"
    if status.key in board.waiting:
        return f"waiting for the request budget of {board.waiting[status.key]}"
    return None


def _haystack(status: SpecStatus) -> str:
    """What a search looks in: name, file, targets (so registries) and digests."""
    parts = [status.key, status.file]
    for tags in (status.tags, *(i.tags for i in status.instances)):
        for tag in tags:
            parts += [tag.target, tag.desired or "", tag.observed or ""]
    parts += [i.name for i in status.instances]
    return "\n".join(parts).lower()


def _in_state(status: SpecStatus, board: Board, state: str | None) -> bool:
    """Whether the filter takes a spec: its state, one of its instances', or attention."""
    if state is None:
        return True
    if state == ATTENTION:
        return attention(status, board) is not None
    return str(status.state) == state or any(str(i.state) == state for i in status.instances)


# The columns a table sorts by (`?sort=state`, `?sort=-attempt`): worst state first, the
# latest times first; ties by name.
_STATE_ORDER = {
    str(s): i
    for i, s in enumerate(
        (
            SpecState.FAILED,
            SpecState.INVALID,
            SpecState.BASE_MOVED,
            SpecState.OUT_OF_SYNC,
            SpecState.PROGRESSING,
            SpecState.SUSPENDED,
            SpecState.ORPHANED,
            SpecState.SYNCED,
        )
    )
}
SORTS: dict[str, Callable[[SpecStatus], Any]] = {
    "name": lambda s: s.key,
    "file": lambda s: (s.file, s.key),
    "state": lambda s: (_STATE_ORDER.get(str(s.state), len(_STATE_ORDER)), s.key),
    "attempt": lambda s: (-(s.last_attempt or 0.0), s.key),
    "success": lambda s: (-(s.last_success or 0.0), s.key),
}


def matching(board: Board, query: Query) -> list[SpecStatus]:
    text = query.text.lower()
    found = [
        status
        for status in board.view.specs
        if _in_state(status, board, query.state) and (not text or text in _haystack(status))
    ]
    key = query.sort.removeprefix("-")
    if key != "name" or query.sort.startswith("-"):  # the board is in name order already
        found.sort(key=SORTS[key], reverse=query.sort.startswith("-"))
    return found


def _sorted_by(query: Query, key: str, label: str) -> str:
    """A column head that sorts by `key`, and the other way round when it already does."""
    now = query.sort.removeprefix("-")
    down = query.sort.startswith("-")
    target = f"-{key}" if now == key and not down else key
    aria = ""
    if now == key:  # the times sort latest first: descending unless turned round
        descending = down != (key in ("attempt", "success"))
        aria = f' aria-sort="{"descending" if descending else "ascending"}"'
    link = esc(query.link(sort=target, page=1))
    return f'<th scope="col"{aria}><a href="{link}">{esc(label)}</a></th>'


# -- pieces ---------------------------------------------------------------------------------


def section(ident: str, title: str, body: str) -> str:
    """A titled section of a page, its heading naming it for screen readers."""
    return (
        f'<section aria-labelledby="{ident}-h"><h2 id="{ident}-h">{esc(title)}</h2>{body}</section>'
    )


def state_badge(state: SpecState | str) -> str:
    """A state in colour and in words (the colour is never the only sign)."""
    name = str(state)
    return f'<span class="state state-{esc(name.lower())}">{esc(name)}</span>'


def short_digest(digest: str | None) -> str:
    if digest is None:
        return '<span class="none">none</span>'
    hex_part = digest.partition(":")[2] or digest
    return f'<code class="digest" title="{esc(digest)}">{esc(hex_part[:12])}</code>'


def when(seconds: float | None) -> str:
    if seconds is None:
        return '<span class="none">never</span>'
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return f'<time datetime="{iso}">{iso.replace("T", " ")}</time>'


def spec_link(key: str, board: Board) -> str:
    return f'<a href="./specs/{esc(quote(key, safe=""))}">{esc(shown_path(key, board))}</a>'


def shown_path(text: str, board: Board) -> str:
    """A file (or a `file:` key) relative to the specs directory, as the operator wrote it."""
    prefix = board.facts.specs_dir.rstrip("/") + "/"
    if prefix == "/":
        return text
    for lead in ("", "file:"):
        if text.startswith(lead + prefix):
            return lead + text[len(lead) + len(prefix) :]
    return text


def tags_list(tags: Sequence[TagStatus]) -> str:
    if not tags:
        return '<span class="none">none yet</span>'
    items = []
    for tag in tags:
        differs = tag.desired != tag.observed
        mark = ' <span class="differs">differs</span>' if differs else ""
        items.append(
            f'<li><span class="target">{esc(tag.target)}</span> '
            f'<span class="pair"><span class="label">desired</span> {short_digest(tag.desired)} '
            f'<span class="label">current</span> {short_digest(tag.observed)}{mark}</span></li>'
        )
    return f'<ul class="tags">{"".join(items)}</ul>'


def message_text(message: str | None, board: Board) -> str:
    if not message:
        return ""
    prefix = board.facts.specs_dir.rstrip("/") + "/"
    shown = message.replace(prefix, "") if prefix != "/" else message
    return f'<span class="message">{esc(shown)}</span>'


def _row(status: SpecStatus, board: Board) -> str:
    policy = board.policies.get(status.key)
    extra = f' <span class="policy">{esc(policy)}</span>' if policy else ""
    rows = [
        f'<tr class="spec" data-state="{esc(status.state)}">'
        f'<th scope="row">{spec_link(status.key, board)}{extra}</th>'
        f"<td>{esc(shown_path(status.file, board))}</td><td>{state_badge(status.state)}</td>"
        f"<td>{tags_list(status.tags)}</td>"
        f"<td>{when(status.last_attempt)}</td><td>{when(status.last_success)}</td>"
        f"<td>{message_text(status.message, board)}</td></tr>"
    ]
    rows += [_instance_row(i, board) for i in status.instances]
    return "".join(rows)


def _instance_row(instance: InstanceStatus, board: Board) -> str:
    return (
        f'<tr class="instance" data-state="{esc(instance.state)}">'
        f'<th scope="row"><span class="fanout" aria-hidden="true">&#8627;</span> '
        f"{esc(instance.name)}</th><td></td><td>{state_badge(instance.state)}</td>"
        f'<td>{tags_list(instance.tags)}</td><td colspan="2"></td>'
        f"<td>{message_text(instance.message, board)}</td></tr>"
    )


# -- sections -------------------------------------------------------------------------------


def _counts(board: Board, query: Query) -> str:
    counts = board.view.counts()
    every = ' aria-current="true"' if query.state is None else ""
    items = [
        f'<li><a href="{esc(query.link(state=None, page=1))}"{every}>'
        f'<span class="state state-all">All</span> <b>{len(board.view.specs)}</b></a></li>'
    ]
    for state, count in counts.items():
        if not count and query.state != str(state):
            continue
        current = ' aria-current="true"' if query.state == str(state) else ""
        items.append(
            f'<li><a href="{esc(query.link(state=str(state), page=1))}"{current}>'
            f"{state_badge(state)} <b>{count}</b></a></li>"
        )
    return section("counts", "Specs by state", f'<ul class="counts">{"".join(items)}</ul>')


def daemon_alerts(facts: DaemonFacts) -> list[str]:
    """What the daemon itself reports that needs a look: refused hooks, failing notifications."""
    alerts = []
    by_title = {c.title: c for c in facts.counters}
    hooks = by_title.get("Hook calls")
    if hooks is not None:
        refused = hooks.count() - hooks.count("accepted")
        if refused:
            alerts.append(f"{_plural(round(refused), 'hook call')} refused (/metrics says why)")
    notes = by_title.get("Notifications")
    if notes is not None:
        failed = notes.count("failed") + notes.count("dropped")
        if failed:
            alerts.append(f"{_plural(round(failed), 'notification')} failed or dropped")
    return alerts


def _attention(board: Board, query: Query) -> str:
    flagged = [(s, r) for s in board.view.specs if (r := attention(s, board)) is not None]
    alerts = daemon_alerts(board.facts)
    if not flagged and not alerts:
        body = '<p class="calm">Nothing needs attention.</p>'
    else:
        items = [f'<li class="alert">{esc(a)}</li>' for a in alerts]
        items += [
            f"<li>{spec_link(s.key, board)} {state_badge(s.state)} "
            f'<span class="why">{esc(r)}</span>'
            f"{' ' + message_text(s.message, board) if s.message else ''}</li>"
            for s, r in flagged[:ATTENTION_SHOWN]
        ]
        more = ""
        if len(flagged) > ATTENTION_SHOWN:
            link = esc(query.link(state=ATTENTION, q="", page=1))
            more = f'<p><a href="{link}">All {len(flagged)} specs that need attention</a></p>'
        body = f'<ul class="attention">{"".join(items)}</ul>{more}'
    return (
        '<section class="needs" aria-labelledby="attention-h">'
        f'<h2 id="attention-h">Needs attention ({len(flagged) + len(alerts)})</h2>'
        f"{body}</section>"
    )


def _pager(query: Query, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    if query.page > 1:
        links.append(f'<a href="{esc(query.link(page=query.page - 1))}" rel="prev">Previous</a>')
    links.append(f"<span>page {query.page} of {pages}</span>")
    if query.page < pages:
        links.append(f'<a href="{esc(query.link(page=query.page + 1))}" rel="next">Next</a>')
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>'


def _specs(board: Board, query: Query) -> str:
    found = matching(board, query)
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(query.page, pages)
    query = Query(query.state, query.text, page, query.sort)
    shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    first = (page - 1) * PAGE_SIZE + 1 if shown else 0
    what = f"{first}-{first + len(shown) - 1 if shown else 0} of {len(found)}"
    if query.state or query.text:
        what += f" matching{_filter_words(query)}"
    rows = "".join(_row(s, board) for s in shown)
    if not rows:
        rows = '<tr><td colspan="7" class="none">No spec matches.</td></tr>'
    return (
        '<section id="specs" aria-labelledby="specs-h" tabindex="-1">'
        f'<h2 id="specs-h">Specs <span class="range">{esc(what)}</span></h2>'
        f"{_pager(query, pages)}"
        '<div class="scroll"><table class="specs"><colgroup><col class="c-spec">'
        '<col class="c-file"><col class="c-state"><col class="c-tags"><col class="c-time">'
        '<col class="c-time"><col class="c-message"></colgroup><thead><tr>'
        f"{_sorted_by(query, 'name', 'Spec')}{_sorted_by(query, 'file', 'File')}"
        f"{_sorted_by(query, 'state', 'State')}"
        '<th scope="col">Targets</th>'
        f"{_sorted_by(query, 'attempt', 'Last attempt')}"
        f"{_sorted_by(query, 'success', 'Last success')}"
        '<th scope="col">Message</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>{_pager(query, pages)}</section>"
    )


def _filter_words(query: Query) -> str:
    words = []
    if query.state:
        words.append(f" state {query.state}")
    if query.text:
        words.append(f" \u201c{query.text}\u201d")
    return ",".join(words)


def _daemon(board: Board) -> str:
    facts = board.facts
    last = max((s.last_attempt for s in board.view.specs if s.last_attempt), default=None)
    rows: list[tuple[str, str]] = [
        ("Version", esc(facts.version)),
        ("Shard", esc(facts.shard)),
        ("Mode", esc(facts.mode)),
        ("Base policy", esc(facts.base_policy)),
        ("Ready", "yes" if facts.ready else "no: the first full pass is running"),
        ("Started", when(facts.started)),
        ("Resync", f"every {facts.resync_interval:g} s"),
        ("Last resync", _resync_words(facts)),
        ("Next resync", when(facts.next_resync)),
        ("Last pass started", when(last)),
        ("Request budgets", _budget_words(facts, board)),
        ("Waiting for a request budget", _plural(len(board.waiting), "spec")),
    ]
    rows += [(c.title, _counter_words(c)) for c in facts.counters]
    items = "".join(f"<dt>{title}</dt><dd>{value}</dd>" for title, value in rows)
    return section("daemon", "Daemon", f'<dl class="facts">{items}</dl>')


def _resync_words(facts: DaemonFacts) -> str:
    if facts.last_resync is None:
        return '<span class="none">none yet</span>'
    took = facts.last_resync_seconds
    return when(facts.last_resync) + (
        f", took {took:.1f} s" if took is not None else ", still running"
    )


def _budget_words(facts: DaemonFacts, board: Board) -> str:
    """Each registry's request budget, and how many specs wait for it now."""
    if not facts.budgets:
        return '<span class="none">none set (no registry is limited)</span>'
    waiting: dict[str, int] = {}
    for host in board.waiting.values():
        waiting[host] = waiting.get(host, 0) + 1
    parts = []
    for host, rate, burst in facts.budgets:
        text = f"{esc(host)}: {rate:g}/s" + (f", burst {burst}" if burst is not None else "")
        if waiting.get(host):
            text += f" ({_plural(waiting[host], 'spec')} waiting)"
        parts.append(text)
    return "; ".join(parts)


def _counter_words(counter: Counter) -> str:
    if not counter.values:
        return '<span class="none">none yet</span>'
    parts = [f"{esc(' '.join(key) or 'all')}: {value:.0f}" for key, value in counter.values]
    return "; ".join(parts)


# -- the page -------------------------------------------------------------------------------


def overview_fragment(board: Board, query: Query) -> str:
    """The part of the page that follows the daemon (what the script fetches again)."""
    return _counts(board, query) + _attention(board, query) + _specs(board, query) + _daemon(board)


def _filters(query: Query) -> str:
    options = [f'<option value=""{"" if query.state else " selected"}>every state</option>']
    for value, label in [(ATTENTION, "needs attention"), *((str(s), str(s)) for s in SpecState)]:
        selected = " selected" if query.state == value else ""
        options.append(f'<option value="{esc(value)}"{selected}>{esc(label)}</option>')
    return (
        '<form class="filters" role="search" method="get" action="./">'
        '<label for="q">Search</label>'
        f'<input id="q" name="q" type="search" value="{esc(query.text)}" '
        'placeholder="name, file, registry or digest" autocomplete="off">'
        '<label for="state">State</label>'
        f'<select id="state" name="state">{"".join(options)}</select>'
        + (
            f'<input type="hidden" name="sort" value="{esc(query.sort)}">'
            if query.sort != "name"
            else ""
        )
        + '<button type="submit">Show</button> <a href="./">Clear</a></form>'
    )


def page(
    title: str,
    heading: str,
    main: str,
    root: str = "./",
    live: str | None = None,
    etag: str | None = None,
) -> str:
    """A whole document: `root` is the relative way back to `/` (`./`, or `../` from
    /specs/NAME); `live`, the relative URL the script polls for `#live`'s new content, and
    `etag` the tag of what it holds now (so the first poll is a 304 too)."""
    live_attr = f' data-live="{esc(live)}"' if live is not None else ""
    live_attr += f' data-etag="{esc(etag)}"' if etag is not None else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{root}static/app.css">'
        f'<script src="{root}static/app.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to the content</a>'
        f'<header><a class="home" href="{root}">reconciler</a>{heading}'
        '<span id="live-state" role="status">static page: reload for news</span></header>'
        f'<main id="main" tabindex="-1"><div id="live"{live_attr}>{main}</div></main>'
        "</body></html>"
    )


def overview(board: Board, query: Query, etag: str | None = None) -> str:
    counts = board.view.counts()
    bad = counts[SpecState.FAILED] + counts[SpecState.INVALID]
    title = f"reconciler: {_plural(len(board.view.specs), 'spec')}"
    title += f", {bad} failing" if bad else ""
    heading = f"<h1>Status</h1>{_filters(query)}"
    live = query.link(fragment=1)
    return page(title, heading, overview_fragment(board, query), live=live, etag=etag)
