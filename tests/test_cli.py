from __future__ import annotations

import itertools
import json
import re
import socket
import time

from tests.conftest import Cli, World


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
    assert ok.code == 0 and ok.stdout == "" and "1 valid spec in 1 file; 0 errors" in ok.stderr
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


COMMANDS = ["validate", "diff", "apply", "lock", "run", "save", "schema", "config", "config check"]


def test_every_help_reads_whole(cli: Cli) -> None:
    """Before: `save --help` ended in a traceback (rich read "[/variant]" as markup), every flag
    showed `<bool>` and the paths `<list[Path]>`."""
    for command in ["", *COMMANDS]:
        result = cli(*command.split(), "--help", env_extra={"COLUMNS": "100"})
        assert result.code == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr == "", command
        assert "<bool>" not in result.stdout and "<list" not in result.stdout, result.stdout
        assert "Show this message and exit." in result.stdout, command
        assert not re.search(r"\b1 \w+s\b", result.stdout), result.stdout
    save = cli("save", "--help", env_extra={"COLUMNS": "100"}).stdout
    assert "os/arch/variant" in save and "NAME:TAG" in save
    assert "--no-uncompressed-layers" not in save
    # At 80 columns a sentence runs on: a line is only broken where the next word would not fit.
    narrow = cli("--help", env_extra={"COLUMNS": "80"}).stdout.splitlines()
    rows = [line[2:-2].rstrip() for line in narrow if line.startswith("│ ")]
    for row, after in itertools.pairwise(rows):
        if after.startswith(" " * 10) and after.strip():  # the same command's help, wrapped
            assert len(row) + 1 + len(after.split()[0]) > 76, (row, after)


def closed_port() -> int:
    """A loopback port where nothing listens: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_host_that_refuses_the_first_connection_fails_its_spec_fast(
    cli: Cli, world: World
) -> None:
    down = f"127.0.0.1:{closed_port()}"
    cli.write_spec("down.yaml", f"base: {down}/base:1\ntargets: [{down}/app:1]")
    cli.write_spec(
        "good.yaml", f"base: {world.a.host}/base/single:1\ntargets: [{world.a.host}/fast/good:1]"
    )
    started = time.monotonic()
    # Waits of a second and up between retries: backing off would take far longer than 2 s.
    result = cli("diff", env_extra={"RECONCILER_RETRY_DELAY": "1"})
    elapsed = time.monotonic() - started
    assert result.code == 1, result.stdout + result.stderr
    assert elapsed < 2, (elapsed, result.stderr)
    assert f"down ({cli.specs}/down.yaml): Failed" in result.stdout
    assert f"ConnectError: {down} refused the connection (HEAD http://{down}/v2/" in result.stdout
    assert "good (" in result.stdout and "): OutOfSync" in result.stdout
    assert "; retry 1 in 0.20s" in result.stderr and "retry 2" not in result.stderr


def test_apply_logs_a_line_per_spec_and_with_v_a_line_per_tag(cli: Cli, world: World) -> None:
    a = world.a.host
    body = f"base: {a}/base/single:1\ntargets: [{a}/logs/web:1, {a}/logs/web:2]"
    cli.write_spec("web.yaml", body)
    first = cli("apply")
    assert first.code == 0, first.stderr
    assert first.stderr.splitlines() == [
        "INFO reconciler.engine: [web] web: applied: 2 tags created, 2 blobs mounted, "
        "1 manifest pushed"
    ]  # and no "tagged" line: one per tag is DEBUG
    again = cli("apply")
    assert again.code == 0 and again.stderr == "INFO reconciler.engine: [web] web: in sync\n"

    cli.write_spec("web.yaml", body + "\nconfig: {labels: {team: web}}")
    moved = cli("-v", "apply")
    assert moved.code == 0, moved.stderr
    assert re.search(
        r"^INFO reconciler.engine: \[web\] web: applied: 2 tags moved, "
        # The layer is there already: mounted, with no HEAD first (one request either way).
        r"1 blob \([0-9]+ B\) pushed, 1 blob mounted, 1 manifest pushed$",
        moved.stderr,
        re.MULTILINE,
    ), moved.stderr
    tagged = [line for line in moved.stderr.splitlines() if " tagged " in line]
    assert [line.split(" -> ")[0] for line in tagged] == [
        f"DEBUG reconciler.execute: [web] tagged {a}/logs/web:1",
        f"DEBUG reconciler.execute: [web] tagged {a}/logs/web:2",
    ]
    assert all(line.endswith(")") and " (was sha256:" in line for line in tagged)
    assert "asyncio" not in moved.stderr  # no event-loop chatter at DEBUG

    after = cli("apply", "--verbose")  # -v after the command works too
    assert after.code == 0 and "[web] web: in sync" in after.stderr
    assert "DEBUG reconciler.http: [web] HEAD " in after.stderr


def test_diff_shows_an_invalid_spec_under_its_name_and_says_what_failed(cli: Cli) -> None:
    cli.write_spec("web.yaml", "base: r.io/b:1\nlayer: []\ntargets: [r.io/a:1]")
    result = cli("diff")
    assert result.code == 1
    assert result.stdout.splitlines() == [
        f"web ({cli.specs}/web.yaml): Invalid",
        f"  ! {cli.specs}/web.yaml:5: spec.layer: unknown field; did you mean 'layers'?",
        "",
        "1 spec invalid; 0 of 1 specs in sync.",
    ]
    specs = cli("diff", "-o", "json").json()["specs"]
    assert isinstance(specs, list) and len(specs) == 1
    assert (specs[0]["name"], specs[0]["state"]) == ("web", "Invalid")
