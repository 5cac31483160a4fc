"""End to end: specs -> `reconciler apply` -> real registries, checked by skopeo and schemas."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, World
from tests.support.images import inspect_raw, make_layer, push_blob_only, sha256, skopeo
from tests.support.registry import Request
from tests.support.schemas import validate

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


def app_spec(world: World, repo: str) -> str:
    """The `spec:` section of the main multi-arch scenario."""
    a, b = world.a.host, world.b.host
    return f"""
      base: {a}/base/multi:1
      layers:
        - registry: {b}
          repository: vendor/runtime
          digest: {world.vendor_layer.digest}
          comment: vendor runtime
        - ref: {b}/vendor/armtools@{world.arm_layer.digest}
          platforms: [linux/arm64]
      annotations:
        org.opencontainers.image.source: https://git.example.com/app
      config:
        env: {{PORT: "8080", LANG: C}}
        labels: {{team: web}}
      targets:
        - {a}/{repo}:latest
        - {a}/{repo}:v1
    """


def blob(registry: str, repository: str, digest: str) -> bytes:
    """Read a blob with skopeo's sibling tool chain: plain HTTP, independent of our client."""
    import urllib.request

    url = f"http://{registry}/v2/{repository}/blobs/{digest}"
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
    assert sha256(data) == digest
    return data


def oci_image_tool(kind: str, path: Path) -> None:
    tool = subprocess.run(
        ["oci-image-tool", "validate", "--type", kind, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tool.returncode == 0, tool.stdout + tool.stderr
    assert "Validation succeeded" in tool.stdout, tool.stdout


def index_digest_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def manifest_requests(requests: list[Request]) -> list[Request]:
    return [r for r in requests if r.path != "/v2/"]


def test_multiarch_apply_then_noop(world: World, cli: Cli, tmp_path: Path) -> None:
    a = world.a
    cli.write_spec("app.yaml", app_spec(world, "team/app"), "app")

    first = cli("diff")
    assert first.code == 2, first.stderr
    assert "OutOfSync" in first.stdout
    assert "copy from" in first.stdout and "mount from base/multi" in first.stdout

    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    assert "Applied:" in applied.stdout and "2 copied" in applied.stdout

    # The index, as an independent client sees it.
    raw_index = inspect_raw(f"{a.host}/team/app:latest")
    assert inspect_raw(f"{a.host}/team/app:v1") == raw_index
    index = json.loads(raw_index)
    validate("index", index)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["annotations"]["org.opencontainers.image.source"] == "https://git.example.com/app"
    assert index["annotations"][BASE_NAME] == f"{a.host}/base/multi:1"
    assert index["annotations"][BASE_DIGEST] == world.multi.digest
    platforms = [
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    ]
    assert platforms == [("amd64", None), ("arm64", "v8")]  # the base's order

    for entry, base_image in zip(index["manifests"], world.multi.images, strict=True):
        raw = inspect_raw(f"{a.host}/team/app@{entry['digest']}")
        assert sha256(raw) == entry["digest"] and len(raw) == entry["size"]
        manifest = json.loads(raw)
        validate("manifest", manifest)
        layers = [layer["digest"] for layer in manifest["layers"]]
        expected = [layer.digest for layer in base_image.layers] + [world.vendor_layer.digest]
        if base_image.architecture == "arm64":
            expected.append(world.arm_layer.digest)
        assert layers == expected
        assert manifest["annotations"][BASE_DIGEST] == base_image.digest
        assert manifest["annotations"][BASE_NAME] == f"{a.host}/base/multi:1"
        assert (
            manifest["annotations"]["org.opencontainers.image.source"]
            == "https://git.example.com/app"
        )

        config = json.loads(blob(a.host, "team/app", manifest["config"]["digest"]))
        validate("config", config)
        diff_ids = config["rootfs"]["diff_ids"]
        for layer_digest, diff_id in zip(layers, diff_ids, strict=True):
            tar = gzip.decompress(blob(a.host, "team/app", layer_digest))
            assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert len(config["history"]) == len(layers)
        assert config["history"][len(base_image.layers)]["created_by"] == "vendor runtime"
        env = config["config"]["Env"]
        assert "PORT=8080" in env and "LANG=C" in env and "LANG=C.UTF-8" not in env
        assert config["config"]["Labels"] == {"team": "web"}
        assert config["created"] == "2023-11-14T22:13:20Z"  # the base's, unchanged

    # skopeo copies the whole thing out, verifying every digest on the way.
    out = tmp_path / "copy"
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{a.host}/team/app:latest",
        f"oci:{out}:app",
    )
    validate("layout", json.loads((out / "oci-layout").read_text()))
    oci_image_tool("image", out)
    blobs_dir = out / "blobs" / "sha256"
    oci_image_tool("imageIndex", blobs_dir / index_digest_hex(raw_index))
    for entry in index["manifests"]:
        manifest_file = blobs_dir / entry["digest"].split(":")[1]
        oci_image_tool("manifest", manifest_file)
        config_digest = json.loads(manifest_file.read_bytes())["config"]["digest"]
        oci_image_tool("config", blobs_dir / config_digest.split(":")[1])

    # Now in sync: diff says so, a second apply pushes nothing and asks one HEAD per tag
    # plus one for the base tag.
    again = cli("diff")
    assert again.code == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout and "1 of 1 specs in sync" in again.stdout
    mark_a, mark_b = a.mark(), world.b.mark()
    noop = cli("apply")
    assert noop.code == 0, noop.stderr
    seen = manifest_requests(a.requests(mark_a))
    assert sorted((r.method, r.path) for r in seen) == sorted(
        [
            ("HEAD", "/v2/base/multi/manifests/1"),
            ("HEAD", "/v2/team/app/manifests/latest"),
            ("HEAD", "/v2/team/app/manifests/v1"),
        ]
    )
    assert manifest_requests(world.b.requests(mark_b)) == []


def test_same_registry_layers_are_mounted(world: World, cli: Cli) -> None:
    a = world.a
    cli.write_spec(
        "mount.yaml",
        f"""
      base: {a.host}/base/single:1
      layers:
        - ref: {a.host}/tools/extra@{world.tools_layer.digest}
      targets: [{a.host}/team/mounted:1]
    """,
    )
    mark = a.mark()
    result = cli("apply", "-o", "json")
    assert result.code == 0, result.stderr
    report = result.json()
    summary = report["summary"]
    assert isinstance(summary, dict)
    assert (summary["mounted"], summary["copied"], summary["uploaded"]) == (2, 0, 1)
    requests = a.requests(mark)
    mounts = [r for r in requests if r.method == "POST" and "mount=" in r.path]
    assert len(mounts) == 2 and all(r.status == 201 for r in mounts)
    # No layer bytes were uploaded: the only blob PUT carries the generated config.
    puts = [r for r in requests if r.method == "PUT" and "/blobs/uploads/" in r.path]
    assert len(puts) == 1
    assert not [r for r in requests if r.method == "PATCH"]
    config_digest = json.loads(inspect_raw(f"{a.host}/team/mounted:1"))["config"]["digest"]
    assert puts[0].path.endswith(f"digest={config_digest.replace(':', '%3A')}")


def test_mirror_gives_the_base_digest(world: World, cli: Cli) -> None:
    a = world.a
    cli.write_spec(
        "mirror.yaml",
        f"""
      base: {a.host}/base/multi:1
      baseAnnotations: false
      targets: [{a.host}/mirror/multi:1]
    """,
    )
    cli.write_spec(
        "mirror-docker.yaml",
        f"""
      base: {a.host}/base/docker:1
      baseAnnotations: false
      targets: [{world.b.host}/mirror/docker:1]
    """,
    )
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    assert inspect_raw(f"{a.host}/mirror/multi:1") == world.multi.root
    assert inspect_raw(f"{world.b.host}/mirror/docker:1") == inspect_raw(f"{a.host}/base/docker:1")


def test_platform_filter_on_mirror(world: World, cli: Cli) -> None:
    a = world.a
    cli.write_spec(
        "arm.yaml",
        f"""
      base: {a.host}/base/multi:1
      platforms: [linux/arm64]
      baseAnnotations: false
      targets: [{a.host}/mirror/arm:1]
    """,
    )
    assert cli("apply").code == 0
    index = json.loads(inspect_raw(f"{a.host}/mirror/arm:1"))
    assert [m["digest"] for m in index["manifests"]] == [world.multi.images[1].digest]


def test_docker_format(world: World, cli: Cli, tmp_path: Path) -> None:
    a = world.a
    cli.write_spec(
        "docker.yaml",
        f"""
      base: {a.host}/base/multi:1
      format: docker
      layers:
        - ref: {world.b.host}/vendor/runtime@{world.vendor_layer.digest}
      targets: [{a.host}/team/docker:1]
    """,
    )
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    index = json.loads(inspect_raw(f"{a.host}/team/docker:1"))
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    for entry in index["manifests"]:
        assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        manifest = json.loads(inspect_raw(f"{a.host}/team/docker@{entry['digest']}"))
        assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
        assert {layer["mediaType"] for layer in manifest["layers"]} == {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        }
    skopeo(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{a.host}/team/docker:1",
        f"oci:{tmp_path / 'out'}:x",
    )
    # skopeo reads the v2s2 image as a whole, config and all.
    inspected = json.loads(
        skopeo(
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            f"docker://{a.host}/team/docker:1",
        )
    )
    assert inspected["Architecture"] == "arm64"
    assert len(inspected["Layers"]) == 3


def test_oci_spec_over_docker_base_converts(world: World, cli: Cli) -> None:
    a = world.a
    cli.write_spec(
        "conv.yaml",
        f"""
      base: {a.host}/base/docker:1
      annotations: {{purpose: conversion}}
      targets: [{a.host}/team/converted:1]
    """,
    )
    assert cli("apply").code == 0
    index = json.loads(inspect_raw(f"{a.host}/team/converted:1"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    manifest = json.loads(inspect_raw(f"{a.host}/team/converted@{index['manifests'][0]['digest']}"))
    validate("manifest", manifest)
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_determinism_across_state_dirs(world: World, tmp_path: Path) -> None:
    digests = []
    for run in ("one", "two"):
        cli = Cli(tmp_path / run)
        cli.write_spec("app.yaml", app_spec(world, "team/determinism"), "app")
        result = cli("diff", "-o", "json")
        assert result.code in (0, 2), result.stderr
        spec = result.json()["specs"][0]  # type: ignore[index]
        digests.append((spec["desired"], [m["digest"] for m in spec["manifests"]]))
        assert (tmp_path / run / "state").is_dir()
    assert digests[0] == digests[1]
    assert digests[0][0] is not None


def test_bad_specs_do_not_stop_good_ones(world: World, cli: Cli) -> None:
    a = world.a.host
    good = f"""
      base: {a}/base/single:1
      annotations: {{ok: "yes"}}
      targets: [{a}/team/good:1]
    """
    cli.write_spec("good.yaml", good)
    cli.write_spec(
        "unknown-field.yaml",
        f"""
      base: {a}/base/single:1
      colour: blue
      targets: [{a}/team/bad1:1]
    """,
    )
    cli.write_spec(
        "bad-digest.yaml",
        f"""
      base: {a}/base/single:1
      layers:
        - registry: {a}
          repository: tools/extra
          digest: sha256:abc
      targets: [{a}/team/bad2:1]
    """,
    )
    cli.write_spec(
        "bad-ref.yaml",
        f"""
      base: {a}/Base/Single:1
      targets: [{a}/team/bad3:1]
    """,
    )
    cli.write_spec(
        "dup-1.yaml",
        f"""
      base: {a}/base/single:1
      targets: [{a}/team/dup:1]
    """,
    )
    cli.write_spec(
        "dup-2.yaml",
        f"""
      base: {a}/base/single:1
      targets: [{a}/team/dup:1]
    """,
    )
    cli.write("broken.yaml", "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\nspec: [\n")

    result = cli("apply")
    assert result.code == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("  ! ")]
    expect = {
        "unknown-field.yaml:5: spec.colour: unknown field",
        "bad-digest.yaml:8: spec.layers[0].digest: invalid digest",
        "bad-ref.yaml:4: spec.base: invalid reference",
        "dup-2.yaml:5: spec.targets[0]: target",
        "broken.yaml:4: invalid YAML",
    }
    for fragment in expect:
        assert sum(fragment in e for e in errors) == 1, (fragment, errors)
    assert sum("dup-1.yaml" in e or "dup-2.yaml" in e for e in errors) == 1
    assert len(errors) == 5
    assert "good (" in result.stdout and "Synced" in result.stdout
    # The good spec was reconciled; the duplicate target was written by neither.
    assert json.loads(inspect_raw(f"{a}/team/good:1"))["annotations"]["ok"] == "yes"
    probe = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{a}/team/dup:1"],
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0
    validate_result = cli("validate")
    assert validate_result.code == 1
    assert "5 errors" in validate_result.stderr


@pytest.mark.parametrize("output", ["text", "json"])
def test_diff_exit_codes_and_streams(world: World, cli: Cli, output: str) -> None:
    a = world.a.host
    cli.write_spec(
        "x.yaml",
        f"""
      base: {a}/base/single:1
      annotations: {{run: "{output}"}}
      targets: [{a}/team/exit-{output}:1]
    """,
    )
    result = cli("diff", "-o", output)
    assert result.code == 2
    if output == "json":
        report = result.json()
        assert report["kind"] == "Diff" and report["summary"]["outOfSync"] == 1  # type: ignore[index]
    assert "INFO" not in result.stdout
    assert cli("apply", "-o", output).code == 0
    assert cli("diff", "-o", output).code == 0


def test_specs_sharing_a_base_and_a_layer_share_the_work(world: World, cli: Cli) -> None:
    a, b = world.a, world.b
    for i in range(4):
        cli.write_spec(
            f"shared-{i}.yaml",
            f"""
          base: {a.host}/base/multi:1
          layers:
            - ref: {b.host}/vendor/runtime@{world.vendor_layer.digest}
          annotations: {{copy: "{i % 2}"}}
          targets: [{a.host}/shared/n{i}:1]
        """,
        )
    mark_a, mark_b = a.mark(), b.mark()
    result = cli("apply", "-o", "json")
    assert result.code == 0, result.stdout + result.stderr
    seen_a, seen_b = a.requests(mark_a), b.requests(mark_b)
    # The base tag is resolved once for all four specs.
    assert [r.method for r in seen_a if r.path == "/v2/base/multi/manifests/1"] == ["HEAD"]
    # Every (repository, digest) is asked at most once.
    heads = [r.path for r in seen_a if r.method == "HEAD"]
    assert len(heads) == len(set(heads))
    # The vendor layer leaves registry b twice: once to compute its diff_id, once to copy it;
    # the other three repositories mount it from the first.
    layer_gets = [r for r in seen_b if r.method == "GET" and world.vendor_layer.digest in r.path]
    assert len(layer_gets) == 2
    summary = result.json()["summary"]
    assert isinstance(summary, dict) and summary["copied"] == 1
    for i in range(4):
        index = json.loads(inspect_raw(f"{a.host}/shared/n{i}:1"))
        assert index["annotations"]["copy"] == str(i % 2)


def test_diff_ids_are_computed_once_and_cached(world: World, cli: Cli) -> None:
    a, b = world.a.host, world.b
    spec = f"""
      base: {a}/base/single:1
      layers:
        - ref: {b.host}/vendor/armtools@{world.arm_layer.digest}
      targets: [{a}/cache/TARGET:1]
    """
    cli.write_spec("one.yaml", spec.replace("TARGET", "one"))
    mark = b.mark()
    assert cli("diff").code == 2
    first = [(r.method, r.path.split("/")[-1]) for r in b.requests(mark)]
    assert first == [("HEAD", world.arm_layer.digest), ("GET", world.arm_layer.digest)]
    layer_facts = list((cli.state / "layers").rglob("*.json"))
    assert len(layer_facts) == 1
    assert json.loads(layer_facts[0].read_text())["diffID"] == world.arm_layer.diff_id
    # Another spec with the same layer, same state directory: nothing asked of registry b.
    cli.write_spec("two.yaml", spec.replace("TARGET", "two"))
    mark = b.mark()
    assert cli("diff").code == 2
    assert b.requests(mark) == []


def test_chunked_uploads_from_registry_options(world: World, cli: Cli) -> None:
    a = world.a
    config = cli.root / "settings.yaml"
    config.write_text(f"registries:\n  '{a.host}': {{chunk_size: 1048576}}\n")
    cli.write_spec(
        "chunks.yaml",
        f"""
      base: {a.host}/base/single:1
      layers:
        - ref: {world.b.host}/vendor/runtime@{world.vendor_layer.digest}
      targets: [{a.host}/team/chunked:1]
    """,
    )
    mark = a.mark()
    result = cli("apply", "--config", str(config))
    assert result.code == 0, result.stdout + result.stderr
    patches = [r for r in a.requests(mark) if r.method == "PATCH"]
    # The config (1 chunk) and the 293 KiB layer (1 chunk under 1 MiB): PATCH, then PUT.
    assert len(patches) == 2 and all(r.status == 202 for r in patches)
    manifest = json.loads(inspect_raw(f"{a.host}/team/chunked:1"))
    assert manifest["layers"][-1]["digest"] == world.vendor_layer.digest


def test_source_errors_name_the_spec_and_field(world: World, cli: Cli) -> None:
    a, b = world.a.host, world.b.host
    config_digest = json.loads(world.single.images[0].manifest)["config"]["digest"]
    missing = "sha256:" + "4" * 64
    cli.write_spec("no-base.yaml", f"base: {a}/base/absent:1\ntargets: [{a}/err/a:1]")
    cli.write_spec(
        "no-layer.yaml",
        f"base: {a}/base/single:1\nlayers:\n  - ref: {b}/vendor/runtime@{missing}\n"
        f"targets: [{a}/err/b:1]",
    )
    cli.write_spec(
        "not-a-layer.yaml",
        f"base: {a}/base/single:1\nlayers:\n  - ref: {a}/base/single@{config_digest}\n"
        f"targets: [{a}/err/c:1]",
    )
    cli.write_spec(
        "no-platform.yaml",
        f"base: {a}/base/multi:1\nplatforms: [linux/s390x]\ntargets: [{a}/err/d:1]",
    )
    cli.write_spec("fine.yaml", f"base: {a}/base/single:1\ntargets: [{a}/err/fine:1]")
    result = cli("diff", "-o", "json")
    assert result.code == 1
    specs = {s["name"]: s for s in result.json()["specs"]}  # type: ignore[attr-defined]
    assert specs["fine"]["state"] == "OutOfSync"
    assert (
        "spec.base: " in specs["no-base"]["error"]
        and "has no repository base/absent" in (specs["no-base"]["error"])
    )
    assert "no-layer.yaml:6: spec.layers[0]" in specs["no-layer"]["error"]
    assert f"blob {missing} not found in {b}/vendor/runtime" in specs["no-layer"]["error"]
    assert "not-a-layer.yaml:6: spec.layers[0]" in specs["not-a-layer"]["error"]
    assert "not a tar, tar+gzip or tar+zstd layer" in specs["not-a-layer"]["error"]
    assert "no-platform.yaml:5: spec.platforms" in specs["no-platform"]["error"]
    assert (
        "has no linux/s390x (it has linux/amd64, linux/arm64/v8)" in specs["no-platform"]["error"]
    )


def test_specs_declaring_a_layer_differently_each_get_complete_facts(
    world: World, cli: Cli
) -> None:
    a, b = world.a.host, world.b.host
    ref = f"{b}/vendor/runtime@{world.vendor_layer.digest}"
    cli.write_spec(
        "declared.yaml",
        f"""
      base: {a}/base/single:1
      layers:
        - ref: {ref}
          mediaType: application/vnd.oci.image.layer.v1.tar+gzip
          diffID: {world.vendor_layer.diff_id}
      targets: [{a}/facts/declared:1]
    """,
    )
    cli.write_spec(
        "sniffed.yaml",
        f"""
      base: {a}/base/single:1
      layers: [{{ref: {ref}}}]
      annotations: {{differs: "yes"}}
      targets: [{a}/facts/sniffed:1]
    """,
    )
    result = cli("diff", "-o", "json")
    assert result.code == 2, result.stdout + result.stderr
    assert {s["state"] for s in result.json()["specs"]} == {"OutOfSync"}  # type: ignore[attr-defined]


def test_decompression_is_bounded_by_max_uncompressed(
    world: World, cli: Cli, tmp_path: Path
) -> None:
    """A layer that inflates past `max_uncompressed` fails its spec with a clear error."""
    bomb = make_layer({"zeros": bytes(3 * 1024 * 1024)})  # 3 MiB of tar, a few KiB of gzip
    push_blob_only(tmp_path / "bomb", world.b.host, "vendor/bomb", bomb)
    cli.write_spec(
        "bomb.yaml",
        f"""
        base: {world.a.host}/base/single:1
        layers: [{{ref: {world.b.host}/vendor/bomb@{bomb.digest}}}]
        targets: [{world.a.host}/team/bomb:1]
        """,
    )
    result = cli("diff", env_extra={"RECONCILER_MAX_UNCOMPRESSED": str(1024 * 1024)})
    assert result.code == 1
    assert "decompresses to more than 1048576 bytes (setting max_uncompressed)" in result.stdout
    assert "bomb.yaml:5: spec.layers[0]" in result.stdout
    assert len(bomb.blob) < 64 * 1024
    assert cli("diff").code == 2  # under the default bound, the same layer is fine
