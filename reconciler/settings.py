"""Process settings (not image settings): environment, an optional YAML file, then defaults.

Precedence: `RECONCILER_*` environment variables (nested with `__`), then the YAML file given
by `--config` or `RECONCILER_CONFIG`, then the defaults below. Every field says its unit and
bounds; `reconciler` refuses a settings file with unknown keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from reconciler.errors import SettingsError
from reconciler.store.registry.retry import RetryPolicy
from reconciler.store.registry.transport import RegistryOptions

_SHARD = re.compile(r"([0-9]+)/([0-9]+)")


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reconciler"


class RegistrySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    insecure: bool | None = Field(
        default=None,
        description="true: plain HTTP; false: HTTPS even on loopback. "
        "Default: HTTP for loopback hosts, HTTPS with verification otherwise.",
    )
    ca_file: Path | None = Field(
        default=None, description="PEM bundle of CAs to trust for this host (implies HTTPS)."
    )
    chunk_size: int | None = Field(
        default=None,
        ge=1024 * 1024,
        le=5 * 1024**3,
        description="Bytes per PATCH when uploading blobs in chunks (for proxies that cap "
        "request bodies). Default: one streamed PUT per blob.",
    )

    def options(self) -> RegistryOptions:
        return RegistryOptions(
            insecure=self.insecure, ca_file=self.ca_file, chunk_size=self.chunk_size
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    specs_dir: Path = Field(
        default=Path("specs"), description="Directory of image specs (searched recursively)."
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Cache of immutable facts: manifests and configs by digest, layer "
        "diff_ids and sizes. Safe to delete; never holds credentials.",
    )
    concurrency: int = Field(
        default=8, ge=1, le=64, description="Blob transfers and HEAD checks at once, per registry."
    )
    timeout: float = Field(
        default=60.0, ge=1.0, le=3600.0, description="Seconds to wait on one network read/write."
    )
    retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Retries of one request or blob transfer after a transport failure, 408, "
        "429 or 5xx, before the spec fails.",
    )
    retry_delay: float = Field(
        default=0.5,
        ge=0.001,
        le=60.0,
        description="Seconds before the first retry; doubles each time, with full jitter.",
    )
    retry_max_delay: float = Field(
        default=30.0,
        ge=0.01,
        le=600.0,
        description="Longest wait between two tries, in seconds; also the longest Retry-After "
        "honoured (a registry asking for more fails the spec, naming the wait).",
    )
    max_uncompressed: int = Field(
        default=64 * 1024**3,
        ge=1024 * 1024,
        description="Largest uncompressed size, in bytes, accepted while computing a layer's "
        "diff_id; a layer that inflates past it fails with an error (a decompression bomb).",
    )
    resync_interval: float = Field(
        default=300.0, ge=5.0, le=86400.0, description="Seconds between full resyncs (daemon)."
    )
    resync_jitter: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Fraction of the interval added at random."
    )
    debounce: float = Field(
        default=1.0, ge=0.0, le=60.0, description="Seconds of quiet before a changed spec runs."
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="Daemon: seconds in-flight reconciles may take to finish after SIGTERM "
        "before they are abandoned (pushes are ordered, so abandoning one is safe).",
    )
    listen: str = Field(
        default="127.0.0.1:8080", description="host:port of the daemon's HTTP server."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    shard: str = Field(
        default="0/1", description="i/N: reconcile only specs whose name hashes to i of N."
    )
    prune: bool = Field(
        default=False, description="Delete tags this reconciler wrote when their spec is deleted."
    )
    mode: Literal["apply", "observe"] = Field(
        default="apply",
        description="Daemon: apply reconciles; observe never writes to any store and reports "
        "OutOfSync specs with their plan in /status and in metrics (as Argo CD without "
        "auto-sync).",
    )
    base_policy: Literal["follow", "locked"] = Field(
        default="follow",
        description="Daemon: follow rebuilds when a base tag moves; locked builds what the "
        "lock files (reconciler.lock) say and reports a moved base tag as BaseMoved, without "
        "rebuilding, until the lock is updated in git.",
    )
    registries: dict[str, RegistrySettings] = Field(
        default_factory=dict, description="Per-registry transport options, keyed by host[:port]."
    )

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        match = _SHARD.fullmatch(value)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise ValueError(f"shard {value!r} must be i/N with 0 <= i < N")
        return value

    def retry_policy(self, *, one_shot: bool = False) -> RetryPolicy:
        """The retry policy. `one_shot` (the CLI, not the daemon): a host that refuses the
        first connection of the process is tried once more after a moment, then its specs
        fail, rather than after seconds of backoff; once a host has answered, the usual
        retries apply. The daemon keeps retrying: a registry may be restarting."""
        return RetryPolicy(
            self.retries,
            self.retry_delay,
            self.retry_max_delay,
            first_contact_retries=min(1, self.retries) if one_shot else None,
        )

    def registry_options(self) -> dict[str, RegistryOptions]:
        return {host: entry.options() for host, entry in self.registries.items()}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment over the YAML file over defaults; `overrides` win."""
    path = config_file or (
        Path(os.environ["RECONCILER_CONFIG"]) if os.environ.get("RECONCILER_CONFIG") else None
    )
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path} must be a mapping")
        from_file = loaded or {}
    try:
        # Environment beats the file: build from the file, then let env-derived values win.
        env_only = Settings()
        env_set = {k: getattr(env_only, k) for k in env_only.model_fields_set}
        merged = {**from_file, **env_set, **{k: v for k, v in overrides.items() if v is not None}}
        return Settings(**merged)
    except ValidationError as exc:
        where = f" (file {path})" if path else ""
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid settings{where}: {errors}") from None
