"""Exit codes as CI sees them (issue 22, points 1 and 2): the README's table is the code's,
a usage error is never a result code, global options go on either side of the command, and a
path with no spec in it is an error that says where the path came from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import cli as cli_module
from tests.conftest import Cli, CliResult

ROOT = Path(__file__).resolve().parent.parent


def without_specs_dir(cli: Cli, *args: str, cwd: Path | None = None) -> CliResult:
    """A run with no RECONCILER_SPECS_DIR, in the Cli's root: the file or the default counts."""
    env = cli.env()
    del env["RECONCILER_SPECS_DIR"]
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or cli.root,
        timeout=120,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def readme_table() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes\n\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines()[2:]]
    return {int(code.strip()): means.strip() for code, means, _ in rows}


def test_the_readme_table_is_the_codes_table() -> None:
    codes = {
        value
        for name, value in vars(cli_module).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert set(readme_table()) == codes == {0, 1, 2, 64}
    assert cli_module.EXIT_USAGE not in {cli_module.EXIT_CHANGES, cli_module.EXIT_ERROR}


@pytest.mark.parametrize(
    "args",
    [
        ["diff", "--outptu", "markdown"],
        ["apply", "--outptu", "json"],
        ["validate", "--nope"],
        ["lock", "--chekc"],
        ["dif"],
        ["diff", "-o", "yaml"],
        ["save"],
        [],
    ],
    ids=lambda a: " ".join(a) or "(nothing)",
)
def test_usage_errors_exit_64(cli: Cli, args: list[str]) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    result = cli(*args)
    assert result.code == 64, result
    assert "Traceback" not in result.stderr


def test_global_options_before_or_after_the_command(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    elsewhere = cli.root / "elsewhere"
    elsewhere.mkdir()
    settings = cli.root / "s.yaml"
    settings.write_text(f"specs_dir: {elsewhere}\n")
    before = without_specs_dir(cli, "--config", str(settings), "validate")
    after = without_specs_dir(cli, "validate", "--config", str(settings))
    for result in (before, after):  # the file was read both ways: its empty directory
        assert result.code == 1, result
        assert f"in {elsewhere} (specs_dir in the settings file)" in result.stderr
    for args in (["-v", "validate"], ["validate", "-v"]):
        assert cli(*args).code == 0


def test_no_spec_is_an_error_that_names_the_path_and_its_origin(cli: Cli) -> None:
    empty = cli.root / "empty"
    empty.mkdir()
    for command in (["validate"], ["diff"], ["apply"], ["lock", "--check"], ["lock"]):
        result = cli(*command, str(empty))
        assert result.code == 1, (command, result)
        assert f"no spec file (*.yaml, *.yml) in {empty} (given as an argument)" in result.stderr
        assert cli(*command, str(empty), "--allow-empty").code == 0, command
    from_env = cli("diff")  # the Cli's RECONCILER_SPECS_DIR: an empty directory
    assert from_env.code == 1 and "(from RECONCILER_SPECS_DIR)" in from_env.stderr
    # The default directory, missing: the same kind of message, not "(invalid) (specs)".
    bare = cli.root / "bare"  # no specs/ in it
    bare.mkdir()
    default = without_specs_dir(cli, "validate", cwd=bare)
    assert default.code == 1
    assert re.search(
        r"error: specs: no such file or directory \(the default specs_dir", default.stderr
    )
    assert "Invalid" not in default.stderr
    missing = cli("diff", str(cli.root / "nowhere"), "--allow-empty")
    assert missing.code == 1 and "nowhere: no such file or directory" in missing.stderr
