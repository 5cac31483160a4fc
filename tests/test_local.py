"""Local stores: `oci:` targets and bases, `docker-archive:` bases, round trips through `save`.

Witnesses other than our own client: skopeo (reads and writes layouts and archives),
oci-image-tool, and the registries themselves (skopeo inspect --raw).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Cli, World
from tests.support.images import access, inspect_raw, skopeo


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_index(path: Path) -> dict[str, str]:
    """tag -> digest, from a layout's index.json."""
    body = json.loads((path / "index.json").read_text())
    return {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in body["manifests"]
    }


def desired_of(cli: Cli, name: str) -> str:
    diff = cli("diff", "-o", "json").json()
    specs = diff["specs"]
    assert isinstance(specs, list)
    found = [s for s in specs if s["name"] == name]
    assert found, diff
    return str(found[0]["desired"])


def oci_tool_validate(path: Path, ref: str) -> None:
    check = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", "--ref", f"name={ref}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_oci_target_needs_no_registry(cli: Cli, tmp_path: Path) -> None:
    files = cli.specs / "files"
    files.mkdir()
    (files / "hello.txt").write_text("hello\n")
    cli.write_spec(
        "app.yaml",
        """
        base: scratch
        layers: [{path: files}]
        config: {cmd: [/hello.txt]}
        targets: [oci:../out:1, oci:../out:latest]
        """,
    )
    out = cli.root / "out"
    assert cli("diff").code == 2
    assert not out.exists()  # a dry run writes nothing
    applied = cli("apply")
    assert applied.code == 0, applied.stdout + applied.stderr
    tags = layout_index(out)
    desired = desired_of(cli, "app")
    assert tags == {"1": desired, "latest": desired}
    assert cli("diff").code == 0
    modes = {p.stat().st_mode & 0o777 for p in (out / "blobs" / "sha256").iterdir()}
    assert modes == {0o644}
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind

    # Others read it: skopeo, and oci-image-tool.
    inspect = json.loads(skopeo("inspect", f"oci:{out}:1"))
    assert inspect["Digest"] == desired
    oci_tool_validate(out, "1")
    copied = tmp_path / "copied"
    skopeo("copy", "--preserve-digests", f"oci:{out}:1", f"oci:{copied}:x")
    assert layout_index(copied) == {"x": desired}

    # A no-op apply rewrites nothing; a tag moved by hand is put back, others kept.
    stamp = (out / "index.json").stat().st_mtime_ns
    assert cli("apply").code == 0
    assert (out / "index.json").stat().st_mtime_ns == stamp
    skopeo("copy", f"oci:{copied}:x", f"oci:{out}:other")
    body = json.loads((out / "index.json").read_text())
    body["manifests"][0]["digest"] = sha256(b"elsewhere")
    (out / "index.json").write_text(json.dumps(body))
    assert cli("diff").code == 2
    assert cli("apply").code == 0
    assert layout_index(out) == {"1": desired, "latest": desired, "other": desired}


def test_registry_base_to_layout_and_back(world: World, cli: Cli, tmp_path: Path) -> None:
    a = world.a.host
    cli.write_spec(
        "app.yaml",
        f"""
        base: {a}/base/multi:1
        layers: [{{ref: "{world.b.host}/vendor/runtime@{world.vendor_layer.digest}"}}]
        config: {{env: {{MODE: local}}}}
        targets: [oci:../layout:1, {a}/team/local-app:1]
        """,
        spec_name="app",
    )
    assert cli("apply").code == 0
    layout = cli.root / "layout"
    desired = desired_of(cli, "app")
    assert layout_index(layout) == {"1": desired}
    assert sha256(inspect_raw(f"{a}/team/local-app:1")) == desired
    oci_tool_validate(layout, "1")
    # skopeo copies the multi-arch layout to a registry with the same digest.
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        *access("dest-"),
        f"oci:{layout}:1",
        f"docker://{a}/team/by-skopeo:1",
    )
    assert sha256(inspect_raw(f"{a}/team/by-skopeo:1")) == desired

    # The layout as a base: a mirror of it is the same image, pushed from files.
    mark_b = world.b.mark()
    cli.write_spec(
        "mirror.yaml",
        f"""
        base: oci:../layout:1
        baseAnnotations: false
        targets: [{a}/team/from-layout:1]
        """,
        spec_name="mirror",
    )
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    assert sha256(inspect_raw(f"{a}/team/from-layout:1")) == desired
    assert not world.b.requests(mark_b)  # every byte came from the layout


def test_docker_archive_base_from_skopeo(world: World, cli: Cli, tmp_path: Path) -> None:
    """A plain `docker save`-style archive (skopeo's): layers are uncompressed there."""
    a = world.a.host
    archive = cli.specs / "base.tar"
    skopeo(
        "copy",
        *access("src-"),
        f"docker://{a}/base/single:1",
        f"docker-archive:{archive}:example.com/base/single:1",
    )
    body = 'layers: [{{ref: "{b}/vendor/runtime@{d}"}}]\nformat: docker\ntargets: [{t}]\n'
    layer = {"b": world.b.host, "d": world.vendor_layer.digest}
    cli.write_spec(
        "from-archive.yaml",
        "base: docker-archive:base.tar:example.com/base/single:1\n"
        + body.format(t=f"{a}/team/from-archive:1", **layer),
        spec_name="from-archive",
    )
    cli.write_spec(
        "direct.yaml",
        f"base: {a}/base/single:1\n" + body.format(t=f"{a}/team/direct:1", **layer),
        spec_name="direct",
    )
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    pushed = json.loads(inspect_raw(f"{a}/team/from-archive:1"))
    direct = json.loads(inspect_raw(f"{a}/team/direct:1"))
    config = json.loads(
        skopeo("inspect", "--config", "--raw", *access(""), f"docker://{a}/team/from-archive:1")
    )
    direct_config = json.loads(
        skopeo("inspect", "--config", "--raw", *access(""), f"docker://{a}/team/direct:1")
    )
    # Same content: the same diff_ids and config, so the same filesystem.
    assert config["rootfs"] == direct_config["rootfs"]
    assert config["config"] == direct_config["config"]
    # Different bytes where the formats differ: the archive's base layer is a plain tar, named
    # by its diff_id, where the registry's is gzip; the vendor layer is the same blob.
    base_layer = pushed["layers"][0]
    assert base_layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar"
    assert base_layer["digest"] == config["rootfs"]["diff_ids"][0]
    assert direct["layers"][0]["digest"] != base_layer["digest"]
    assert pushed["layers"][1] == direct["layers"][1]
    annotations = pushed.get("annotations", {})
    assert annotations["org.opencontainers.image.base.name"] == "example.com/base/single:1"
    # skopeo reads back what we pushed, layer bytes included.
    skopeo("copy", *access("src-"), f"docker://{a}/team/from-archive:1", f"oci:{tmp_path}/o:1")


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_round_trip_through_save(world: World, cli: Cli, tmp_path: Path, fmt: str) -> None:
    """registry -> save -> docker-archive: base -> apply gives the digests of a direct apply."""
    a, b = world.a.host, world.b.host
    cli.write_spec(
        "base.yaml",
        f"""
        base: {a}/base/multi:1
        format: {fmt}
        config: {{env: {{STAGE: base}}}}
        targets: [{a}/rt/{fmt}-base:1]
        """,
        spec_name="base",
    )
    saved = tmp_path / "base.tar"
    result = cli("save", "base", "-o", str(saved), "--platform", "linux/amd64")
    assert result.code == 0, result.stdout + result.stderr
    layer = f'layers: [{{ref: "{b}/vendor/runtime@{world.vendor_layer.digest}"}}]'
    cli.write_spec(
        "direct.yaml",
        f"""
        base: {a}/rt/{fmt}-base:1
        platforms: [linux/amd64]
        format: {fmt}
        {layer}
        targets: [{a}/rt/{fmt}-direct:1]
        """,
        spec_name="direct",
    )
    cli.write_spec(
        "via-archive.yaml",
        f"""
        base: docker-archive:{saved}:{a}/rt/{fmt}-base:1
        format: {fmt}
        {layer}
        targets: [{a}/rt/{fmt}-via:1]
        """,
        spec_name="via-archive",
    )
    # The base must exist in the registry for the direct spec: apply it first.
    first = cli("apply", str(cli.specs / "base.yaml"))
    assert first.code == 0, first.stdout + first.stderr
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    direct = inspect_raw(f"{a}/rt/{fmt}-direct:1")
    via = inspect_raw(f"{a}/rt/{fmt}-via:1")
    # The direct spec keeps an index of one platform; the archive holds that platform's
    # manifest: compare the image manifests, byte for byte.
    direct_doc = json.loads(direct)
    if "manifests" in direct_doc:
        (entry,) = direct_doc["manifests"]
        direct = inspect_raw(f"{a}/rt/{fmt}-direct@{entry['digest']}")
    assert sha256(via) == sha256(direct)

    # The archive's OCI part, read as a layout (`oci:FILE.tar:TAG`), is the whole saved index.
    cli.write_spec(
        "whole.yaml",
        f"""
        base: oci:{saved}:1
        baseAnnotations: false
        targets: [oci:../whole:1]
        """,
        spec_name="whole",
    )
    result = cli("apply", str(cli.specs / "whole.yaml"))
    assert result.code == 0, result.stdout + result.stderr
    if fmt == "oci":  # skopeo looks up layout tags among OCI-typed entries only
        saved_index = json.loads(skopeo("inspect", "--raw", f"oci-archive:{saved}:1"))
        assert len(saved_index["manifests"]) == 2
    assert layout_index(cli.root / "whole") == {"1": desired_of(cli, "base")}


def test_save_next_to_skopeo_docker_archive(world: World, cli: Cli, tmp_path: Path) -> None:
    """Our archive and skopeo's, for the same image: same RepoTags, config and layer contents."""
    a = world.a.host
    cli.write_spec(
        "app.yaml",
        f"""
        base: {a}/base/single:1
        layers: [{{ref: "{world.b.host}/vendor/runtime@{world.vendor_layer.digest}"}}]
        targets: [{a}/team/compare:1]
        """,
        spec_name="app",
    )
    assert cli("apply").code == 0
    ours, theirs = tmp_path / "ours.tar", tmp_path / "theirs.tar"
    assert cli("save", "app", "-o", str(ours), "--tag", "example.com/team/compare:1").code == 0
    skopeo(
        "copy",
        *access("src-"),
        f"docker://{a}/team/compare:1",
        f"docker-archive:{theirs}:example.com/team/compare:1",
    )

    def docker_part(path: Path) -> tuple[list[str], bytes, list[str], dict[str, dict[str, str]]]:
        with tarfile.open(path) as tar:

            def read(name: str) -> bytes:
                handle = tar.extractfile(name)
                assert handle is not None
                return handle.read()

            (entry,) = json.loads(read("manifest.json"))
            contents = []
            for name in entry["Layers"]:
                data = read(name)
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                contents.append(sha256(data))
            repositories = json.loads(read("repositories"))
            return entry["RepoTags"], read(entry["Config"]), contents, repositories

    our_tags, our_config, our_layers, our_repos = docker_part(ours)
    their_tags, their_config, their_layers, their_repos = docker_part(theirs)
    assert our_tags == their_tags == ["example.com/team/compare:1"]
    assert our_config == their_config
    assert our_layers == their_layers == json.loads(our_config)["rootfs"]["diff_ids"]
    assert set(our_repos) == set(their_repos) == {"example.com/team/compare"}
    assert set(our_repos["example.com/team/compare"]) == {"1"}
    # Each archive, read back as a base, yields the same config (so the same image).
    for name, path in (("ours", ours), ("theirs", theirs)):
        cli.write_spec(
            f"read-{name}.yaml",
            f"""
            base: docker-archive:{path}
            targets: [oci:../read-{name}:1]
            """,
            spec_name=f"read-{name}",
        )
    result = cli("apply", str(cli.specs / "read-ours.yaml"), str(cli.specs / "read-theirs.yaml"))
    assert result.code == 0, result.stdout + result.stderr
    configs = [
        skopeo("inspect", "--config", "--raw", f"oci:{cli.root}/read-{n}:1")
        for n in ("ours", "theirs")
    ]
    assert configs[0] == configs[1] == our_config.decode()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_hostile_archive_base_fails_alone(world: World, cli: Cli, tmp_path: Path) -> None:
    a = world.a.host
    escape = tarfile.TarInfo("../escape.json")
    (cli.specs / "evil.tar").write_bytes(
        _tar([(tarfile.TarInfo("manifest.json"), b"[]"), (escape, b"{}")])
    )
    cli.write_spec(
        "evil.yaml",
        f"""
        base: docker-archive:evil.tar
        targets: [{a}/team/evil:1]
        """,
        spec_name="evil",
    )
    cli.write_spec(
        "good.yaml",
        f"""
        base: {a}/base/single:1
        baseAnnotations: false
        targets: [{a}/team/good-next-to-evil:1]
        """,
        spec_name="good",
    )
    result = cli("apply")
    assert result.code == 1
    output = result.stdout + result.stderr
    assert re.search(r"evil\.yaml:\d+: spec\.base: .*evil\.tar", output), output
    assert "'../escape.json' climbs out with '..'; refused" in output
    assert inspect_raw(f"{a}/team/good-next-to-evil:1")
    assert not (tmp_path.parent / "escape.json").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("base: 'docker-archive:'", "docker-archive: needs a path"),
        ("base: 'docker-archive:x.tar:a/b'", "select an archive's image by NAME:TAG"),
        ("base: 'oci:dir:'", "empty selector after the path"),
        ("targets: [oci:../out]", "must be oci:PATH:TAG, with a tag"),
        ("targets: ['docker-archive:x.tar:a/b:1']", "only oci:PATH:TAG is a local target"),
    ],
)
def test_bad_local_references(cli: Cli, line: str, message: str) -> None:
    base = "base: scratch\nlayers: [{path: .}]\n"
    body = {"base": base, "targets": "targets: [oci:../out:1]\n"}
    key = line.split(":", 1)[0]
    body[key] = line + "\n" + ("layers: [{path: .}]\n" if key == "base" else "")
    cli.write_spec("bad.yaml", body["base"] + body["targets"], spec_name="bad")
    result = cli("validate")
    assert result.code == 1
    assert message in result.stdout + result.stderr
    assert "bad.yaml:" in result.stdout + result.stderr


def test_missing_layout_and_tag_are_clear(cli: Cli) -> None:
    cli.write_spec("nolayout.yaml", "base: oci:../nowhere:1\ntargets: [oci:../out:1]\n")
    result = cli("diff")
    assert result.code == 1
    assert re.search(r"nolayout\.yaml:\d+: spec\.base", result.stdout + result.stderr)
    assert "nowhere does not exist" in result.stdout + result.stderr
    cli.write_spec("notag.yaml", "base: oci:../out:2\ntargets: [oci:../out2:1]\n")
    (cli.root / "out").mkdir()
    (cli.root / "out" / "index.json").write_text('{"manifests": []}')
    (cli.root / "out" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    result = cli("diff", str(cli.specs / "notag.yaml"))
    assert "no image '2' there (tags: none)" in result.stdout, result.stdout


def test_the_example_runs_with_no_registry(cli: Cli, tmp_path: Path) -> None:
    example = tmp_path / "local"
    shutil.copytree(Path(__file__).parent.parent / "examples" / "local", example)
    shutil.rmtree(example / "out", ignore_errors=True)
    assert cli("diff", str(example)).code == 2
    assert cli("apply", str(example)).code == 0
    assert cli("diff", str(example)).code == 0
    assert list(layout_index(example / "out")) == ["1"]
