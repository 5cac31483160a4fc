"""Settings errors as strong as spec errors (issue 22, point 5): the file and line, a
did-you-mean, the environment variable when the value came from one; a setting only the daemon
reads fails `run`, not the one-shot commands; every bad value is a clear error, no traceback."""

from __future__ import annotations

from tests.conftest import Cli


def test_an_unknown_key_gets_its_file_line_and_the_closest_setting(cli: Cli) -> None:
    """Before: `resync_intervall: Extra inputs are not permitted`, no file, no line."""
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    config = cli.root / "s.yaml"
    config.write_text("concurrency: 4\nresync_intervall: 30\nhooks:\n  token_fle: /x\n")
    result = cli("validate", "--config", str(config))
    assert result.code == 1
    assert f"{config}:2: resync_intervall: unknown setting; did you mean resync_interval?" in (
        result.stderr
    )
    assert f"{config}:4: hooks.token_fle: unknown setting; did you mean token_file?" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_value_from_the_environment_names_its_variable(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    result = cli("validate", env_extra={"RECONCILER_CONCURRENCY": "0"})
    assert result.code == 1
    assert (
        "concurrency: Input should be greater than or equal to 1 (from RECONCILER_CONCURRENCY)"
        in (result.stderr)
    )


def test_a_daemon_setting_fails_run_only(cli: Cli) -> None:
    """Before: RECONCILER_RESYNC_INTERVAL=2 made `validate` fail, naming no variable."""
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    env = {"RECONCILER_RESYNC_INTERVAL": "2"}
    assert cli("validate", env_extra=env).code == 0
    run = cli("run", env_extra=env, timeout=30)
    assert run.code == 1
    assert "resync_interval: Input should be greater than or equal to 5 " in run.stderr
    assert "(from RECONCILER_RESYNC_INTERVAL)" in run.stderr


def test_spec_deadline_is_bounded_and_read_by_the_daemon_only(cli: Cli) -> None:
    cli.write_spec("app.yaml", "base: r.io/base:1\ntargets: [r.io/app:1]")
    env = {"RECONCILER_SPEC_DEADLINE": "0.5"}
    assert cli("validate", env_extra=env).code == 0
    run = cli("run", env_extra=env, timeout=30)
    assert run.code == 1
    assert "spec_deadline: Input should be greater than or equal to 1 " in run.stderr
    assert "(from RECONCILER_SPEC_DEADLINE)" in run.stderr


def test_a_listen_port_out_of_range_is_a_clear_error(cli: Cli) -> None:
    """Before: `reconciler run` ended with a traceback (OverflowError)."""
    config = cli.root / "s.yaml"
    config.write_text('listen: "127.0.0.1:99999"\n')
    run = cli("run", "--config", str(config), timeout=30)
    assert run.code == 1
    assert f"{config}:1: listen: Value error, listen '127.0.0.1:99999': port 99999 is not" in (
        run.stderr
    )
    assert "Traceback" not in run.stderr
