from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.errors import SettingsError
from reconciler.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RECONCILER_"):
            monkeypatch.delenv(name)


def test_env_beats_file_beats_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("concurrency: 3\ntimeout: 5\nregistries:\n  'r.io:5000': {insecure: true}\n")
    monkeypatch.setenv("RECONCILER_CONCURRENCY", "5")
    settings = load_settings(config)
    assert settings.concurrency == 5 and settings.timeout == 5
    assert settings.registry_options()["r.io:5000"].insecure is True
    assert load_settings().concurrency == 5 and load_settings().timeout == 60


def test_config_from_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("log_level: debug\n")
    monkeypatch.setenv("RECONCILER_CONFIG", str(config))
    assert load_settings().log_level == "debug"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurrency: 0\n", "concurrency"),
        ("concurrency: 65\n", "concurrency"),
        ("shard: 2/2\n", "shard"),
        ("colour: blue\n", "colour"),
        ("registries: {'r.io': {insecure: true, tls: 1}}\n", "tls"),
        ("- a list\n", "must be a mapping"),
        ("a: [unclosed\n", "cannot read settings file"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(config)


def test_every_field_is_described_and_documented() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"`{name}`" in docs, name


@pytest.mark.parametrize("name", ["reconciler.yaml", "daemon.yaml"])
def test_example_settings_files_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("RECONCILER_")]:
        monkeypatch.delenv(key)
    root = Path(__file__).resolve().parent.parent
    settings = load_settings(root / "config" / name)
    assert settings.concurrency == 8
