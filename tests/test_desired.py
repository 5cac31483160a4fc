from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.errors import ResolveError
from reconciler.model.desired import BASE_DIGEST, BASE_NAME, build_desired
from reconciler.oci import mediatypes as mt
from reconciler.oci.document import IndexDocument, ManifestDocument, parse_document
from tests.factories import digest, make_base, make_image, make_layer, make_spec


def two_arch(fmt: mt.Format = mt.Format.OCI, annotations: dict[str, str] | None = None) -> Any:
    images = [
        make_image("amd64", [1, 2], fmt=fmt, annotations=annotations),
        make_image("arm64", [1, 3], variant="v8", fmt=fmt, annotations=annotations),
    ]
    return make_base(images, fmt=fmt)


def layer(n: int, **extra: Any) -> dict[str, Any]:
    return {"ref": f"l.io/vendor/runtime@{digest(n)}", **extra}


def manifest_of(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def config_of(desired: Any, i: int) -> dict[str, Any]:
    config_blob = desired.manifests[i].blobs[0]
    assert config_blob.role == "config"
    if config_blob.data is None:  # unchanged: the base's config
        return {}
    return manifest_of(config_blob.data)


def test_mirror_is_byte_for_byte() -> None:
    base = two_arch()
    desired = build_desired(make_spec(baseAnnotations=False), base, [])
    assert desired.mirror and desired.root.raw == base.root.raw
    assert [m.document.raw for m in desired.manifests] == [i.manifest.raw for i in base.images]
    single = make_base([make_image("amd64", [1])], index=False)
    assert build_desired(make_spec(baseAnnotations=False), single, []).root.raw == single.root.raw


def test_mirror_with_platform_filter_keeps_the_attestations_of_kept_images() -> None:
    amd, arm = make_image("amd64", [1]), make_image("arm64", [2], variant="v8")
    attestation = make_image("amd64", [9]).manifest

    def entry(target: Any) -> dict[str, Any]:
        return {
            "mediaType": mt.OCI_MANIFEST,
            "digest": str(attestation.digest),
            "size": len(attestation.raw),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": str(target.manifest.digest),
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }

    full = make_base([amd, arm], attachments=[(entry(arm), attestation)])
    mirrored = build_desired(make_spec(baseAnnotations=False), full, [])
    assert mirrored.root.raw == full.root.raw and len(mirrored.manifests) == 3

    only_amd = make_base([amd], attachments=[(entry(arm), attestation)], filtered=True)
    desired = build_desired(make_spec(baseAnnotations=False), only_amd, [])
    index = manifest_of(desired.root.raw)
    assert [m["digest"] for m in index["manifests"]] == [str(amd.manifest.digest)]
    kept = make_base([arm], attachments=[(entry(arm), attestation)], filtered=True)
    index = manifest_of(build_desired(make_spec(baseAnnotations=False), kept, []).root.raw)
    assert [m["digest"] for m in index["manifests"]] == [
        str(arm.manifest.digest),
        str(attestation.digest),
    ]


def test_added_layers_append_diff_ids_history_and_descriptors() -> None:
    spec = make_spec(
        layers=[layer(7, comment="runtime"), layer(8, platforms=["linux/arm64"])],
        created="2024-05-01T00:00:00Z",
    )
    base = two_arch()
    desired = build_desired(spec, base, [make_layer(70, spec, 0), make_layer(80, spec, 1)])
    assert isinstance(desired.root, IndexDocument)
    amd, arm = (manifest_of(m.document.raw) for m in desired.manifests)
    assert [x["digest"] for x in amd["layers"]] == [digest(1), digest(2), digest(7)]
    assert [x["digest"] for x in arm["layers"]] == [digest(1), digest(3), digest(7), digest(8)]
    assert arm["layers"][3] == {"mediaType": mt.OCI_LAYER_GZIP, "digest": digest(8), "size": 80}
    config = config_of(desired, 1)
    assert config["rootfs"]["diff_ids"] == [digest(1001), digest(1003), digest(5070), digest(5080)]
    assert [h["created_by"] for h in config["history"]] == [
        "base 1",
        "base 3",
        "runtime",
        f"layer {digest(8)}",
    ]
    assert config["created"] == "2024-05-01T00:00:00Z"
    assert config["history"][2]["created"] == "2024-05-01T00:00:00Z"
    assert config["variant"] == "v8"
    # Sources: base layers come from the base repository, added ones from theirs.
    sources = {str(b.digest): str(b.source) for b in desired.manifests[1].blobs}
    assert sources[digest(1)] == "r.io/library/base" and sources[digest(8)] == "l.io/vendor/runtime"


def test_history_is_synthesized_when_the_base_has_none() -> None:
    spec = make_spec(layers=[layer(7)])
    base = make_base([make_image("amd64", [1, 2], history=False)], index=False)
    desired = build_desired(spec, base, [make_layer(70, spec)])
    history = config_of(desired, 0)["history"]
    assert len(history) == 3 and history[0]["created_by"] == "(base layer)"


def test_base_annotations_name_each_platform_and_the_index() -> None:
    spec = make_spec(annotations={"org.opencontainers.image.source": "https://git/x"})
    base = two_arch(annotations={BASE_NAME: "grandparent", "inherited": "yes"})
    desired = build_desired(spec, base, [])
    index = manifest_of(desired.root.raw)
    assert index["annotations"] == {
        BASE_NAME: "r.io/library/base:1",
        BASE_DIGEST: str(base.root.digest),
        "org.opencontainers.image.source": "https://git/x",
    }
    for manifest, image in zip(desired.manifests, base.images, strict=True):
        annotations = manifest_of(manifest.document.raw)["annotations"]
        assert annotations[BASE_DIGEST] == str(image.manifest.digest)
        assert annotations[BASE_NAME] == "r.io/library/base:1"
        assert annotations["inherited"] == "yes"
        # Only annotations changed: the config is the base's, not regenerated.
        assert manifest.blobs[0].data is None and manifest.blobs[0].source is not None


def test_docker_hub_base_name_is_fully_qualified() -> None:
    spec = make_spec(base="python:3.12-slim")
    base = make_base([make_image("amd64", [1])], index=False, reference=spec.body.base)
    desired = build_desired(spec, base, [])
    assert (
        manifest_of(desired.root.raw)["annotations"][BASE_NAME]
        == "docker.io/library/python:3.12-slim"
    )


def test_a_platform_with_nothing_to_change_keeps_its_bytes() -> None:
    spec = make_spec(baseAnnotations=False, layers=[layer(8, platforms=["linux/arm64"])])
    base = two_arch()
    desired = build_desired(spec, base, [make_layer(80, spec)])
    assert desired.manifests[0].document.raw == base.images[0].manifest.raw
    assert desired.manifests[1].document.raw != base.images[1].manifest.raw


@pytest.mark.parametrize(
    ("config", "check"),
    [
        (
            {"env": {"LANG": "C", "NEW": "1"}},
            lambda c: c["Env"] == ["PATH=/bin", "LANG=C", "NEW=1"],
        ),
        ({"entrypoint": ["/app"]}, lambda c: c["Entrypoint"] == ["/app"] and "Cmd" not in c),
        (
            {"entrypoint": ["/app"], "cmd": ["--serve"]},
            lambda c: c["Entrypoint"] == ["/app"] and c["Cmd"] == ["--serve"],
        ),
        ({"cmd": []}, lambda c: c["Cmd"] == []),
        (
            {"exposedPorts": ["8080", "53/udp"]},
            lambda c: c["ExposedPorts"] == {"22/tcp": {}, "8080/tcp": {}, "53/udp": {}},
        ),
        (
            {"labels": {"team": "web", "base": "overridden"}},
            lambda c: c["Labels"] == {"base": "overridden", "team": "web"},
        ),
        (
            {"workingDir": "/srv", "user": "1000:1000"},
            lambda c: c["WorkingDir"] == "/srv" and c["User"] == "1000:1000",
        ),
    ],
)
def test_config_merge(config: dict[str, Any], check: Any) -> None:
    spec = make_spec(config=config)
    desired = build_desired(spec, make_base([make_image("amd64", [1])], index=False), [])
    merged = config_of(desired, 0)
    assert check(merged["config"]), merged["config"]
    assert merged["rootfs"]["diff_ids"] == [digest(1001)]  # untouched


def test_docker_format_and_conversion() -> None:
    spec = make_spec(format="docker", layers=[layer(7)])
    desired = build_desired(spec, two_arch(), [make_layer(70, spec)])
    assert desired.root.media_type == mt.DOCKER_MANIFEST_LIST
    manifest = manifest_of(desired.manifests[0].document.raw)
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert {x["mediaType"] for x in manifest["layers"]} == {mt.DOCKER_LAYER_GZIP}

    over_docker = make_spec(annotations={"a": "b"})
    converted = build_desired(over_docker, two_arch(fmt=mt.Format.DOCKER), [])
    assert converted.root.media_type == mt.OCI_INDEX
    assert {x["mediaType"] for x in manifest_of(converted.manifests[0].document.raw)["layers"]} == {
        mt.OCI_LAYER_GZIP
    }
    # A Docker base mirrored with format: oci is converted, not mirrored.
    forced = build_desired(
        make_spec(baseAnnotations=False, format="oci"), two_arch(fmt=mt.Format.DOCKER), []
    )
    assert not forced.mirror and forced.root.media_type == mt.OCI_INDEX


def test_zstd_layers_have_no_docker_form() -> None:
    spec = make_spec(format="docker", layers=[layer(7)])
    with pytest.raises(ResolveError, match="zstd"):
        build_desired(spec, two_arch(), [make_layer(70, spec, compression=mt.Compression.ZSTD)])


def test_scratch() -> None:
    one = make_spec(base="scratch", layers=[layer(7)], config={"entrypoint": ["/app"]})
    desired = build_desired(one, None, [make_layer(70, one)])
    assert isinstance(desired.root, ManifestDocument)
    config = config_of(desired, 0)
    assert config["architecture"] == "amd64" and config["created"] == "1970-01-01T00:00:00Z"
    assert config["rootfs"]["diff_ids"] == [digest(5070)] and config["config"] == {
        "Entrypoint": ["/app"]
    }
    two = make_spec(base="scratch", layers=[layer(7)], platforms=["linux/amd64", "linux/arm64/v8"])
    index = build_desired(two, None, [make_layer(70, two)])
    assert isinstance(index.root, IndexDocument)
    platforms = [m["platform"] for m in manifest_of(index.root.raw)["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]


def test_same_inputs_same_bytes_and_everything_parses_back() -> None:
    spec = make_spec(
        layers=[layer(7)], annotations={"z": "1", "a": "2"}, config={"env": {"X": "1"}}
    )
    first = build_desired(spec, two_arch(), [make_layer(70, spec)])
    second = build_desired(spec, two_arch(), [make_layer(70, spec)])
    assert first.root.raw == second.root.raw
    parsed = parse_document(first.root.raw, first.root.media_type, first.root.digest)
    assert isinstance(parsed, IndexDocument)
    for entry, manifest in zip(parsed.index.manifests, first.manifests, strict=True):
        assert entry.digest == manifest.document.digest and entry.size == len(manifest.document.raw)
        config = manifest.blobs[0]
        assert config.data is not None and config.descriptor.size == len(config.data)
