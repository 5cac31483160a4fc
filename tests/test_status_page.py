"""The status page (GET /): rendered from hand-built boards (escaping, filters, paging, the
attention list), then served by a real daemon against a real registry."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from html import escape, unescape
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from reconciler.daemon.status import BoardView, InstanceStatus, SpecStatus, TagStatus
from reconciler.daemon.ui import page, site
from reconciler.model.state import SpecState
from tests.conftest import Cli, World
from tests.support.report import record
from tests.test_daemon import HEADER, Daemon, copy_tag, running, tag_digest, wait_for

XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_MESSAGE = "<script>alert(2)</script><b onmouseover=alert(3)>bold</b>"
DIGEST_A = "sha256:" + "a1" * 32
DIGEST_B = "sha256:" + "b2" * 32


def facts(mode: str = "apply", counters: tuple[page.Counter, ...] = ()) -> page.DaemonFacts:
    return page.DaemonFacts("9.9.9", "1/3", mode, "auto", True, 0.0, 300.0, counters)


def board(
    *specs: SpecStatus, mode: str = "apply", waiting: dict[str, str] | None = None
) -> page.Board:
    view = BoardView(tuple(sorted(specs, key=lambda s: s.key)))
    return page.Board(view, {}, waiting or {}, facts(mode))


def spec(
    name: str, state: SpecState = SpecState.SYNCED, target: str = "r.example/app:1", **kw: object
) -> SpecStatus:
    tags = (TagStatus(target, DIGEST_A, DIGEST_A),)
    file = str(kw.pop("file", f"{name}.yaml"))
    return SpecStatus(name, file, state, tags, **kw)  # type: ignore[arg-type]


def rows(html: str) -> list[str]:
    """The names in the specs table, in order (instances too)."""
    body = html.split('<table class="specs">', 1)[1]
    return [
        unescape(re.sub(r"<[^>]+>", "", cell)).replace("\u21b3", "").strip()
        for cell in re.findall(r'<th scope="row">(.*?)</th>', body)
    ]


def test_values_from_specs_and_errors_are_text() -> None:
    shown = board(spec(XSS_NAME, SpecState.FAILED, message=XSS_MESSAGE, failures=3))
    html = page.overview(shown, page.Query())
    for payload in (XSS_NAME, XSS_MESSAGE, "<script>alert", "<b onmouseover"):
        assert payload not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    # The only scripts are the page's own file; no inline handler or style anywhere.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="./static/app.js" defer>']
    assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html)  # text may say it; no tag does
    assert "style=" not in html and "<style" not in html
    # A search that carries HTML is text in the form too.
    html = page.overview(shown, page.Query.parse('q="><script>alert(4)</script>'))
    assert "<script>alert(4)" not in html and 'value="&quot;&gt;&lt;script&gt;' in html


def test_urls_are_relative() -> None:
    html = page.overview(board(spec("web")), page.Query.parse("state=Synced&page=1"))
    urls = [unescape(u) for u in re.findall(r'(?:href|src|action|data-live)="([^"]*)"', html)]
    assert urls, html
    assert all(not u.startswith(("/", "http:", "https:", "//")) for u in urls), urls
    assert "./static/app.css" in urls and "./static/app.js" in urls
    assert "?state=Synced&fragment=1" in urls  # what the script polls: this page's own view


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["api", "db", "web", "web[1.0]", "web[2.0]"]),
        ("state=Failed", ["db", "web", "web[1.0]", "web[2.0]"]),
        ("state=Synced", ["api", "web", "web[1.0]", "web[2.0]"]),  # one instance is: all shown
        ("state=Bogus", ["api", "db", "web", "web[1.0]", "web[2.0]"]),  # unknown: ignored
        ("q=DB", ["db"]),  # the name, in any case
        ("q=api.yaml", ["api"]),  # the file
        ("q=other.example", ["db"]),  # a registry in a target
        ("q=b2b2b2", ["web", "web[1.0]", "web[2.0]"]),  # a digest, in an instance's tags
        ("q=web%5B2", ["web", "web[1.0]", "web[2.0]"]),  # an instance's name
        ("state=Failed&q=api", []),
        ("state=attention", ["db", "web", "web[1.0]", "web[2.0]"]),
    ],
)
def test_filter_and_search(query: str, expected: list[str]) -> None:
    instances = (
        InstanceStatus("web[1.0]", SpecState.SYNCED),
        InstanceStatus(
            "web[2.0]", SpecState.FAILED, (TagStatus("r.example/web:2", DIGEST_B, None),)
        ),
    )
    shown = board(
        spec("api"),
        spec("db", SpecState.FAILED, target="other.example/db:1"),
        spec("web", SpecState.FAILED, instances=instances),
    )
    html = page.overview(shown, page.Query.parse(query))
    assert rows(html) == expected
    if not expected:
        assert "No spec matches." in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a", "b", "c", "d"]),
        ("sort=-name", ["d", "c", "b", "a"]),
        ("sort=state", ["c", "a", "d", "b"]),  # Failed, Invalid, OutOfSync, Synced
        ("sort=file", ["d", "a", "b", "c"]),
        ("sort=attempt", ["b", "c", "a", "d"]),  # the latest first; never last
        ("sort=-attempt", ["d", "a", "c", "b"]),
        ("sort=bogus", ["a", "b", "c", "d"]),  # unknown: by name
    ],
)
def test_sort_by_a_column(query: str, expected: list[str]) -> None:
    shown = board(
        spec("a", SpecState.INVALID, file="m.yaml", last_attempt=100.0),
        spec("b", SpecState.SYNCED, file="n.yaml", last_attempt=300.0),
        spec("c", SpecState.FAILED, file="o.yaml", last_attempt=200.0),
        spec("d", SpecState.OUT_OF_SYNC, file="l.yaml"),
    )
    html = page.overview(shown, page.Query.parse(query))
    assert rows(html) == expected
    if query == "sort=state":  # the head says so, and links to the other way round
        assert '<th scope="col" aria-sort="ascending"><a href="?sort=-state">State</a>' in html
        assert 'name="sort" value="state"' in html  # the filter form keeps the order


def test_pages_hold_a_hundred_rows() -> None:
    many = board(*(spec(f"s{i:04d}") for i in range(250)))
    first = page.overview(many, page.Query())
    assert len(rows(first)) == page.PAGE_SIZE and rows(first)[0] == "s0000"
    assert "1-100 of 250" in first and 'href="?page=2" rel="next"' in first
    last = page.overview(many, page.Query.parse("page=3"))
    assert rows(last) == [f"s{i:04d}" for i in range(200, 250)]
    assert 'href="?page=2" rel="prev"' in last and 'rel="next"' not in last
    beyond = page.overview(many, page.Query.parse("page=99"))  # the last page, not an empty one
    assert rows(beyond) == rows(last)
    for bad in ("page=0", "page=-1", "page=x", "page=99999999999"):
        assert rows(page.overview(many, page.Query.parse(bad))) == rows(first)


def test_attention_lists_what_needs_a_look_first() -> None:
    shown = board(
        spec("a-synced"),
        spec("b-failed", SpecState.FAILED, message="registry said 500"),
        spec("c-invalid", SpecState.INVALID),
        spec("d-moved", SpecState.BASE_MOVED),
        spec("e-out", SpecState.OUT_OF_SYNC),
        spec("f-waiting"),
        mode="observe",
        waiting={"f-waiting": "r.example"},
    )
    html = page.overview(shown, page.Query())
    listed = html.split('<ul class="attention">', 1)[1].split("</ul>", 1)[0]
    names = re.findall(r'<a href="./specs/([^"]+)">', listed)
    assert names == ["b-failed", "c-invalid", "d-moved", "e-out", "f-waiting"]
    assert "registry said 500" in listed and "request budget of r.example" in listed
    assert html.index("Needs attention (5)") < html.index('<table class="specs">')
    # In apply mode OutOfSync is a pass on its way, not something to look at.
    applying = board(spec("e-out", SpecState.OUT_OF_SYNC))
    assert "Nothing needs attention." in page.overview(applying, page.Query())


def test_daemon_section_and_its_alerts() -> None:
    counters = (
        page.Counter(
            "Hook calls", ((("registry", "accepted"), 4.0), (("git", "unauthorized"), 2.0))
        ),
        page.Counter("Notifications", ((("slack", "delivered"), 7.0), (("slack", "failed"), 1.0))),
    )
    shown = page.Board(BoardView((spec("web"),)), {"web": "locked"}, {}, facts("observe", counters))
    html = page.overview(shown, page.Query())
    daemon = html.split('<h2 id="daemon-h">', 1)[1]
    for words in (
        "9.9.9",
        "1/3",
        "observe",
        "every 300 s",
        "git unauthorized: 2",
        "slack failed: 1",
    ):
        assert words in daemon, words
    assert "2 hook calls refused" in html and "1 notification failed or dropped" in html
    assert '<span class="policy">locked</span>' in html
    assert "none yet" in daemon.split("Last resync", 1)[1][:80]  # no resync has ended


def test_daemon_section_shows_resyncs_and_request_budgets() -> None:
    from dataclasses import replace

    shown = page.Board(
        BoardView((spec("web"), spec("api"))),
        {},
        {"web": "r.example:5000", "api": "r.example:5000"},
        replace(
            facts("apply", ()),
            last_resync=1_765_000_000.0,
            last_resync_seconds=2.25,
            next_resync=1_765_000_300.0,
            budgets=(("r.example:5000", 20.0, 40), ("q.example", 0.5, None)),
        ),
    )
    daemon = page.overview(shown, page.Query()).split('<h2 id="daemon-h">', 1)[1]
    plain = re.sub(r"<(?!/?d[td])[^>]+>", "", daemon)  # the text, as a person reads it
    assert "<dt>Last resync</dt><dd>2025-12-06 05:46:40Z, took 2.2 s</dd>" in plain, plain
    assert "<dt>Next resync</dt><dd>2025-12-06 05:51:40Z</dd>" in plain, plain
    assert "r.example:5000: 20/s, burst 40 (2 specs waiting); q.example: 0.5/s" in daemon


def test_states_are_in_words_as_well_as_colour() -> None:
    for state in SpecState:
        badge = page.state_badge(state)
        assert f">{state}<" in badge and f"state-{str(state).lower()}" in badge
    short = page.short_digest(DIGEST_A)
    assert short == f'<code class="digest" title="{DIGEST_A}">{"a1" * 6}</code>'


@pytest.mark.parametrize(
    ("header", "taken"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*", True),
        ("deflate, br", False),
    ],
)
def test_gzip_when_the_client_takes_it(header: str | None, taken: bool) -> None:
    assert site.accepts_gzip(header) is taken


# -- served by a real daemon ------------------------------------------------------------------


def get(daemon: Daemon, path: str, etag: str) -> httpx.Response:
    """GET with If-None-Match."""
    url = f"http://127.0.0.1:{daemon.port}{path}"
    return httpx.get(url, headers={"If-None-Match": etag}, timeout=5)


def test_served_with_its_headers_and_files_and_off_with_ui_false(cli: Cli) -> None:
    with running(cli, ready=True) as daemon:
        answer = daemon.get("/")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["content-security-policy"] == site.CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        # The scheduler's next resync and the first pass's resync, from the daemon itself.
        assert re.search(r"<dt>Next resync</dt><dd><time datetime=", answer.text), answer.text
        assert re.search(r"<dt>Last resync</dt><dd><time datetime=[^>]*>[^<]*</time>, took ",
                         answer.text), answer.text  # fmt: skip
        again = get(daemon, "/", answer.headers["etag"])
        assert again.status_code == 304 and again.content == b""
        assert answer.headers["content-encoding"] == "gzip"  # httpx asks for it, as browsers do
        url = f"http://127.0.0.1:{daemon.port}/"
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"}, timeout=5)
        assert "content-encoding" not in plain.headers
        untagged = re.compile(r' data-etag="[^"]*"')
        assert untagged.sub("", plain.text) == untagged.sub("", answer.text)
        assert plain.headers["etag"] != answer.headers["etag"]  # one tag per encoding
        # The page embeds its tag: the script's first poll of the fragment is a 304 already.
        assert 'data-etag="' + escape(answer.headers["etag"]) + '"' in answer.text
        assert get(daemon, "/?fragment=1", answer.headers["etag"]).status_code == 304
        for name, kind in [("app.css", "text/css"), ("app.js", "text/javascript")]:
            asset = daemon.get(f"/static/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"] == f"{kind}; charset=utf-8"
            assert asset.headers["content-security-policy"] == site.CSP
        assert daemon.get("/static/nothing.js").status_code == 404
        assert daemon.get("/static/../http.py").status_code == 404
        assert httpx.post(f"http://127.0.0.1:{daemon.port}/", timeout=5).status_code == 405
        status = daemon.get("/status")
        assert get(daemon, "/status", status.headers["etag"]).status_code == 304
        assert get(daemon, "/status", '"other"').status_code == 200
    with running(cli, ready=True, name="no-ui", ui="false") as daemon:
        assert daemon.get("/").status_code == 404
        assert daemon.get("/static/app.js").status_code == 404
        assert daemon.get("/status").status_code == 200


# -- in a browser ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("RECONCILER_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
DOCS_SHOT = ROOT / "docs" / "status-page.png"  # rewritten with RECONCILER_SCREENSHOT_DOCS=1
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
XSS_FILE = "<img src=x onerror=alert(1)>.yaml"
XSS_SPEC_NAME = "<b onmouseover=alert(3)>bold</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


def shot(target: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path), full_page=True)
    return path


def write_world(cli: Cli, world: World) -> None:
    """A Synced spec, a fan-out spec of two images, a Failed one (its base does not exist),
    an Invalid file, and a file whose name and content carry HTML."""
    a = world.a.host
    for tag in ("1.0.0", "1.1.0"):
        copy_tag(f"{a}/base/single:1", f"{a}/page/base:{tag}")
    cli.write_spec("good.yaml", GOOD.format(a=a), spec_name="good")
    cli.write_spec(
        "multi.yaml", f"base: {a}/base/multi:1\ntargets: [{a}/page/multi:1]\n", spec_name="multi"
    )
    cli.write_spec(
        "web.yaml",
        f'base: {a}/page/base\nbaseTags: {{semver: ">=1"}}\ntargets: ["{a}/page/web:{{tag}}"]\n',
        spec_name="web",
    )
    cli.write_spec(
        "missing.yaml", f"base: {a}/base/nothing:1\ntargets: [{a}/page/missing:1]\n", "missing"
    )
    cli.write("broken.yaml", HEADER + "metadata: {name: broken}\nspec:\n  base: [unclosed\n")
    body = "spec:\n  base: r.example/base:1\n  targets: [r.example/app:1]\n"
    cli.write(XSS_FILE, HEADER + f'metadata: {{name: "{XSS_SPEC_NAME}"}}\n' + body)


GOOD = "base: {a}/base/single:1\nannotations: {{note: page}}\ntargets: [{a}/page/good:1]\n"


def states_are(daemon: Daemon, expected: dict[str, str]) -> bool:
    status = daemon.status()
    return all(status.get(name, {}).get("state") == state for name, state in expected.items())


def badge(target: Page, name: str) -> Locator:
    """The state badge of the spec row shown as `name` (not its instances')."""
    row = target.locator("tr.spec").filter(
        has=target.locator("th a", has_text=re.compile(f"^{re.escape(name)}$"))
    )
    return row.locator("td .state")


def row_names(target: Page) -> list[str]:
    return [n.strip() for n in target.locator("table.specs tbody th a").all_inner_texts()]


def expected_states(cli: Cli) -> dict[str, str]:
    return {
        "good": "Synced",
        "multi": "Synced",
        "web": "Synced",
        "missing": "Failed",
        f"file:{cli.specs}/broken.yaml": "Invalid",
        f"file:{cli.specs}/{XSS_FILE}": "Invalid",
    }


def test_overview_in_a_browser(world: World, cli: Cli, browser: Browser) -> None:
    write_world(cli, world)
    with running(cli, ready=True) as daemon:
        expected = expected_states(cli)
        wait_for("the states", lambda: states_are(daemon, expected), timeout=20)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        target = context.new_page()
        dialogs: list[str] = []
        problems: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":  # a CSP violation is one
                problems.append(message.text)

        target.on("dialog", on_dialog)
        target.on("console", on_console)
        target.on("pageerror", lambda error: problems.append(str(error)))
        base = f"http://127.0.0.1:{daemon.port}/"
        started = time.monotonic()
        answer = target.goto(base)
        target.locator("#live-state.live").wait_for(timeout=3000)  # the script runs, and polls
        loaded = time.monotonic() - started
        assert answer is not None and answer.headers["content-security-policy"] == site.CSP

        # The right states, in words (the badge) and colour (its class).
        for key, state in expected.items():
            name = key.replace(f"file:{cli.specs}/", "file:")  # shown relative to specs_dir
            assert badge(target, name).inner_text() == state, name
            assert f"state-{state.lower()}" in (badge(target, name).get_attribute("class") or "")
        counts = target.locator("ul.counts").inner_text()
        assert re.search(r"All\s+6", counts) and re.search(r"Synced\s+3", counts), counts
        assert re.search(r"Failed\s+1", counts) and re.search(r"Invalid\s+2", counts), counts
        needs = target.locator("ul.attention").inner_text()
        assert "missing" in needs and "broken.yaml" in needs and "good" not in needs
        instances = target.locator("tr.instance th").all_inner_texts()
        assert sorted(i.strip("\u21b3 ") for i in instances) == ["web[1.0.0]", "web[1.1.0]"]
        # A spec's page lists its events: the first apply of `good`, the failure of `missing`.
        good = daemon.get("/specs/good").text
        events = good.split('<h2 id="events-h">Last events</h2>', 1)[1].split("</section>")[0]
        assert "<td>applied</td>" in events and "Synced" in events, events
        missing = daemon.get("/specs/missing").text
        assert "<td>failed</td>" in missing.split('id="events-h"', 1)[1], missing
        # Its lineage as the pass saw it: the base with the digest it resolved to, the base's
        # layers, the image built, and its target.
        lineage = good.split('<h2 id="lineage-h">Lineage</h2>', 1)[1].split("</section>")[0]
        kinds = re.findall(r'<span class="kind">([^<]+)</span>', lineage)
        assert kinds[:2] == ["base", "base layers"] and "targets" in kinds, lineage
        assert "manifest" in kinds or "index" in kinds, lineage
        base_digest = tag_digest(world.a.host, "base/single", "1")
        assert base_digest is not None and base_digest[:19] in lineage, lineage
        good = daemon.status()["good"]["tags"][0]
        digest = target.locator("tr.spec", has_text="page/good:1").locator("code.digest").first
        assert digest.get_attribute("title") == good["desired"] == good["observed"]
        assert digest.inner_text() == good["desired"].removeprefix("sha256:")[:12]
        shot(target, "overview")
        if os.environ.get("RECONCILER_SCREENSHOT_DOCS"):
            clip = {"x": 0, "y": 0, "width": 1280, "height": 700}  # the README's: under 150 KB
            target.screenshot(path=str(DOCS_SHOT), clip=clip)  # type: ignore[arg-type]

        # The HTML stays text: no dialog, no image, the payloads shown literally.
        assert target.locator("img").count() == 0 and target.locator("b[onmouseover]").count() == 0
        assert target.get_by_text(XSS_FILE, exact=False).first.is_visible()
        assert target.get_by_text(XSS_SPEC_NAME, exact=False).first.is_visible()

        # Filter by state, then search by name, registry path and digest (the form, no script).
        target.select_option("#state", "Failed")
        target.click("form.filters button")
        target.wait_for_url(re.compile(r"state=Failed"))
        assert row_names(target) == ["missing"]
        for text, names in [
            ("good", ["good"]),
            ("page/multi", ["multi"]),
            (good["desired"][7:19], ["good"]),
            ("broken.yaml", ["file:broken.yaml"]),
        ]:
            target.goto(base)
            target.fill("#q", text)
            target.press("#q", "Enter")
            target.wait_for_url(re.compile(r"q="))
            assert row_names(target) == names, text
        shot(target, "search")

        # Live: a spec broken on disk turns Invalid on the open page, and back when fixed.
        target.goto(base)
        target.locator("#live-state.live").wait_for(timeout=3000)
        spec = cli.specs / "good.yaml"
        fixed = spec.read_text()
        started = time.monotonic()
        spec.write_text(HEADER + "metadata: {name: good}\nspec:\n  base: [unclosed\n")
        expect(badge(target, "good")).to_have_text("Invalid", timeout=2000)
        to_invalid = time.monotonic() - started
        shot(target, "live-invalid")
        started = time.monotonic()
        spec.write_text(fixed)
        expect(badge(target, "good")).to_have_text("Synced", timeout=2000)
        to_synced = time.monotonic() - started
        record("status_page", loaded=loaded, to_invalid=to_invalid, to_synced=to_synced)
        print(f"page loaded and live {loaded:.2f}s; Invalid shown {to_invalid:.2f}s, "
              f"Synced again {to_synced:.2f}s")  # fmt: skip

        assert dialogs == [] and problems == [], (dialogs, problems)
        context.close()

        # Without JavaScript the overview renders all the same (not live).
        still = browser.new_context(java_script_enabled=False)
        plain = still.new_page()
        plain.goto(base)
        assert badge(plain, "missing").inner_text() == "Failed"
        assert plain.locator("#live-state").inner_text() == "static page: reload for news"
        still.close()
        html = httpx.get(base, timeout=5).text
        assert "<table" in html and ">missing</a>" in html and "state-failed" in html


def test_spec_page_shows_lineage_plan_and_yaml(world: World, cli: Cli, browser: Browser) -> None:
    a = world.a.host
    name = f"plan{int(time.time() * 1000) % 10**8}"  # a target no other test pushed
    cli.write_spec(
        "plan.yaml",
        f"base: {a}/base/multi:1\nannotations: {{note: '<i>x</i>'}}\n"
        f"targets: [{a}/page/{name}:1]\n",
        spec_name="plan",
    )
    with running(cli, ready=True, mode="observe") as daemon:
        wait_for("OutOfSync", lambda: states_are(daemon, {"plan": "OutOfSync"}), timeout=20)
        plan = daemon.status()["plan"]["plan"]
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        target = context.new_page()
        target.goto(f"http://127.0.0.1:{daemon.port}/")
        target.locator("ul.attention a", has_text="plan").click()  # observe: it needs a look
        target.wait_for_url(re.compile(r"/specs/plan$"))
        target.locator("#live-state.live").wait_for(timeout=3000)  # ../static/app.js loaded
        lineage = target.locator("ol.lineage").inner_text()
        assert f"{a}/base/multi:1" in lineage and f"{a}/page/{name}:1" in lineage
        assert "linux/amd64" in lineage and "linux/arm64" in lineage  # the index's children
        rows = target.locator("table.plan tbody tr").all_inner_texts()
        index = next(m for m in plan["manifests"] if m["kind"] == "index")
        digests = target.locator("table.plan code.digest").evaluate_all(
            "codes => codes.map(c => c.title)"
        )
        assert index["digest"] in digests and len(rows) == (
            len(plan["blobs"]) + len(plan["manifests"]) + len(plan["tags"])
        )
        yaml_text = target.locator("pre.yaml").inner_text()
        assert "note: <i>x</i>" in yaml_text and target.locator("pre.yaml i").count() == 0
        shot(target, "spec-page")
        missing = httpx.get(f"http://127.0.0.1:{daemon.port}/specs/%3Cscript%3Ex", timeout=5)
        assert missing.status_code == 404 and "&lt;script&gt;x" in missing.text
        assert "<script>x" not in missing.text
        context.close()
