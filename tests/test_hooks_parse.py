"""Webhook payloads, parsed: one example per sender, written from its public documentation, and
the bodies that must be refused; then which specs a push concerns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.daemon.guard import HookAuth
from reconciler.daemon.hooks import HookError, Push, parse_registry_hook, specs_wanting
from reconciler.oci.digest import Digest
from reconciler.spec import ImageSpecBody, LoadedSpec
from reconciler.yamlsource import YamlDocument

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def pushed(**target: str) -> bytes:
    """A distribution envelope of one push event with this target."""
    return body({"events": [{"action": "push", "target": target}]})


DISTRIBUTION = {
    "events": [
        {  # a layer: not a manifest, left out
            "id": "e1",
            "timestamp": "2026-12-01T12:00:00Z",
            "action": "push",
            "target": {
                "mediaType": "application/octet-stream",
                "digest": D2,
                "repository": "team/base",
                "url": f"http://reg.example:5000/v2/team/base/blobs/{D2}",
            },
            "request": {"id": "r1", "host": "reg.example:5000", "method": "PUT"},
        },
        {
            "id": "e2",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 400,
                "digest": D1,
                "length": 400,
                "repository": "team/base",
                "url": f"http://reg.example:5000/v2/team/base/manifests/{D1}",
                "tag": "1.2",
            },
            "request": {"id": "r2", "addr": "10.0.0.1:4000", "host": "reg.example:5000"},
            "actor": {},
            "source": {"addr": "reg:5000", "instanceID": "i"},
        },
        {  # a pull: left out
            "action": "pull",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": D1,
                "repository": "team/base",
                "tag": "1.2",
                "url": f"http://reg.example:5000/v2/team/base/manifests/{D1}",
            },
            "request": {"host": "reg.example:5000"},
        },
        {  # by digest only, no request host: the host from the URL
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": D2,
                "repository": "team/base",
                "url": f"https://mirror.example/v2/team/base/manifests/{D2}",
            },
        },
    ]
}

HARBOR = {
    "type": "PUSH_ARTIFACT",
    "occur_at": 1796126400,
    "operator": "admin",
    "event_data": {
        "resources": [
            {"digest": D1, "tag": "v1", "resource_url": "harbor.example.com/library/nginx:v1"}
        ],
        "repository": {
            "date_created": 1796120000,
            "name": "nginx",
            "namespace": "library",
            "repo_full_name": "library/nginx",
            "repo_type": "private",
        },
    },
}

DOCKER_HUB = {
    "callback_url": "https://registry.hub.docker.com/u/team/app/hook/abc/",
    "push_data": {"pushed_at": 1796126400, "pusher": "someone", "tag": "latest"},
    "repository": {
        "name": "app",
        "namespace": "team",
        "owner": "team",
        "repo_name": "team/app",
        "repo_url": "https://hub.docker.com/r/team/app",
        "status": "Active",
    },
}

GITHUB = {
    "action": "published",
    "package": {
        "id": 1,
        "name": "Tool",
        "namespace": "Octo-Org",
        "ecosystem": "CONTAINER",
        "package_type": "CONTAINER",
        "html_url": "https://github.com/orgs/Octo-Org/packages/container/package/Tool",
        "package_version": {
            "id": 2,
            "version": D1,
            "name": D1,
            "container_metadata": {
                "tag": {"name": "2.0", "digest": D1},
                "labels": {},
                "manifest": {},
            },
        },
        "registry": {
            "name": "GitHub CONTAINER registry",
            "type": "CONTAINER",
            "url": "https://ghcr.io",
        },
    },
    "repository": {"full_name": "Octo-Org/tool"},
    "sender": {"login": "octocat"},
}

QUAY = {
    "name": "repository",
    "repository": "team/base",
    "namespace": "team",
    "docker_url": "quay.io/team/base",
    "homepage": "https://quay.io/repository/team/base",
    "updated_tags": ["latest", "1.0"],
}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            DISTRIBUTION,
            [
                Push("reg.example:5000", "team/base", "1.2", Digest.parse(D1)),
                Push("mirror.example", "team/base", None, Digest.parse(D2)),
            ],
            id="distribution",
        ),
        pytest.param(
            HARBOR,
            [Push("harbor.example.com", "library/nginx", "v1", Digest.parse(D1))],
            id="harbor",
        ),
        pytest.param(DOCKER_HUB, [Push("docker.io", "team/app", "latest")], id="docker-hub"),
        pytest.param(
            GITHUB, [Push("ghcr.io", "octo-org/tool", "2.0", Digest.parse(D1))], id="ghcr"
        ),
        pytest.param(
            {"action": "published", "registry_package": GITHUB["package"]},
            [Push("ghcr.io", "octo-org/tool", "2.0", Digest.parse(D1))],
            id="ghcr-registry-package",
        ),
        pytest.param(
            QUAY,
            [Push("quay.io", "team/base", "latest"), Push("quay.io", "team/base", "1.0")],
            id="quay",
        ),
        pytest.param(
            QUAY | {"updated_tags": {"latest": "b750fe79269d"}},
            [Push("quay.io", "team/base", "latest")],
            id="quay-old-mapping",
        ),
        # Known senders, events of no interest: no push, and no error (a registry retries
        # what is not answered 2xx).
        pytest.param(HARBOR | {"type": "PULL_ARTIFACT"}, [], id="harbor-pull"),
        pytest.param(
            {"package": GITHUB["package"] | {"package_type": "npm", "ecosystem": "npm"}},  # type: ignore[operator]
            [],
            id="github-npm",
        ),
        pytest.param({"zen": "Keep it simple.", "hook_id": 1, "hook": {}}, [], id="github-ping"),
        pytest.param({"events": []}, [], id="distribution-empty"),
    ],
)
def test_payloads_parse(payload: dict[str, Any], expected: list[Push]) -> None:
    assert list(parse_registry_hook(body(payload))) == expected


@pytest.mark.parametrize(
    ("host", "repository", "expected"),
    [
        ("index.docker.io", "nginx", Push("docker.io", "library/nginx", "1")),
        ("registry-1.docker.io", "library/nginx", Push("docker.io", "library/nginx", "1")),
        ("Docker.IO", "team/app", Push("docker.io", "team/app", "1")),
    ],
)
def test_docker_hub_hosts_are_one(host: str, repository: str, expected: Push) -> None:
    envelope = {
        "events": [
            {
                "action": "push",
                "target": {
                    "repository": repository,
                    "tag": "1",
                    "url": f"https://{host}/v2/{repository}/manifests/1",
                },
                "request": {"host": host},
            }
        ]
    }
    assert parse_registry_hook(body(envelope)) == (expected,)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (body({"hello": "world"}), "not a webhook payload we know (top-level keys: hello)"),
        (body({"events": [{"action": "push"}]}), "events.0.target: field required"),
        (body({"events": "x"}), "distribution registry notification"),
        (pushed(repository="a/b", tag="1"), "neither request.host nor target.url"),
        (
            pushed(repository="a/../x", tag="1", url="http://r.example/v2/x/manifests/1"),
            "events.0.target: invalid reference",
        ),
        (
            body(HARBOR | {"event_data": {"resources": [{"resource_url": "nohost"}]}}),
            "names no host/repository",
        ),
        (body(DOCKER_HUB | {"repository": {}}), "a Docker Hub payload, but repository.repo_name"),
        (body(QUAY | {"docker_url": "quay.io"}), "docker_url 'quay.io' names no host/repository"),
        (
            body(DOCKER_HUB | {"push_data": {"tag": "bad tag!"}}),
            "invalid tag 'bad tag!'",
        ),
        (
            pushed(repository="a/b", digest="md5:x", url="http://r.example/v2/a/b/manifests/x"),
            "unsupported digest algorithm",
        ),
    ],
)
def test_bad_bodies_are_refused_naming_why(raw: bytes, message: str) -> None:
    with pytest.raises(HookError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_registry_hook(raw)


# -- which specs a push concerns -------------------------------------------------------------


def spec(name: str, **body: Any) -> LoadedSpec:
    tag = "{tag}" if "baseTags" in body else "1"
    model = ImageSpecBody.model_validate({"targets": [f"t.example/out/{name}:{tag}"], **body})
    return LoadedSpec(name, f"/specs/{name}.yaml", 1, model, YamlDocument("x", 0, 1, {}, {}))


LAYER = {"registry": "r.example", "repository": "team/tools", "digest": D2}
SPECS = [
    spec("by-tag", base="r.example/team/base:1"),
    spec("other-tag", base="r.example/team/base:2"),
    spec("by-digest", base=f"r.example/team/base@{D1}"),
    spec("fan-out", base="r.example/team/base", baseTags={"semver": ">=3"}),
    spec("hub", base="nginx:1.27"),
    spec("layered", base="scratch", layers=[LAYER]),
]


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        (Push("r.example", "team/base", "1"), ["by-tag"]),
        (Push("r.example", "team/base", "3.1", Digest.parse(D2)), ["fan-out"]),
        (Push("r.example", "team/base", "latest"), []),  # the fan-out's range leaves it out
        (Push("r.example", "team/base", "9", Digest.parse(D1)), ["by-digest", "fan-out"]),
        (
            Push("r.example", "team/base", None, Digest.parse(D2)),
            ["by-tag", "other-tag", "by-digest", "fan-out"],
        ),
        (Push("docker.io", "library/nginx", "1.27"), ["hub"]),
        (Push("r.example", "team/tools", None, Digest.parse(D1)), ["layered"]),
        (Push("r.example", "team/tools", "1"), []),  # a layer is a blob: a tag changes nothing
        (Push("other.example", "team/base", "1"), []),
        (Push("r.example", "team/unrelated", None), []),
    ],
)
def test_a_push_concerns_the_specs_reading_its_repository(push: Push, expected: list[str]) -> None:
    assert specs_wanting(SPECS, [push]) == expected


def test_hub_pushes_match_specs_written_any_way() -> None:
    (push,) = parse_registry_hook(body(DOCKER_HUB | {"repository": {"repo_name": "nginx"}}))
    hub = spec("hub", base="docker.io/library/nginx:latest")
    assert specs_wanting([hub], [push]) == ["hub"]


# -- auth and rate ---------------------------------------------------------------------------


def test_auth_accepts_the_token_or_the_signature_and_nothing_else(tmp_path: Path) -> None:
    import hashlib
    import hmac

    auth = HookAuth(b"tok", b"key")
    payload = b'{"a": 1}'
    good = "sha256=" + hmac.new(b"key", payload, hashlib.sha256).hexdigest()
    assert auth.refusal({"authorization": "Bearer tok"}, payload) is None
    assert auth.refusal({"x-hub-signature-256": good}, payload) is None
    assert auth.refusal({"x-signature-256": good.upper().replace("SHA256=", "")}, payload) is None
    assert auth.refusal({}, payload) == "no credentials"
    assert auth.refusal({"authorization": "Bearer nope"}, payload) == "a wrong bearer token"
    assert auth.refusal({"authorization": "tok"}, payload) == "a wrong bearer token"
    assert (
        auth.refusal({"x-hub-signature-256": good}, payload + b" ")
        == "a signature that does not match the body"
    )
    assert not HookAuth().enabled and HookAuth(allow_unauthenticated=True).open
    assert HookAuth(b"tok", allow_unauthenticated=True).refusal({}, b"") == "no credentials"
