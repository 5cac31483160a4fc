"""What a command loads before it works: start-up is paid by every run (docs/performance.md).

Real `python -m reconciler` processes against the session's registries; each reports, as it
exits, the modules it had imported. No timings here (speed is measured in bench/): these are
the structural facts the start-up figures rest on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import Cli, World

# Runs the CLI exactly as `python -m reconciler ARGS` does, then lists at exit sys.modules,
# the pydantic models of reconciler that were built (a model is built on first use), and
# whether pydantic looked for plugins.
_REPORT_MODULES = """
import atexit, json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
def report():
    built = []
    if "pydantic" in sys.modules:
        from pydantic import BaseModel
        todo = list(BaseModel.__subclasses__())
        while todo:
            model = todo.pop()
            todo.extend(model.__subclasses__())
            if model.__module__.startswith("reconciler.") and model.__pydantic_complete__:
                built.append(f"{model.__module__}.{model.__qualname__}")
    loader = sys.modules.get("pydantic.plugin._loader")
    scanned = loader is not None and loader._plugins is not None
    facts = {"modules": sorted(sys.modules), "built": sorted(built), "scanned": scanned}
    open(out, "w").write(json.dumps(facts))
atexit.register(report)
sys.argv = ["reconciler", *args]
runpy.run_module("reconciler", run_name="__main__", alter_sys=True)
"""


def facts_of(cli: Cli, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    report = cli.root / "facts.json"
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, str(report), *args],
        capture_output=True,
        text=True,
        env={**cli.env(), **env},
        timeout=120,
        check=False,
    )
    return result.returncode, json.loads(report.read_text()), result.stderr


def loaded_by(cli: Cli, *args: str) -> tuple[int, set[str], str]:
    code, facts, stderr = facts_of(cli, *args)
    return code, set(facts["modules"]), stderr


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_validate_loads_neither_httpx_nor_the_engine(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    code, modules, stderr = loaded_by(cli, "validate")
    assert code == 0 and "1 valid spec in 1 file; 0 errors" in stderr, stderr
    assert "reconciler.spec" in modules and "reconciler.settings" in modules
    assert not packages(modules) & {"httpx", "httpcore", "anyio", "h2", "rich"}
    assert not {"reconciler.engine", "reconciler.resolve", "reconciler.store.open"} & modules


def test_diff_loads_no_httpcore_no_rich_and_no_httpx_command_line(cli: Cli, world: World) -> None:
    a = world.a.host
    cli.write_spec("app.yaml", f"base: {a}/base/single:1\ntargets: [{a}/startup/app:1]")
    assert cli("apply").code == 0
    code, modules, stderr = loaded_by(cli, "diff")
    assert code == 0, stderr  # in sync: it did talk to the registry over httpx
    assert {"httpx", "reconciler.store.registry.http1", "reconciler.engine"} <= modules
    assert not packages(modules) & {"h2", "hpack", "rich", "pygments", "packaging"}
    # Requests go through http1.py: httpcore, h11 and anyio are not even imported.
    assert not packages(modules) & {"httpcore", "h11", "anyio", "sniffio"}
    assert "certifi" not in modules  # a plain-HTTP registry builds no TLS context
    assert "httpx._main" not in modules
    assert "reconciler.trust.verify" not in modules  # no trust policy: no signature checks
    # A registry-only diff: no local store, no archive reader, no executor.
    assert not {"reconciler.execute", "reconciler.store.layout", "reconciler.archive"} & modules
    assert "reconciler.store.dockerarchive" not in modules


def test_h2_stays_importable_for_the_daemon_server() -> None:
    """The registry store does not load h2 (nor httpcore); hypercorn must still get it."""
    code = (
        "import sys, reconciler.store.registry.http\n"
        "assert 'h2' not in sys.modules and 'httpx._main' not in sys.modules\n"
        "import h2.connection, hypercorn.protocol.h2\n"
        "print(h2.connection.H2Connection.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout == "H2Connection\n", result.stderr


def test_validate_of_an_empty_directory_reads_no_yaml_and_builds_only_settings(cli: Cli) -> None:
    """No spec file, no settings file: PyYAML is not imported, and the spec, lock and wire
    (manifest, index, config, platform) models are not built: they are built on first use."""
    code, facts, stderr = facts_of(cli, "validate", "--allow-empty")
    assert code == 0 and "0 valid specs in 0 files; 0 errors" in stderr, stderr
    modules = set(facts["modules"])
    assert "reconciler.spec" in modules and "reconciler.trust.policy" in modules
    assert not packages(modules) & {"yaml", "packaging", "httpx", "asyncio", "rich"}
    assert "reconciler.yamlsource" not in modules
    assert "reconciler.settings.Settings" in facts["built"]
    deferred = ("reconciler.spec.", "reconciler.oci.", "reconciler.lockfile.")
    assert not [model for model in facts["built"] if model.startswith(deferred)]


def test_a_spec_builds_its_models_and_loads_packaging_only_for_a_version_range(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    code, facts, stderr = facts_of(cli, "validate")
    assert code == 0 and "1 valid spec in 1 file; 0 errors" in stderr, stderr
    modules = set(facts["modules"])
    assert "yaml" in modules and "packaging" not in packages(modules)
    assert "reconciler.spec.ImageSpecDocument" in facts["built"]
    assert not [m for m in facts["built"] if m.startswith(("reconciler.oci.", "reconciler.lockf"))]
    cli.write_spec(
        "fan.yaml",
        "base: r.io/base\nbaseTags: {semver: '>=1,<2'}\ntargets: ['r.io/fan:{tag}']",
    )
    code, facts, stderr = facts_of(cli, "validate")
    assert code == 0 and "2 valid specs in 2 files; 0 errors" in stderr, stderr
    assert "packaging.specifiers" in facts["modules"]


def test_pydantic_plugins_are_not_looked_for_unless_the_environment_says(cli: Cli) -> None:
    """The CLI sets PYDANTIC_DISABLE_PLUGINS unless it is set: no scan of every installed
    distribution's entry points at start. A value already in the environment wins."""
    code, facts, stderr = facts_of(cli, "validate", "--allow-empty")
    assert code == 0 and not facts["scanned"], stderr
    code, facts, stderr = facts_of(cli, "validate", "--allow-empty", PYDANTIC_DISABLE_PLUGINS="")
    assert code == 0 and facts["scanned"], stderr
