"""`path:` layers: built reproducibly from local files, pushed, saved, and loadable."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

from tests.conftest import Cli, World
from tests.support.images import inspect_raw
from tests.support.walk import walk


def make_tree(root: Path, umask: int, mtime: int) -> None:
    old = os.umask(umask)
    try:
        (root / "app" / "bin").mkdir(parents=True)
        (root / "app" / "bin" / "run").write_text("#!/bin/sh\necho run\n")
        os.chmod(root / "app" / "bin" / "run", 0o777 & ~umask)
        (root / "app" / "etc").mkdir()
        (root / "app" / "etc" / "app.conf").write_text("port=8080\n")
        os.symlink("../etc/app.conf", root / "app" / "bin" / "conf")
    finally:
        os.umask(old)
    for path in [root / "app", *(root / "app").rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def spec_for(cli: Cli, world: World, repo: str) -> None:
    cli.write_spec(
        "app.yaml",
        f"""
        base: {world.a.host}/base/single:1
        layers:
          - path: ./files/app
            comment: app files
        targets: [{world.a.host}/{repo}:1]
        """,
        spec_name="app",
    )


def test_same_files_same_digest_then_push_and_save(world: World, tmp_path: Path) -> None:
    first, second = Cli(tmp_path / "one"), Cli(tmp_path / "two")
    make_tree(first.specs / "files", 0o022, 1_000)
    make_tree(second.specs / "files", 0o077, 1_700_000_000)
    spec_for(first, world, "team/local-one")
    spec_for(second, world, "team/local-two")

    assert first("apply").code == 0
    assert second("apply").code == 0
    one = json.loads(inspect_raw(f"{world.a.host}/team/local-one:1"))
    two = json.loads(inspect_raw(f"{world.a.host}/team/local-two:1"))
    assert one["layers"][-1] == two["layers"][-1]  # same files, same digest
    assert one == two  # and so the same manifest
    assert walk(world.a.host, "team/local-one", "1").problems == []

    # The layer's content: sorted, owned by root, mtime 0, modes 755/644, the link kept.
    built = next((first.state / "built").glob("*.tar.gz"))
    assert "sha256:" + hashlib.sha256(built.read_bytes()).hexdigest() == one["layers"][-1]["digest"]
    with tarfile.open(built) as tar:
        entries = [(m.name, m.mode, m.uid, m.mtime, m.type) for m in tar.getmembers()]
    assert entries == [
        ("bin", 0o755, 0, 0, tarfile.DIRTYPE),
        ("bin/conf", 0o777, 0, 0, tarfile.SYMTYPE),
        ("bin/run", 0o755, 0, 0, tarfile.REGTYPE),
        ("etc", 0o755, 0, 0, tarfile.DIRTYPE),
        ("etc/app.conf", 0o644, 0, 0, tarfile.REGTYPE),
    ]
    assert gzip.decompress(built.read_bytes())  # a valid gzip stream

    # A second run finds everything in place.
    assert first("diff").code == 0

    out = tmp_path / "local.tar"
    assert first("save", "app", "-o", str(out)).code == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert f"blobs/sha256/{one['layers'][-1]['digest'].split(':')[1]}" in names


def test_bad_paths_are_spec_errors(world: World, cli: Cli) -> None:
    cli.write_spec(
        "x.yaml",
        f"""
        base: {world.a.host}/base/single:1
        layers:
          - path: ./missing
        targets: [{world.a.host}/team/x:1]
        """,
    )
    result = cli("diff")
    assert result.code == 1
    assert "x.yaml:6: spec.layers[0].path" in result.stdout and "does not exist" in result.stdout
    cli.write_spec(
        "x.yaml",
        f"""
        base: {world.a.host}/base/single:1
        layers:
          - {{path: ./files, digest: "sha256:{"a" * 64}"}}
        targets: [{world.a.host}/team/x:1]
        """,
    )
    result = cli("validate")
    assert result.code == 1 and "a 'path' layer is built here; remove digest" in result.stderr
