"""`reconciler save`: archives checked by podman load, skopeo and oci-image-tool."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.archive.reader import ArchiveIndex
from tests.conftest import Cli, World
from tests.support.images import skopeo
from tests.support.schemas import validate


@pytest.fixture
def podman_root() -> Iterator[Path]:
    # podman refuses a runroot path over 50 characters: keep it short, under /tmp.
    root = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def podman(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Rootful podman with its own storage in a temp dir (vfs: no kernel overlay needed)."""
    return subprocess.run(
        [
            "podman",
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def read(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(name)
        assert handle is not None, name
        return handle.read()


def write_app(cli: Cli, world: World, base: str, multi: bool = False) -> None:
    a, b = world.a.host, world.b.host
    extra = (
        f"\n          - ref: {b}/vendor/armtools@{world.arm_layer.digest}"
        "\n            platforms: [linux/arm64]"
        if multi
        else ""
    )
    cli.write_spec(
        "app.yaml",
        f"""
        base: {a}/{base}:1
        layers:
          - ref: {b}/vendor/runtime@{world.vendor_layer.digest}{extra}
        config: {{env: {{MODE: saved}}}}
        targets: [{a}/team/saved:1]
        """,
        spec_name="app",
    )


@pytest.mark.parametrize("base", ["base/single", "base/multi"])
def test_save_loads_everywhere(
    world: World, cli: Cli, tmp_path: Path, podman_root: Path, base: str
) -> None:
    write_app(cli, world, base, multi=base == "base/multi")
    out = tmp_path / "out" / "app.tar"
    result = cli("save", "app", "-o", str(out), "--tag", "example.com/team/saved:1")
    assert result.code == 0, result.stdout + result.stderr
    names = members(out)
    assert not [p for p in out.parent.iterdir() if p.name != "app.tar"]  # no temp file left

    # docker part: manifest.json, repositories, and the legacy chain.
    manifest = json.loads(read(out, "manifest.json"))
    assert manifest[0]["RepoTags"] == ["example.com/team/saved:1"]
    repositories = json.loads(read(out, "repositories"))
    top = repositories["example.com/team/saved"]["1"]
    assert f"{top}/layer.tar" in names
    chain, current = [], top
    while current:
        chain.append(current)
        current = json.loads(read(out, f"{current}/json")).get("parent")
    assert len(chain) == len(manifest[0]["Layers"]) == (3 if base == "base/multi" else 2)
    assert names[f"{top}/layer.tar"].islnk()  # stored once: a hard link to the blob
    # Our own reader accepts what we write (links resolve inside the archive).
    index_of = ArchiveIndex(out)
    assert index_of.read_json("manifest.json") == manifest
    linked, blob = index_of.member(f"{top}/layer.tar"), index_of.member(manifest[0]["Layers"][-1])
    assert (linked.offset, linked.size) == (blob.offset, blob.size)

    # The OCI layout part is what apply would push: same root digest.
    index = json.loads(read(out, "index.json"))
    diff = cli("diff", "-o", "json").json()
    specs = diff["specs"]
    assert isinstance(specs, list)
    specs_root = specs[0]["desired"]
    assert index["manifests"][0]["digest"] == specs_root
    assert skopeo("inspect", f"docker-archive:{out}")
    copied = tmp_path / "copied"
    skopeo("copy", "--all", "--preserve-digests", f"oci-archive:{out}:1", f"oci:{copied}:1")
    assert json.loads((copied / "index.json").read_text())["manifests"][0]["digest"] == specs_root
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    check = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", "--ref", "name=1", str(layout)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    validate("index", json.loads(read(out, "index.json")))
    validate("layout", json.loads(read(out, "oci-layout")))

    loaded = podman(podman_root, "load", "-i", str(out))
    assert loaded.returncode == 0, loaded.stderr
    inspect = podman(podman_root, "image", "inspect", "example.com/team/saved:1")
    assert inspect.returncode == 0, inspect.stderr
    image = json.loads(inspect.stdout)[0]
    config = json.loads(read(out, manifest[0]["Config"]))
    assert image["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    assert "MODE=saved" in image["Config"]["Env"]


def test_uncompressed_layers_are_plain_tars(
    world: World, cli: Cli, tmp_path: Path, podman_root: Path
) -> None:
    write_app(cli, world, "base/single")
    out = tmp_path / "plain.tar"
    result = cli("save", str(cli.specs / "app.yaml"), "-o", str(out), "--uncompressed-layers")
    assert result.code == 0, result.stdout + result.stderr
    manifest = json.loads(read(out, "manifest.json"))
    config = json.loads(read(out, manifest[0]["Config"]))
    names = members(out)
    for path, diff_id in zip(manifest[0]["Layers"], config["rootfs"]["diff_ids"], strict=True):
        assert path.endswith("/layer.tar") and names[path].isfile()
        assert "sha256:" + hashlib.sha256(read(out, path)).hexdigest() == diff_id
    loaded = podman(podman_root, "load", "-i", str(out))
    assert loaded.returncode == 0, loaded.stderr
    assert manifest[0]["RepoTags"] == [f"{world.a.host}/team/saved:1"]  # the spec's targets
