"""The blob-location memory (reconciler.blobmemory): the file on its own, then across real
processes against real registries, the registries' access logs showing what was sent."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections import Counter
from pathlib import Path
from unittest.mock import ANY
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.blobmemory import FILE_NAME, HOLDERS_PER_BLOB, BlobMemory
from reconciler.oci.digest import Digest
from tests.conftest import Cli, World
from tests.support.images import (
    Image,
    inspect_raw,
    make_layer,
    push_layout,
    sha256,
    write_layout,
)
from tests.support.registry import Registry, Request
from tests.support.steps import unique

HOST = "registry.example.com:5000"


def digest(n: int) -> Digest:
    return Digest("sha256", f"{n:064x}")


# -- the file -----------------------------------------------------------------------------


def test_holders_are_remembered_newest_first_and_forgotten(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    memory = BlobMemory(path)
    memory.remember(HOST, "team/a", digest(1))
    memory.remember(HOST, "team/b", digest(1))
    memory.remember(HOST, "team/a", digest(1))  # known already: stays where it is
    memory.save()
    again = BlobMemory(path)  # another process, later
    assert again.holders(HOST, digest(1)) == ("team/b", "team/a")
    assert again.holders(HOST, digest(2)) == ()
    assert again.holders("other.example.com", digest(1)) == ()
    again.forget(HOST, "team/b", digest(1))
    again.save()
    assert BlobMemory(path).holders(HOST, digest(1)) == ("team/a",)
    # The file holds hosts, repositories and digests, nothing else.
    entry = {"changed": ANY, "repositories": ["team/a"]}
    assert json.loads(path.read_text()) == {
        "version": 1,
        "registries": {HOST: {str(digest(1)): entry}},
    }


def test_the_memory_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    memory = BlobMemory(path, holders_per_blob=2, max_blobs=3)
    for repository in ("r/1", "r/2", "r/3"):
        memory.remember(HOST, repository, digest(1))
    for n in range(2, 6):
        memory.remember(HOST, "r/1", digest(n))
    memory.save()
    loaded = BlobMemory(path)
    assert loaded.holders(HOST, digest(1)) == ()  # the least recently changed blobs went
    assert loaded.holders(HOST, digest(2)) == ()
    assert [loaded.holders(HOST, digest(n)) for n in (3, 4, 5)] == [("r/1",)] * 3
    fresh = BlobMemory(tmp_path / "other.json", holders_per_blob=2)
    for repository in ("r/1", "r/2", "r/3"):
        fresh.remember(HOST, repository, digest(1))
    assert fresh.holders(HOST, digest(1)) == ("r/3", "r/2")  # the newest two


def test_concurrent_processes_keep_each_others_entries(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    first, second = BlobMemory(path), BlobMemory(path)
    first.remember(HOST, "team/a", digest(1))
    second.remember(HOST, "team/b", digest(2))
    first.save()
    second.save()  # replays its own changes over what the first wrote
    loaded = BlobMemory(path)
    assert loaded.holders(HOST, digest(1)) == ("team/a",)
    assert loaded.holders(HOST, digest(2)) == ("team/b",)
    assert os.listdir(tmp_path) == [FILE_NAME]  # no temporary file left behind


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"\xff\xfe",
        b'{"version": 1, "registries": []}',
        b'{"version": 99, "registries": {}}',
        b'{"version": 1, "registries": {"h.example.com": {"sha256:zz": {}}}}',
        json.dumps(
            {
                "version": 1,
                "registries": {
                    HOST: {str(digest(1)): {"changed": 1, "repositories": ["UPPER/case"]}}
                },
            }
        ).encode(),
        json.dumps(
            {
                "version": 1,
                "registries": {HOST: {str(digest(1)): {"changed": "x", "repositories": []}}},
            }
        ).encode(),
    ],
)
def test_a_damaged_file_is_ignored_with_a_warning_and_rebuilt(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(damage)
    memory = BlobMemory(path)
    with caplog.at_level(logging.WARNING, logger="reconciler.blobmemory"):
        assert memory.holders(HOST, digest(1)) == ()
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert "damaged" in caplog.records[0].getMessage()
    memory.remember(HOST, "team/a", digest(1))
    memory.save()
    assert BlobMemory(path).holders(HOST, digest(1)) == ("team/a",)


# -- across processes, against real registries ---------------------------------------------


def mirror_spec(base: str, target: str) -> str:
    return f"base: {base}\nbaseAnnotations: false\ntargets: [{target}]\n"


def query(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}


def sends(requests: list[Request]) -> list[Request]:
    """Blob bytes sent: a PATCH or PUT to an upload session, or a POST carrying a digest."""
    return [
        r
        for r in requests
        if "/blobs/uploads/" in r.path
        and (r.method in ("PATCH", "PUT") or (r.method == "POST" and "digest" in query(r)))
    ]


def blob_digests(images: list[Image]) -> set[str]:
    return {
        d for image in images for d in (sha256(image.config), *(x.digest for x in image.layers))
    }


def copied_once(world: World, cli: Cli, repo: str) -> tuple[str, set[str]]:
    """A/base/single:1 copied to B/<repo>/first:1 by one process; the blobs it holds."""
    cli.write_spec(
        "first.yaml", mirror_spec(f"{world.a.host}/base/single:1", f"{world.b.host}/{repo}/first:1")
    )
    assert cli("apply").code == 0
    (cli.specs / "first.yaml").unlink()
    return f"{repo}/first", blob_digests(world.single.images)


def test_a_second_process_mounts_from_the_first_repository(world: World, cli: Cli) -> None:
    b = world.b
    repo = unique("memory/mount")
    first, blobs = copied_once(world, cli, repo)
    memory = json.loads((cli.state / FILE_NAME).read_text())["registries"][b.host]
    assert {d for d, e in memory.items() if first in e["repositories"]} == blobs
    target = f"{b.host}/{repo}/second:1"
    cli.write_spec("second.yaml", mirror_spec(f"{world.a.host}/base/single:1", target))
    planned = cli("diff")
    assert planned.code == 2, planned.stderr
    for d in blobs:
        assert any(
            d[: len("sha256:") + 12] in line and f"mount from {first}" in line
            for line in planned.stdout.splitlines()
        )
    mark = b.mark()
    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    seen = b.requests(mark)
    mounts = [r for r in seen if r.method == "POST" and "mount" in query(r)]
    assert {query(r)["mount"] for r in mounts if r.status == 201} == blobs
    assert {query(r)["from"] for r in mounts} == {first}
    assert sends(seen) == []  # no byte of a blob went up
    assert not [r for r in seen if r.method == "HEAD" and "/blobs/" in r.path]
    assert inspect_raw(target) == world.single.root


def delete_blob(registry: Registry, repository: str, digest_text: str) -> None:
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{repository}/blobs/{digest_text}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a test registry
        assert response.status == 202


def test_a_stale_holder_falls_back_to_an_upload_and_is_forgotten(world: World, cli: Cli) -> None:
    b = world.b
    repo = unique("memory/stale")
    first, blobs = copied_once(world, cli, repo)
    gone = world.single.images[0].layers[0].digest
    delete_blob(b, first, gone)  # the memory still names `first` as its holder
    target = f"{b.host}/{repo}/second:1"
    cli.write_spec("second.yaml", mirror_spec(f"{world.a.host}/base/single:1", target))
    mark = b.mark()
    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    seen = b.requests(mark)
    mounts = {
        query(r)["mount"]: r.status for r in seen if r.method == "POST" and "mount" in query(r)
    }
    assert mounts == {d: (202 if d == gone else 201) for d in blobs}
    assert [query(r)["digest"] for r in sends(seen) if r.status == 201] == [gone]
    assert inspect_raw(target) == world.single.root
    memory = json.loads((cli.state / FILE_NAME).read_text())["registries"][b.host]
    assert first not in memory[gone]["repositories"]
    assert f"{repo}/second" in memory[gone]["repositories"]
    assert all(first in memory[d]["repositories"] for d in blobs - {gone})


def test_a_damaged_memory_file_is_ignored_with_a_warning(world: World, cli: Cli) -> None:
    b = world.b
    repo = unique("memory/damaged")
    cli.state.mkdir(parents=True, exist_ok=True)
    (cli.state / FILE_NAME).write_bytes(b'{"version": 1, "registries": {"x": [')
    target = f"{b.host}/{repo}:1"
    cli.write_spec("app.yaml", mirror_spec(f"{world.a.host}/base/single:1", target))
    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    assert f"blob-location memory {cli.state / FILE_NAME} is damaged" in applied.stderr
    assert "Traceback" not in applied.stderr
    assert inspect_raw(target) == world.single.root
    memory = json.loads((cli.state / FILE_NAME).read_text())["registries"][b.host]
    assert {d for d, e in memory.items() if repo in e["repositories"]} == blob_digests(
        world.single.images
    )


def test_requests_per_spec_for_a_changed_base(world: World, cli: Cli, tmp_path: Path) -> None:
    """20 specs mirror one base tag into 20 repositories of B; the tag moves to an image with
    one layer more. Per spec: HEAD tag, HEAD root, a mount per blob, PUT tag; the new blobs
    are asked about and sent once, then mounted from there."""
    a, b = world.a, world.b
    repo = unique("memory/changed")
    count = 20
    shared = make_layer({"etc/shared": os.urandom(2000)})
    old = write_layout(tmp_path / "old", [Image("linux", "amd64", [shared])], index=False)
    base = f"{a.host}/{repo}/base:1"
    push_layout(old, base)
    for i in range(count):
        cli.write_spec(f"s{i:02d}.yaml", mirror_spec(base, f"{b.host}/{repo}/rc-{i}:1"), f"s{i}")
    assert cli("apply").code == 0
    added = make_layer({"etc/added": os.urandom(2000)})
    new = write_layout(tmp_path / "new", [Image("linux", "amd64", [shared, added])], index=False)
    push_layout(new, base)
    marks = a.mark(), b.mark()
    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    on_a, on_b = a.requests(marks[0]), b.requests(marks[1])

    def kind(r: Request) -> str:
        q = query(r)
        if "/manifests/" in r.path:
            return f"{r.method} manifest {'digest' if '/manifests/sha256:' in r.path else 'tag'}"
        if r.method == "POST":
            return "POST mount" if "mount" in q else "POST upload"
        return f"{r.method} blob" + (" upload" if "/uploads/" in r.path else "")

    new_blobs = 2  # the new config and the added layer; the shared layer is mounted, but
    known = HOLDERS_PER_BLOB  # into the repositories the memory names for it: asked there
    assert Counter(kind(r) for r in on_b) == {
        "HEAD manifest tag": count,
        "HEAD manifest digest": count,
        "HEAD blob": new_blobs + known,  # a new blob is asked once per registry
        "POST mount": count * 3 - new_blobs - known,
        "POST upload": new_blobs,
        "PUT blob upload": new_blobs,
        "PUT manifest tag": count,  # the manifest goes up with its tag, not by digest first
    }
    assert Counter(kind(r) for r in on_a) == {
        "HEAD manifest tag": 1,
        "GET manifest digest": 1,
        "GET blob": 1 + new_blobs,  # the config read to build, then each new blob copied
    }
    # 6 per spec; the new blobs' HEAD and upload (+2 each, their mounts -1 each) into the
    # first repository; on A, the base read (3) and the new blobs copied (2): 129 for 20 specs.
    total = len(on_a) + len(on_b)
    assert total == count * 6 + new_blobs * (3 - 1) + 3 + new_blobs == 129
    assert inspect_raw(f"{b.host}/{repo}/rc-{count - 1}:1") == new.root
