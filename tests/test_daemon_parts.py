"""Daemon parts without the process: shards, the record of written tags, and pruning against a
real registry."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from reconciler.daemon.prune import Pruner, WrittenTags
from reconciler.daemon.runner import shard_of
from reconciler.registry.client import Registries
from tests.conftest import World
from tests.support.images import skopeo
from tests.support.walk import walk


def test_shards_are_stable_and_spread() -> None:
    names = [f"team-{i}/app-{j}" for i in range(20) for j in range(25)]
    spread = Counter(shard_of(n, 4) for n in names)
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 500 / 4 * 0.7  # no shard starves
    assert [shard_of(n, 4) for n in names] == [shard_of(n, 4) for n in names]
    assert shard_of("web", 1) == 0
    assert shard_of("web", 7) == shard_of("web", 7)


def test_written_tags_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "daemon" / "written-tags.json"
    first = WrittenTags(path)
    first.add("web", [("r.io/web:1", "sha256:" + "a" * 64), ("r.io/web:2", "sha256:" + "b" * 64)])
    first.add("api", [("r.io/api:1", "sha256:" + "c" * 64)])
    again = WrittenTags(path)
    assert again.of("web") == {
        "r.io/web:1": "sha256:" + "a" * 64,
        "r.io/web:2": "sha256:" + "b" * 64,
    }
    again.forget("r.io/web:1")
    assert set(WrittenTags(path).of("web")) == {"r.io/web:2"}
    path.write_text("{damaged")
    assert WrittenTags(path).of("web") == {}


def test_prune_deletes_only_what_it_wrote_and_still_names(world: World, tmp_path: Path) -> None:
    a = world.a.host
    src = f"docker://{a}/base/single:1"
    for tag in ("ours", "moved", "shared", "theirs"):
        skopeo(
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            src,
            f"docker://{a}/prune/x:{tag}",
        )
    single = walk(a, "prune/x", "ours").root
    assert single is not None
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{a}/base/multi:1",
        f"docker://{a}/prune/y:ours",
    )
    multi = walk(a, "prune/y", "ours").root
    assert multi is not None
    written = WrittenTags(tmp_path / "written.json")
    written.add(
        "gone",
        [
            (f"{a}/prune/x:ours", single),  # shares its manifest with :theirs -> kept
            (f"{a}/prune/x:moved", "sha256:" + "0" * 64),  # moved since we wrote it -> kept
            (f"{a}/prune/y:ours", multi),  # the only tag on its index -> deleted
        ],
    )

    async def go() -> str:
        async with Registries(env={"DOCKER_CONFIG": str(tmp_path)}) as registries:
            return await Pruner(registries, written).prune("gone")

    message = asyncio.run(go())
    assert "pruned 1 tag(s)" in message
    assert "moved by someone else" in message and "manifest also tagged" in message
    assert walk(a, "prune/y", "ours").tag_present is False
    for tag in ("ours", "moved", "shared", "theirs"):
        assert walk(a, "prune/x", tag).tag_present, tag
    assert set(written.of("gone")) == {f"{a}/prune/x:ours", f"{a}/prune/x:moved"}
