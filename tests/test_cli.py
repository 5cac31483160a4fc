from __future__ import annotations

import json

from tests.conftest import Cli


def test_schema_is_printed_on_stdout(cli: Cli) -> None:
    result = cli("schema")
    assert result.code == 0 and result.stderr == ""
    schema = json.loads(result.stdout)
    assert schema["title"].startswith("reconciler ImageSpec")


def test_validate_exit_codes(cli: Cli) -> None:
    cli.write(
        "ok.yaml",
        """
    apiVersion: reconciler.dev/v1alpha1
    kind: ImageSpec
    spec: {base: r.io/b:1, targets: [r.io/a:1]}
    """,
    )
    ok = cli("validate")
    assert ok.code == 0 and ok.stdout == "" and "1 valid specs in 1 files; 0 errors" in ok.stderr
    cli.write("bad.yaml", "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\nspec: {base: 1}\n")
    bad = cli("validate", str(cli.specs))
    assert bad.code == 1 and "bad.yaml:3: spec.base: Input should be a valid string" in bad.stderr


def test_bad_settings_exit_1(cli: Cli) -> None:
    config = cli.root / "settings.yaml"
    config.write_text("concurrency: 0\n")
    result = cli("validate", "--config", str(config))
    assert (
        result.code == 1 and "invalid settings" in result.stderr and "concurrency" in result.stderr
    )


def test_unreachable_registry_fails_that_spec_only(cli: Cli) -> None:
    cli.write(
        "down.yaml",
        """
    apiVersion: reconciler.dev/v1alpha1
    kind: ImageSpec
    spec: {base: 127.0.0.1:9/base:1, targets: [127.0.0.1:9/app:1]}
    """,
    )
    result = cli("diff")
    assert result.code == 1
    assert (
        "down (" in result.stdout and "Failed" in result.stdout and "ConnectError" in result.stdout
    )


def test_version_and_help(cli: Cli) -> None:
    assert cli("--version").stdout.startswith("reconciler ")
    assert "apply" in cli("--help").stdout
