"""The status page's HTTP answers: GET / (the overview, or with `fragment=1` the part the
script swaps in), /specs/NAME (one spec, likewise), /static/app.css and /static/app.js (read
from the package once).

Each answer carries an ETag; a client that sends it back in If-None-Match gets 304 with no
body. The page's tag is the board's version (it moves with every change of what /status
shows) and the counters the page shows, so the script's poll every second costs a 304 of a
few hundred bytes while nothing changes, and one page of rows when something does.

Security headers on every answer: a Content-Security-Policy that allows only this origin's
files (no inline script or style, no other host, no framing), nosniff, no Referer.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from prometheus_client import Counter as PromCounter

from reconciler import __version__
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.status import StatusBoard
from reconciler.daemon.ui import page, spec_page
from reconciler.settings import Settings

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _etag(*parts: str) -> str:
    return '"' + hashlib.blake2b("\n".join(parts).encode(), digest_size=9).hexdigest() + '"'


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding takes gzip (`gzip;q=0` refuses it)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("reconciler.daemon.ui") / "static"
    found = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in _TYPES:
            found[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return found


def _counter(title: str, counter: PromCounter) -> page.Counter:
    values = []
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values.append((tuple(sample.labels.values()), float(sample.value)))
    return page.Counter(title, tuple(sorted(values)))


class StatusSite:
    def __init__(self, settings: Settings, board: StatusBoard, metrics: Metrics) -> None:
        self._settings = settings
        self._board = board
        self._metrics = metrics
        self._static = _static_files()

    def facts(self) -> page.DaemonFacts:
        s, m = self._settings, self._metrics
        counters = (
            _counter("Hook calls", m.hooks_received),
            _counter("Hook relays", m.hook_relays),
            _counter("Notifications", m.notifications),
        )
        return page.DaemonFacts(
            __version__,
            s.shard,
            s.mode,
            s.base_policy,
            self._board.ready,
            self._board.started,
            s.resync_interval,
            counters,
            str(s.specs_dir),
            self._board.last_resync,
            self._board.last_resync_seconds,
            self._board.next_resync(),
            tuple(
                (host, entry.requests_per_second, entry.burst)
                for host, entry in sorted(s.registries.items())
                if entry.requests_per_second is not None
            ),
        )

    def answer(
        self, path: str, query: str, if_none_match: str | None, gzip_ok: bool = False
    ) -> Answer:
        """The answer to a GET of `path` (`/` or `/static/NAME`); 404 for anything else.
        `gzip_ok`: the client accepts gzip (the page, a hundred rows, shrinks about tenfold)."""
        if path.startswith("/static/"):
            return self._file(path.removeprefix("/static/"), if_none_match)
        if path != "/" and not path.startswith("/specs/"):
            return Answer(404, b"not found\n", "text/plain")
        # The version first: a change landing while the page renders makes the next poll
        # fetch again, never a 304 for a page older than its tag.
        version = self._board.version()
        facts = self.facts()
        asked = page.Query.parse(query)
        # One tag for the page and its fragment (what the page embeds for the script's first
        # poll): each URL's own content changes exactly when the tag does.
        counters = repr([c.values for c in facts.counters])
        etag = _etag(version, counters, path, asked.link(), "gzip" if gzip_ok else "identity")
        headers: tuple[tuple[bytes, bytes], ...] = (
            (b"etag", etag.encode()),
            (b"vary", b"accept-encoding"),
        )
        if _matches(if_none_match, etag):
            return Answer(304, b"", HTML, headers)
        board = self._view(facts)
        fragment = "fragment=1" in query.split("&")
        status = 200
        if path.startswith("/specs/"):
            status, text = self._spec(path.removeprefix("/specs/"), board, fragment, etag)
        elif fragment:
            text = page.overview_fragment(board, asked)
        else:
            text = page.overview(board, asked, etag)
        body = text.encode()
        if gzip_ok:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers += ((b"content-encoding", b"gzip"),)
        return Answer(status, body, HTML, headers)

    @staticmethod
    def _spec(name: str, board: page.Board, fragment: bool, etag: str) -> tuple[int, str]:
        """A spec's page (or its fragment), 404 when no spec has that name."""
        found = next((s for s in board.view.specs if s.key == name), None)
        if found is None:
            return 404, spec_page.missing_page(name)
        if fragment:
            return 200, spec_page.spec_fragment(found, board)
        return 200, spec_page.spec_page(found, board, etag)

    def _view(self, facts: page.DaemonFacts) -> page.Board:
        board = self._board
        return page.Board(
            board.view, board.policies, dict(board.waiting()), facts, board.events, board.lineage
        )

    def _file(self, name: str, if_none_match: str | None) -> Answer:
        found = self._static.get(name)
        if found is None:
            return Answer(404, b"not found\n", "text/plain")
        body, kind = found
        etag = _etag(__version__, name, hashlib.sha256(body).hexdigest())
        headers = ((b"etag", etag.encode()),)
        if _matches(if_none_match, etag):
            return Answer(304, b"", kind, headers)
        return Answer(200, body, kind, headers)
