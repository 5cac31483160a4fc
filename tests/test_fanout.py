"""Specs that fan out over base versions: which tags are selected (pure), and a fan-out spec
against a real registry: exactly the selected images, a lock that records them, and a new
matching tag picked up by the next pass."""

from __future__ import annotations

import re
import uuid

import pytest

from reconciler.model.fanout import select_tags
from reconciler.spec import TagSelection
from tests.conftest import Cli, World
from tests.support.images import skopeo

TAGS = [
    "1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0", "2.1.0", "2.1.1",
    "2.2.0-rc1", "3.0.0", "latest", "v2.3.0", "2.x",
]  # fmt: skip


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"semver": ">=2,<3", "keep": 3}, ("v2.3.0", "2.1.1", "2.1.0")),
        ({"semver": ">=2,<3"}, ("v2.3.0", "2.1.1", "2.1.0", "2.0.0")),  # no pre-release
        ({"semver": ">=1.2,<2"}, ("1.10.0", "1.2.0")),  # 1.10 > 1.2: versions, not text
        ({"semver": ">=2.2.0rc1,<2.3"}, ("2.2.0-rc1",)),  # asked for: pre-releases come in
        ({"sort": "semver", "keep": 2}, ("3.0.0", "v2.3.0")),  # "latest" and "2.x" left out
        ({"keep": 2}, ("v2.3.0", "latest")),  # by text, highest first
        ({"regex": r"1\.\d+\.0"}, ("1.2.0", "1.10.0", "1.1.0", "1.0.0")),  # by text
        (
            {"regex": r"v?(?P<version>2\.\d+\.\d+)", "sort": "semver"},
            ("v2.3.0", "2.1.1", "2.1.0", "2.0.0"),
        ),
        ({"regex": "2"}, ()),  # matches whole tags only
        ({"semver": ">=9"}, ()),
    ],
)
def test_select_tags(selection: dict[str, object], expected: tuple[str, ...]) -> None:
    assert select_tags(TAGS, TagSelection.model_validate(selection)) == expected


def test_select_tags_ignores_what_no_reference_can_name() -> None:
    chosen = select_tags(["2.0.0", "-bad", "has space", "x" * 129], TagSelection())
    assert chosen == ("2.0.0",)


def seed_tags(world: World, tags: list[str]) -> str:
    repo = f"{world.a.host}/fanout/base-{uuid.uuid4().hex[:8]}"
    for tag in tags:
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{world.a.host}/base/single:1", f"docker://{repo}:{tag}")  # fmt: skip
    return repo


def test_fan_out_builds_exactly_the_selected_tags(cli: Cli, world: World) -> None:
    base = seed_tags(world, TAGS)
    team = f"fanout/web-{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "web.yaml",
        f"""\
        base: {base}
        baseTags: {{semver: ">=2,<3", keep: 3}}
        annotations: {{team: web}}
        targets: ["{world.a.host}/{team}:{{tag}}", "{world.a.host}/{team}:{{tag}}-{{spec.name}}"]
        """,
        spec_name="web",
    )
    diff = cli("diff", "-o", "json")
    assert diff.code == 2, diff.stdout + diff.stderr
    names = sorted(s["name"] for s in diff.json()["specs"])  # type: ignore[union-attr, index]
    assert names == ["web[2.1.0]", "web[2.1.1]", "web[v2.3.0]"]
    assert cli("apply").code == 0
    listed = skopeo("list-tags", "--tls-verify=false", f"docker://{world.a.host}/{team}")
    assert sorted(re.findall(r'"([^"]+)"', listed.split("[", 1)[1])) == sorted(
        ["2.1.0", "2.1.0-web", "2.1.1", "2.1.1-web", "v2.3.0", "v2.3.0-web"]
    )

    # A no-op: one tag listing, then one HEAD per selected base tag and per target tag.
    mark = world.a.mark()
    assert cli("diff").code == 0
    sent = [(r.method, r.path.split("?")[0]) for r in world.a.requests(since=mark)]
    assert sent.count(("GET", f"/v2/{base.split('/', 1)[1]}/tags/list")) == 1
    assert len([m for m, _ in sent if m == "HEAD"]) == 3 + 6
    assert len(sent) == 1 + 9

    # A new matching release appears: the next pass builds it and drops the lowest.
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{world.a.host}/base/single:1", f"docker://{base}:2.4.0")  # fmt: skip
    assert cli("apply").code == 0
    listed = skopeo("list-tags", "--tls-verify=false", f"docker://{world.a.host}/{team}")
    assert '"2.4.0"' in listed and '"2.4.0-web"' in listed


def test_fan_out_lock_records_the_selection(cli: Cli, world: World) -> None:
    base = seed_tags(world, ["1.0.0", "1.1.0", "1.2.0"])
    team = f"fanout/locked-{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "app.yaml",
        f"base: {base}\nbaseTags: {{keep: 2, sort: semver}}\n"
        f'targets: ["{world.a.host}/{team}:{{tag}}"]\n',
        spec_name="app",
    )
    assert cli("lock").code == 0
    lock = (cli.specs / "reconciler.lock").read_text()
    assert 'fanOut:\n  - spec: "app"\n    tags: ["1.2.0", "1.1.0"]' in lock
    assert f'reference: "{base}:1.2.0"' in lock and f'reference: "{base}:1.1.0"' in lock
    assert cli("apply").code == 0
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{world.a.host}/base/single:1", f"docker://{base}:1.3.0")  # fmt: skip
    # With the lock, the selection is the repository's: no listing, nothing new.
    mark = world.a.mark()
    assert cli("diff").code == 0
    assert not [r for r in world.a.requests(since=mark) if "tags/list" in r.path]
    check = cli("lock", "--check")
    assert check.code == 2 and "app: fan-out over" in check.stdout and "1.3.0" in check.stdout
    assert cli("lock", "--update").code == 0
    assert '"1.3.0", "1.2.0"' in (cli.specs / "reconciler.lock").read_text()
    assert cli("diff").code == 2


def test_save_writes_one_image_of_a_fan_out_spec(cli: Cli, world: World) -> None:
    base = seed_tags(world, ["1.0.0", "1.1.0"])
    cli.write_spec(
        "app.yaml",
        f'base: {base}\nbaseTags: {{semver: ">=1"}}\n'
        f'targets: ["{world.a.host}/team/app:{{tag}}"]\n',
        spec_name="app",
    )
    whole = cli("save", "app", "-o", str(cli.root / "app.tar"))
    assert whole.code == 1 and "save one of its images: app[1.1.0], app[1.0.0]" in whole.stderr
    one = cli("save", "app[1.0.0]", "-o", str(cli.root / "app.tar"))
    assert one.code == 0, one.stderr
    assert "tags 127.0.0.1" in one.stdout and "team/app:1.0.0" in one.stdout
    assert (cli.root / "app.tar").stat().st_size > 0


def test_sorting_by_version_leaves_pre_releases_out() -> None:
    chosen = select_tags(["3.12.7", "3.13.0rc1"], TagSelection(sort="semver", keep=1))
    assert chosen == ("3.12.7",)


def test_a_fan_out_target_that_another_spec_writes_fails_both(cli: Cli, world: World) -> None:
    base = seed_tags(world, ["1.0.0"])
    team = f"{world.a.host}/fanout/clash-{uuid.uuid4().hex[:8]}"
    cli.write_spec("fan.yaml", f'base: {base}\nbaseTags: {{}}\ntargets: ["{team}:{{tag}}"]\n')
    cli.write_spec("plain.yaml", f"base: {base}:1.0.0\ntargets: [{team}:1.0.0]\n")
    diff = cli("diff", "-o", "json")
    assert diff.code == 1, diff.stdout
    states = {s["name"]: (s["state"], s["error"]) for s in diff.json()["specs"]}  # type: ignore[union-attr, index]
    assert states["fan[1.0.0]"][0] == states["plain"][0] == "Failed"
    assert f"target {team}:1.0.0 is written by plain too" in states["fan[1.0.0]"][1]


def test_lock_of_part_of_a_directory_keeps_the_other_entries(cli: Cli, world: World) -> None:
    base = seed_tags(world, ["1.0.0", "2.0.0"])
    cli.write_spec("one.yaml", f"base: {base}:1.0.0\ntargets: [{world.a.host}/t/one:1]\n")
    cli.write_spec("two.yaml", f"base: {base}:2.0.0\ntargets: [{world.a.host}/t/two:1]\n")
    cli.write_spec(
        "held.yaml",
        f'base: {base}\nbaseTags: {{}}\nsuspend: true\ntargets: ["{world.a.host}/t/h:{{tag}}"]\n',
    )
    assert cli("lock").code == 0
    lock = cli.specs / "reconciler.lock"
    whole = lock.read_text()
    assert f"{base}:1.0.0" in whole and f"{base}:2.0.0" in whole
    assert cli("lock", str(cli.specs / "one.yaml")).code == 0
    assert lock.read_text() == whole  # two.yaml's entry is kept, not dropped as unused
    assert cli("lock", "--check", str(cli.specs / "one.yaml")).code == 0


def test_a_registry_base_needs_a_tag_unless_it_fans_out(cli: Cli, world: World) -> None:
    cli.write_spec(
        "app.yaml", f"base: {world.a.host}/base/single\ntargets: [{world.a.host}/t/x:1]\n"
    )
    result = cli("validate")
    assert result.code == 1
    assert "spec: base " in result.stderr + result.stdout and "needs a tag or a digest" in (
        result.stderr + result.stdout
    )


def test_status_names_a_fan_out_s_images_as_the_cli_does(cli: Cli, world: World) -> None:
    """Before: /status showed a fan-out spec as one `web` row, its tags all together, while
    `diff` named each image `web[2.1.1]`."""
    from tests.test_daemon import running, wait_for

    base = seed_tags(world, ["2.1.0", "2.1.1", "3.0.0"])
    team = f"fanout/status-{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "web.yaml",
        f"""\
        base: {base}
        baseTags: {{semver: ">=2,<3"}}
        targets: ["{world.a.host}/{team}:{{tag}}"]
        """,
        spec_name="web",
    )
    cli_names = sorted(s["name"] for s in cli("diff", "-o", "json").json()["specs"])  # type: ignore[union-attr, index]
    with running(cli, ready=True) as daemon:
        wait_for("web synced", lambda: daemon.status().get("web", {}).get("state") == "Synced")
        web = daemon.status()["web"]
    instances = web["instances"]
    assert sorted(i["name"] for i in instances) == cli_names == ["web[2.1.0]", "web[2.1.1]"]
    for instance in instances:
        tag = instance["name"][len("web[") : -1]
        assert instance["state"] == "Synced" and instance["message"] is None
        (only,) = instance["tags"]
        assert only["target"] == f"{world.a.host}/{team}:{tag}"
        assert only["desired"] == only["observed"] and only["desired"].startswith("sha256:")
    assert sorted(t["target"] for t in web["tags"]) == sorted(
        t["target"] for i in instances for t in i["tags"]
    )
