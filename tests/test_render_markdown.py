"""`diff -o markdown`: the pull-request comment. Pure tests on hand-built reports, then one
`reconciler diff -o markdown` against a real registry."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from reconciler.model.desired import DesiredImage, build_desired
from reconciler.model.plan import SpecPlan, build_plan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.digest import Digest
from reconciler.oci.location import registry_location
from reconciler.render import (
    MARKDOWN_LIMIT,
    MARKDOWN_MARKER,
    human_size,
    md_code,
    render_markdown,
)
from tests.conftest import Cli, World
from tests.factories import digest, make_base, make_image, make_layer, make_observed, make_spec

ROW = re.compile(r"^\| <code>[^|`<>]*</code> \| \w+ \| (\d+|—) \| (\d+|—) \| [^|]+ \|$")


def _desired(name: str = "app") -> DesiredImage:
    spec = make_spec(
        name,
        layers=[{"ref": f"l.io/v/r@{digest(7)}"}],
        targets=["r.io/team/app:1", "r.io/team/app:2"],
    )
    base = make_base([make_image("amd64", [1])], index=False)
    return build_desired(spec, base, [make_layer(2048, spec)])


def out_of_sync(name: str = "app") -> SpecReport:
    """Tag 1 names an old digest, tag 2 does not exist: 3 blobs, 1 manifest, 2 tags."""
    desired = _desired(name)
    observed = make_observed(
        ((desired.targets[0], Digest.parse(digest(99))), (desired.targets[1], None)),
        ((registry_location("r.io", "team/app"), frozenset()),),
    )
    plan = build_plan(desired, observed)
    return SpecReport(f"{name}.yaml", SpecState.OUT_OF_SYNC, name, desired, observed, plan)


def in_sync(name: str) -> SpecReport:
    desired = _desired(name)
    observed = make_observed((target, desired.root.digest) for target in desired.targets)
    plan = build_plan(desired, observed)
    assert plan.in_sync
    return SpecReport(f"{name}.yaml", SpecState.SYNCED, name, desired, observed, plan)


def _plan(spec: SpecReport) -> SpecPlan:
    assert spec.plan is not None
    return spec.plan


def test_one_spec_out_of_sync_exact() -> None:
    changed = out_of_sync()
    plan = _plan(changed)
    upload, mount, copy = plan.blobs
    manifest = plan.manifests[0].document.digest.short
    text = render_markdown(RunReport((changed, in_sync("quiet")), applied=False))
    assert text == "\n".join(
        [
            MARKDOWN_MARKER,
            "### reconciler diff",
            "",
            f"Plan: 3 blobs to push ({human_size(plan.bytes_to_push)}: 1 mount, 1 copy, "
            "1 upload), 1 manifest, 2 tags; 1 of 2 specs in sync.",
            "",
            "| spec | state | tags to move | blobs to push | bytes to push |",
            "|---|---|--:|--:|--:|",
            f"| <code>app</code> | OutOfSync | 2 | 3 | {human_size(plan.bytes_to_push)} |",
            "",
            "<details><summary><code>app</code> OutOfSync in <code>app.yaml</code></summary>",
            "",
            "```diff",
            f"+ blob     {upload.blob.digest.short}       {upload.blob.size} B  upload"
            "  (config v1+json) -> r.io/team/app",
            f"+ blob     {mount.blob.digest.short}         1 B  mount from library/base"
            "  (layer tar+gzip) -> r.io/team/app",
            f"+ blob     {copy.blob.digest.short}     2.0 KiB  copy from l.io/v/r"
            "  (layer tar+gzip) -> r.io/team/app",
            f"+ manifest {manifest}  linux/amd64 -> r.io/team/app",
            f"~ tag      r.io/team/app:1  sha256:{'0' * 12} -> {manifest}",
            f"+ tag      r.io/team/app:2  (none) -> {manifest}",
            "```",
            "",
            "</details>",
            "",
        ]
    )
    assert len(manifest) == len("sha256:") + 12  # short digests: 12 hex
    assert "quiet" not in text  # in sync: counted in the total, not listed


def test_failed_and_invalid_specs_come_first_with_their_errors() -> None:
    failed = SpecReport(
        "down.yaml", SpecState.FAILED, "down", error="connection refused\nretried 3 times"
    )
    invalid = SpecReport("bad.yaml", SpecState.INVALID, error="bad.yaml:3: spec.base: invalid")
    text = render_markdown(RunReport((out_of_sync(), failed, invalid), applied=False))
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert rows == [
        "| <code>down</code> | Failed | — | — | — |",
        "| <code>bad.yaml</code> | Invalid | — | — | — |",
        rows[2],
    ]
    assert rows[2].startswith("| <code>app</code> | OutOfSync | 2 | 3 |")
    assert (
        "<details><summary><code>down</code> Failed in <code>down.yaml</code></summary>\n\n"
        "```text\nconnection refused\nretried 3 times\n```\n\n</details>"
    ) in text
    assert (
        "<details><summary><code>bad.yaml</code> Invalid</summary>\n\n"
        "```text\nbad.yaml:3: spec.base: invalid\n```\n\n</details>"
    ) in text
    assert "; 1 failed; 1 invalid." in text
    assert text.count("<details>") == 3


def test_all_in_sync_lists_the_specs_and_no_sections() -> None:
    text = render_markdown(RunReport((in_sync("a"), in_sync("b")), applied=False))
    assert "\nNo changes; 2 of 2 specs in sync.\n" in text
    assert (
        "| <code>a</code> | Synced | 0 | 0 | 0 B |\n| <code>b</code> | Synced | 0 | 0 | 0 B |\n"
        in (text)
    )
    assert "<details>" not in text and "left out" not in text


def test_hostile_names_and_messages_are_escaped() -> None:
    name = "x|y <script>alert(1)</script> `code` **b** [l](http://e.io) @team $m$ \\| www.e.io\n#"
    hostile = SpecReport(
        "evil|`<img src=x>`.yaml",
        SpecState.FAILED,
        name,
        error="boom ``` </details><script>alert(2)</script>\n````\n\u202eevil",
    )
    text = render_markdown(RunReport((hostile, out_of_sync()), applied=False))
    row = next(line for line in text.splitlines() if line.startswith("| <code>x"))
    assert ROW.match(row), row
    assert row.count("|") == 6  # no pipe of the name survives to split the cell
    assert "<script" not in text.split("```")[0] and "<img" not in text.split("````")[0]
    summary = next(line for line in text.splitlines() if line.startswith("<details><summary>"))
    assert re.fullmatch(
        r"<details><summary><code>[^<>`|]*</code> Failed in <code>[^<>`|]*"
        r"</code></summary>",
        summary,
    ), summary
    # The message keeps its backticks, inside a fence longer than any run of them.
    assert (
        "\n`````text\nboom ``` </details><script>alert(2)</script>\n````\n\\u202eevil\n`````\n"
        in (text)
    )
    # An independent CommonMark parser (with tables) agrees: one table, 2 body rows of 5 cells,
    # no element but those reconciler wrote.
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("<tr>") == 3 and html.count("<td") == 10 and html.count("<table>") == 1
    tags = set(re.findall(r"<(/?[a-z]+)[ >]", html.replace("&lt;", "")))
    assert tags <= {
        "h3",
        "/h3",
        "p",
        "/p",
        "table",
        "/table",
        "thead",
        "/thead",
        "tbody",
        "/tbody",
        "tr",
        "/tr",
        "th",
        "/th",
        "td",
        "/td",
        "code",
        "/code",
        "details",
        "/details",
        "summary",
        "/summary",
        "pre",
        "/pre",
    }, tags
    assert "<a " not in html and "<strong>" not in html and "<script" not in html
    assert "\u202e" not in text


def test_two_thousand_changed_specs_stay_under_the_limit() -> None:
    template = out_of_sync()
    specs = tuple(
        SpecReport(
            f"specs/app-{i}.yaml",
            SpecState.OUT_OF_SYNC,
            f"app-{i}",
            template.desired,
            template.observed,
            template.plan,
        )
        for i in range(2000)
    )
    text = render_markdown(RunReport(specs, applied=False))
    assert len(text) < MARKDOWN_LIMIT
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert 0 < len(rows) < 2000
    cells = f" | OutOfSync | 2 | 3 | {human_size(_plan(template).bytes_to_push)} |"
    assert all(ROW.match(row) and row.endswith(cells) for row in rows)
    assert [row.split("</code>")[0] for row in rows] == [
        f"| <code>app-{i}" for i in range(len(rows))
    ]
    sections = re.findall(r"<details><summary>.*?</details>", text, re.S)
    assert len(sections) == len(rows) and all(s.count("\n+ tag") == 1 for s in sections)
    assert text.endswith(
        f"\n_{2000 - len(rows)} more specs left out to stay under GitHub's comment size limit; "
        "`reconciler diff -o json` has them all._\n"
    )
    assert "Plan: 6000 blobs to push" in text  # the total still counts every spec


def test_cli_diff_markdown_against_a_registry(world: World, cli: Cli) -> None:
    a = world.a.host
    cli.write_spec(
        "web.yaml",
        f"""
      base: {a}/base/single:1
      annotations: {{pr: "yes"}}
      targets: [{a}/team/markdown:1]
    """,
        "web",
    )
    result = cli("diff", "-o", "markdown")
    assert result.code == 2, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [MARKDOWN_MARKER, "### reconciler diff"]
    assert lines[3].startswith("Plan: ") and lines[3].endswith("; 0 of 1 specs in sync.")
    table = lines.index("| spec | state | tags to move | blobs to push | bytes to push |")
    assert lines[table + 1] == "|---|---|--:|--:|--:|"
    assert re.fullmatch(r"\| <code>web</code> \| OutOfSync \| 1 \| \d+ \| .+ \|", lines[table + 2])
    assert f"+ tag      {a}/team/markdown:1  (none) -> sha256:" in result.stdout
    assert "<details><summary><code>web</code> OutOfSync in <code>" in result.stdout


def test_huge_hostile_specs_stay_under_the_limit() -> None:
    """Worst cases for the bound: long names made of characters that expand when escaped,
    long errors full of backticks and control characters; errors first, still every row whole."""
    specs = tuple(
        SpecReport(
            f"{'|<' * 300}{i}.yaml",
            SpecState.FAILED,
            f"{'`|' * 300}{i}",
            error=("`" * 50 + "\x00\u202e") * 400,
        )
        for i in range(300)
    )
    text = render_markdown(RunReport((*specs, out_of_sync()), applied=False))
    assert len(text) < MARKDOWN_LIMIT
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert rows and all(ROW.match(row) and row.count("|") == 6 for row in rows)
    assert text.count("<details>") == len(rows) == text.count("</details>")
    assert f"\n_{301 - len(rows)} more specs left out" in text
    assert "\x00" not in text and "\u202e" not in text


def test_dots_stay_except_where_github_would_link() -> None:
    """Before: `specs/app&#46;yaml`; a '.' only becomes an entity after 'www' (GitHub's
    extended autolinks start at 'www.'), and 'http:' still loses its colon."""
    assert md_code("specs/app.yaml") == "<code>specs/app.yaml</code>"
    assert md_code("WWW.e.io") == "<code>WWW&#46;e.io</code>"
    assert md_code("http://e.io/x") == "<code>http&#58;//e.io/x</code>"
