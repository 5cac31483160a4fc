"""What a command loads before it works: start-up is paid by every run (docs/performance.md).

Real `python -m reconciler` processes against the session's registries; each reports, as it
exits, the modules it had imported. No timings here (speed is measured in bench/): these are
the structural facts the start-up figures rest on.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import Cli, World

# Runs the CLI exactly as `python -m reconciler ARGS` does, then lists sys.modules at exit.
_REPORT_MODULES = """
import atexit, json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["reconciler", *args]
runpy.run_module("reconciler", run_name="__main__", alter_sys=True)
"""


def loaded_by(cli: Cli, *args: str) -> tuple[int, set[str], str]:
    report = cli.root / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, str(report), *args],
        capture_output=True,
        text=True,
        env=cli.env(),
        timeout=120,
        check=False,
    )
    return result.returncode, set(json.loads(report.read_text())), result.stderr


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_validate_loads_neither_httpx_nor_the_engine(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    code, modules, stderr = loaded_by(cli, "validate")
    assert code == 0 and "1 valid specs in 1 files; 0 errors" in stderr, stderr
    assert "reconciler.spec" in modules and "reconciler.settings" in modules
    assert not packages(modules) & {"httpx", "httpcore", "anyio", "h2", "rich"}
    assert not {"reconciler.engine", "reconciler.resolve", "reconciler.store.open"} & modules


def test_diff_loads_no_http2_no_rich_and_no_httpx_command_line(cli: Cli, world: World) -> None:
    a = world.a.host
    cli.write_spec("app.yaml", f"base: {a}/base/single:1\ntargets: [{a}/startup/app:1]")
    assert cli("apply").code == 0
    code, modules, stderr = loaded_by(cli, "diff")
    assert code == 0, stderr  # in sync: it did talk to the registry over httpx
    assert {"httpx", "httpcore", "reconciler.engine"} <= modules
    assert not packages(modules) & {"h2", "hpack", "rich", "pygments"}
    assert "httpx._main" not in modules


def test_h2_stays_importable_for_the_daemon_server() -> None:
    """The registry store keeps httpcore from loading h2; hypercorn must still get it."""
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
