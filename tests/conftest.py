"""Fixtures: two real registries for the whole session, seeded offline, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.images import (
    Image,
    Layer,
    Layout,
    make_layer,
    push_blob_only,
    push_layout,
    write_layout,
)
from tests.support.registry import Registry, start_registry


@pytest.fixture(scope="session")
def registry_a() -> Iterator[Registry]:
    registry = start_registry()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def registry_b() -> Iterator[Registry]:
    registry = start_registry()
    yield registry
    registry.stop()


@dataclass
class World:
    """What the session's registries hold before any test runs."""

    a: Registry
    b: Registry
    multi: Layout  # a/base/multi:1 - linux/amd64 + linux/arm64/v8 index (OCI)
    single: Layout  # a/base/single:1 - one linux/amd64 manifest (OCI)
    docker_multi: Layout  # a/base/docker:1 - pushed as a Docker manifest list (converted)
    vendor_layer: Layer  # lives only in b/vendor/runtime
    tools_layer: Layer  # lives in a/tools/extra (same registry as targets)
    arm_layer: Layer  # lives in b/vendor/armtools, added to arm64 only


@pytest.fixture(scope="session")
def world(
    registry_a: Registry, registry_b: Registry, tmp_path_factory: pytest.TempPathFactory
) -> World:
    root = tmp_path_factory.mktemp("world")
    base_shared = make_layer({"etc/os-release": b"ID=testos\n", "bin/sh": b"#!fake shell\n"})
    amd = Image("linux", "amd64", [base_shared, make_layer({"lib/amd64.so": b"amd" * 1000})])
    arm = Image(
        "linux", "arm64", [base_shared, make_layer({"lib/arm64.so": b"arm" * 1000})], variant="v8"
    )
    multi = write_layout(root / "multi", [amd, arm])
    push_layout(multi, f"{registry_a.host}/base/multi:1")

    single = write_layout(root / "single", [Image("linux", "amd64", [base_shared])], index=False)
    push_layout(single, f"{registry_a.host}/base/single:1")

    d_amd = Image("linux", "amd64", [base_shared])
    d_arm = Image("linux", "arm64", [base_shared], variant="v8")
    docker_multi = write_layout(root / "docker", [d_amd, d_arm])
    push_layout(docker_multi, f"{registry_a.host}/base/docker:1", docker=True)

    vendor = make_layer({"opt/vendor/runtime.bin": os.urandom(300_000)})
    push_blob_only(root / "vendor", registry_b.host, "vendor/runtime", vendor)
    tools = make_layer({"usr/local/bin/tool": b"#!tool\n" * 100})
    push_blob_only(root / "tools", registry_a.host, "tools/extra", tools)
    arm_only = make_layer({"opt/arm/extra": b"arm-only\n"})
    push_blob_only(root / "armtools", registry_b.host, "vendor/armtools", arm_only)
    return World(registry_a, registry_b, multi, single, docker_multi, vendor, tools, arm_only)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value


class Cli:
    """Runs `python -m reconciler` as a real process with an isolated state and docker config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs = root / "specs"
        self.specs.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.docker_config = root / "docker-config"
        self.docker_config.mkdir(exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.specs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def write_spec(self, name: str, body: str, spec_name: str | None = None) -> Path:
        """Write one ImageSpec document whose `spec:` section is `body`."""
        metadata = f"metadata:\n  name: {spec_name}\n" if spec_name else ""
        spec = textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
        return self.write(
            name,
            f"apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n{metadata}spec:\n{spec}\n",
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env.update(
            RECONCILER_STATE_DIR=str(self.state),
            RECONCILER_SPECS_DIR=str(self.specs),
            DOCKER_CONFIG=str(self.docker_config),
            # Real retries, short waits: the policy is the same, the suite stays fast.
            RECONCILER_RETRY_DELAY="0.02",
        )
        env.pop("REGISTRY_AUTH_FILE", None)
        return env

    def __call__(
        self, *args: str, timeout: float = 120, env_extra: dict[str, str] | None = None
    ) -> CliResult:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            capture_output=True,
            text=True,
            env={**self.env(), **(env_extra or {})},
            timeout=timeout,
            check=False,
        )
        return CliResult(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)
