"""`RECONCILER_*` variables: read without pydantic-settings when they are all scalars (start-up),
exactly as pydantic-settings reads them; structured ones (JSON, `__`) by pydantic-settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import EnvSettingsSource

from reconciler.errors import SettingsError
from reconciler.settings import Settings, _environment, load_settings
from tests.conftest import Cli

SCALARS = {
    "RECONCILER_CONCURRENCY": "5",
    "reconciler_timeout": "7.5",  # names are case-insensitive
    "RECONCILER_LOG_LEVEL": "debug",
    "RECONCILER_PRUNE": "true",
    "RECONCILER_TRUST_POLICY": "/etc/reconciler/trust.yaml",
    "RECONCILER_SHARD": "1/3",
    "RECONCILER_NOT_A_FIELD": "ignored",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RECONCILER_"):
            monkeypatch.delenv(name)


def by_pydantic_settings() -> dict[str, object]:
    source = EnvSettingsSource(
        Settings,  # type: ignore[arg-type]
        case_sensitive=False,
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
    )
    return source()


def test_scalar_variables_read_as_pydantic_settings_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SCALARS.items():
        monkeypatch.setenv(name, value)
    assert _environment() == by_pydantic_settings()
    settings = load_settings()
    assert (settings.concurrency, settings.timeout, settings.log_level) == (5, 7.5, "debug")
    assert settings.prune is True and settings.trust_policy == Path("/etc/reconciler/trust.yaml")


def test_structured_variables_go_through_pydantic_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECONCILER_CONCURRENCY", "3")
    monkeypatch.setenv("RECONCILER_REGISTRIES", json.dumps({"r.io:5000": {"insecure": True}}))
    monkeypatch.setenv("RECONCILER_HOOKS__TOKEN_FILE", str(tmp_path / "token"))
    assert _environment() == by_pydantic_settings()
    settings = load_settings()
    assert settings.concurrency == 3
    assert settings.registry_options()["r.io:5000"].insecure is True
    assert settings.hooks.token_file == tmp_path / "token"


def test_scalar_environment_does_not_load_pydantic_settings() -> None:
    code = (
        "import sys\nfrom reconciler.settings import load_settings\n"
        "s = load_settings()\nprint(s.concurrency, 'pydantic_settings' in sys.modules)\n"
    )
    env = {**os.environ, **{k: v for k, v in SCALARS.items() if k.isupper()}}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == "5 False\n"


def test_bad_json_in_a_variable_is_a_clear_error(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_REGISTRIES", "{not json")
    with pytest.raises(SettingsError, match=r'invalid settings: .*"registries"'):
        load_settings()
    result = cli("validate", env_extra={"RECONCILER_REGISTRIES": "{not json"})
    assert result.code == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: invalid settings:") and "registries" in result.stderr
