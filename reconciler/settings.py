"""Process settings (not image settings): environment, an optional YAML file, then defaults.

Precedence: `RECONCILER_*` environment variables (nested with `__`), then the YAML file given
by `--config` or `RECONCILER_CONFIG`, then the defaults below. Every field says its unit and
bounds; `reconciler` refuses a settings file with unknown keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from reconciler.errors import SettingsError

if TYPE_CHECKING:  # imported where used: reconciler.store.registry loads httpx (a CLI start)
    from reconciler.store.registry.limits import WireLimits
    from reconciler.store.registry.retry import RetryPolicy
    from reconciler.store.registry.transport import RegistryOptions
    from reconciler.trust.config import KeySource, PolicySource

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
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Request budget for this host: requests a second, retries, redirects and "
        "token requests included, shared by every spec and daemon pass. Default: none "
        "(the registry's RateLimit headers are honoured either way).",
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Requests that may go at once after a quiet spell (needs "
        "requests_per_second). Default: requests_per_second rounded up.",
    )

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> RegistrySettings:
        if self.burst is not None and self.requests_per_second is None:
            raise ValueError("burst needs requests_per_second")
        return self

    def options(self) -> RegistryOptions:
        from reconciler.store.registry.transport import RegistryOptions

        return RegistryOptions(
            insecure=self.insecure,
            ca_file=self.ca_file,
            chunk_size=self.chunk_size,
            requests_per_second=self.requests_per_second,
            burst=self.burst,
        )


NotificationEvent = Literal[
    "applied", "failed", "recovered", "drift_repaired", "base_moved", "orphaned"
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110 5.6.2)
# Header names whose values are secrets: they must come from headers_from_files.
_SECRET_HEADER = re.compile(r"authorization|cookie|.*(token|secret|password|api-?key).*", re.I)


class NotificationSettings(BaseModel):
    """One endpoint that daemon events are POSTed to (docs/notifications.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Label of the endpoint in metrics and logs (never the URL). Default: its "
        "index in the list.",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        repr=False,  # may hold a secret (webhook URLs often do)
        description="http(s) URL events are POSTed to. Never logged.",
    )
    url_file: Path | None = Field(
        default=None,
        description="File holding the URL instead (for URLs that are secrets, as Slack "
        "webhooks are).",
    )
    format: Literal["cloudevents", "slack", "plain"] = Field(
        description="cloudevents (1.0, structured JSON), slack (incoming webhook) or plain JSON."
    )
    events: tuple[NotificationEvent, ...] = Field(
        default=NOTIFICATION_EVENTS, min_length=1, description="The events sent. Default: all."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers, literal: no secrets here."
    )
    headers_from_files: dict[str, Path] = Field(
        default_factory=dict,
        description="Extra request headers whose values are read from files (secrets), "
        "at each delivery; a trailing newline is dropped.",
    )
    timeout: float = Field(
        default=10.0, ge=0.1, le=300.0, description="Seconds one POST may take, in all."
    )

    @model_validator(mode="after")
    def _check(self) -> NotificationSettings:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of url and url_file")
        for header in (*self.headers, *self.headers_from_files):
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"header name {header!r} is not a valid HTTP header name")
        both = {h.lower() for h in self.headers} & {h.lower() for h in self.headers_from_files}
        if both:
            raise ValueError(f"header {sorted(both)[0]} is given twice")
        for header in self.headers:
            if _SECRET_HEADER.fullmatch(header):
                raise ValueError(f"header {header} looks secret: give it in headers_from_files")
        return self


class SigningSettings(BaseModel):
    """The key apply signs with (cosign's format: PEM, or its encrypted private key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_file: Path = Field(
        description="Private key: PKCS#8/EC/RSA PEM, or cosign's encrypted key "
        "(`cosign generate-key-pair`). ECDSA P-256/P-384/P-521, RSA, Ed25519."
    )
    passphrase_file: Path | None = Field(
        default=None, description="File holding the key's passphrase (trailing newline cut)."
    )
    passphrase_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the passphrase, instead of a file.",
    )
    recursive: bool = Field(
        default=True, description="Sign an index's child manifests too, not only the index."
    )

    @model_validator(mode="after")
    def _one_passphrase(self) -> SigningSettings:
        if self.passphrase_file is not None and self.passphrase_env is not None:
            raise ValueError("give passphrase_file or passphrase_env, not both")
        return self


class ProvenanceSettings(BaseModel):
    """SLSA provenance for what apply signs (docs/provenance.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="With signing: a signed SLSA Provenance v1 statement per signed image, "
        "in its .att manifest; false turns it off for every spec.",
    )
    builder_id: str = Field(
        default="https://reconciler.dev/builder/v1",
        min_length=1,
        max_length=2048,
        pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$",
        description="runDetails.builder.id: a URI naming what runs apply (your CI workflow, "
        "say); admission policies match it.",
    )


class HookSettings(BaseModel):
    """The daemon's webhooks, POST /hooks/registry and /hooks/git (docs/settings.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token callers send (Authorization: Bearer ...).",
    )
    hmac_secret_file: Path | None = Field(
        default=None,
        description="File holding the secret of an HMAC-SHA256 over the body "
        "(X-Hub-Signature-256 or X-Signature-256: sha256=<hex>, as GitHub signs).",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="With no secret configured, accept calls from anyone (anyone who can "
        "reach the port can then make the daemon reconcile specs, and send requests to their "
        "registries). Default: with no secret the hooks are off (404).",
    )
    git_from_loopback: bool = Field(
        default=False,
        description="Accept POST /hooks/git from a loopback address without a token or "
        "signature, for a sidecar in the same pod that cannot send one (git-sync's "
        "--webhook-url). The call only rereads the specs directory; /hooks/registry still "
        "needs a secret (off, 404, without one).",
    )
    max_per_minute: int = Field(
        default=120, ge=1, le=100_000, description="Calls per minute, per hook (429 beyond)."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest body (413)."
    )
    debounce: float = Field(
        default=0.5,
        ge=0.0,
        le=60.0,
        description="Seconds a registry hook's specs wait, so that a burst of events (the "
        "manifests of one multi-platform push) runs each spec once.",
    )
    peers: tuple[str, ...] = Field(
        default=(),
        description="Base URLs of the other replicas (http://reconciler-1.reconciler-peers:"
        "8080); each accepted hook call that did not come from a peer is relayed to them, so "
        "that the shard owning a pushed base's specs hears of it. This replica's own URL may "
        "be in the list (skipped).",
    )
    relay_timeout: float = Field(
        default=5.0, ge=0.1, le=60.0, description="Seconds one relayed call to a peer may take."
    )
    relay_queue: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Hook calls waiting to be relayed, at most; beyond, a call is not relayed "
        "(counted) and its peers catch up at their next resync.",
    )


class Settings(BaseModel):
    # The environment is read by load_settings (_environment), not by the model: pydantic-
    # settings is imported only for the variables that need it. validate_default as
    # pydantic-settings' BaseSettings has it.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    specs_dir: Path = Field(
        default=Path("specs"), description="Directory of image specs (searched recursively)."
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Cache of immutable facts: manifests and configs by digest, layer "
        "diff_ids and sizes; and where blobs were seen, to mount them from there. Safe to "
        "delete; never holds credentials.",
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
        "429 or 5xx, or a manifest, config, token answer or error body cut short, or a "
        "document that does not match its digest, before the spec fails.",
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
    request_deadline: float = Field(
        default=120.0,
        ge=1.0,
        le=3600.0,
        description="Seconds one registry request may take for its answer's head, and for a "
        "document read whole (manifest, config, token, error body) head and body together, "
        "however the bytes trickle in; then it fails as a transport failure (retried).",
    )
    spec_deadline: float = Field(
        default=600.0,
        ge=1.0,
        le=86400.0,
        description="Daemon: seconds one spec's reconcile may take in a pass, waits for "
        "concurrency slots and request budget included; past it the spec's work is cancelled "
        "(its slots and connections freed), it is Failed naming the request it was waiting "
        "on, the other specs go on, and it is retried after its backoff.",
    )
    min_transfer_rate: int = Field(
        default=16 * 1024,
        ge=0,
        le=1024**3,
        description="Bytes per second a blob's body must keep up over each "
        "transfer_rate_window; under it the transfer fails (and is retried). 0: no minimum.",
    )
    transfer_rate_window: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds min_transfer_rate is measured over; a blob that ends within "
        "one window is never judged.",
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
    http_read_timeout: int = Field(
        default=10,
        ge=1,
        le=600,
        description="Daemon HTTP server: seconds a request's headers, and then its body, may "
        "take to arrive; a client that sends nothing for that long is disconnected.",
    )
    http_keep_alive_timeout: float = Field(
        default=5.0,
        ge=0.1,
        le=600.0,
        description="Daemon HTTP server: seconds an idle kept-alive connection stays open "
        "(at most http_read_timeout).",
    )
    http_max_connections: int = Field(
        default=256,
        ge=2,
        le=100_000,
        description="Daemon HTTP server: open connections at most; one more is answered 503 "
        "and closed.",
    )
    ui: bool = Field(
        default=True,
        description="Daemon: serve the status page (GET /, /static/...) on the HTTP port; "
        "false answers 404 there.",
    )
    hooks: HookSettings = Field(
        default_factory=HookSettings,
        description="Daemon webhooks (POST /hooks/registry, /hooks/git): auth, rate, body cap.",
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
    base_policy: Literal["auto", "follow", "locked"] = Field(
        default="auto",
        description="Daemon: auto builds a spec whose directory has a reconciler.lock as "
        "locked, and one without as follow; locked builds what the lock files say (a spec no "
        "lock covers fails) and reports a moved tag as BaseMoved, keeping the tags on the "
        "locked build until the lock is updated in git; follow ignores the locks and rebuilds "
        "when a base tag moves.",
    )
    registries: dict[str, RegistrySettings] = Field(
        default_factory=dict, description="Per-registry transport options, keyed by host[:port]."
    )
    trust_policy: Path | None = Field(
        default=None,
        description="A trust policy in the shape of containers-policy.json(5) (JSON or YAML; "
        "/etc/containers/policy.json works as it is): bases and named layer images must "
        "satisfy it. Key paths in it are relative to its own directory. A spec's `trust:` "
        "replaces it for that spec. Default: no policy (accept anything).",
    )
    provenance: ProvenanceSettings = Field(
        default_factory=ProvenanceSettings,
        description="SLSA provenance statements for the images apply signs (docs/provenance.md).",
    )
    signing: SigningSettings | None = Field(
        default=None,
        description="Sign every manifest and index apply writes to a registry (cosign). A "
        "spec's `signing:` replaces it for that spec, or turns it off (`false`).",
    )
    notifications: tuple[NotificationSettings, ...] = Field(
        default=(),
        description="Daemon: endpoints that events (applied, failed, recovered, "
        "drift_repaired, base_moved, orphaned) are POSTed to; see docs/notifications.md.",
    )
    notification_queue: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Events waiting per endpoint; when it is full, new events are dropped "
        "(and counted).",
    )
    notification_retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Retries of one event after a transport failure, 408, 429 or 5xx.",
    )
    notification_retry_delay: float = Field(
        default=1.0,
        ge=0.001,
        le=60.0,
        description="Seconds before the first retry of an event; doubles, with full jitter.",
    )
    notification_retry_max_delay: float = Field(
        default=60.0,
        ge=0.01,
        le=3600.0,
        description="Longest wait between two tries of an event, and the longest Retry-After "
        "honoured (an endpoint asking for more fails the event).",
    )
    notification_flush: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="Seconds at shutdown to deliver queued events before dropping the rest.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        bracketed = host.startswith("[") == host.endswith("]")
        if not colon or not port.isascii() or not port.isdigit() or not bracketed:
            raise ValueError(f"listen {value!r} must be host:port (or [v6]:port, :port)")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"listen {value!r}: port {port} is not between 0 and 65535")
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        match = _SHARD.fullmatch(value)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise ValueError(f"shard {value!r} must be i/N with 0 <= i < N")
        return value

    @field_validator("notifications")
    @classmethod
    def _endpoint_names(
        cls, value: tuple[NotificationSettings, ...]
    ) -> tuple[NotificationSettings, ...]:
        labels = [n.name or str(i) for i, n in enumerate(value)]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"notification endpoint name {twice[0]!r} is used twice")
        return value

    def retry_policy(self, *, one_shot: bool = False) -> RetryPolicy:
        """The retry policy. `one_shot` (the CLI, not the daemon): a host that refuses the
        first connection of the process is tried once more after a moment, then its specs
        fail, rather than after seconds of backoff; once a host has answered, the usual
        retries apply. The daemon keeps retrying: a registry may be restarting."""
        from reconciler.store.registry.retry import RetryPolicy

        return RetryPolicy(
            self.retries,
            self.retry_delay,
            self.retry_max_delay,
            first_contact_retries=min(1, self.retries) if one_shot else None,
        )

    def named_files(self) -> list[tuple[str, Path]]:
        """Every file the settings name (key files, secrets, the trust policy, CA files,
        notification URLs and headers), as (setting, path); not the specs and state
        directories. For `reconciler config check`."""
        found: list[tuple[str, Path]] = []

        def walk(value: Any, where: str) -> None:
            if isinstance(value, Path):
                found.append((where, value))
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name), f"{where}.{name}" if where else name)
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(item, f"{where}.{key}")
            elif isinstance(value, list | tuple):
                for index, item in enumerate(value):
                    walk(item, f"{where}[{index}]")

        for name in type(self).model_fields:
            if name not in ("specs_dir", "state_dir"):
                walk(getattr(self, name), name)
        return found

    @property
    def uses_locks(self) -> bool:
        """Whether the daemon builds from the lock files (base_policy auto or locked)."""
        return self.base_policy != "follow"

    def wire_limits(self) -> WireLimits:
        """The bounds on every registry answer beyond the read timeout (limits.py)."""
        from reconciler.store.registry.limits import WireLimits

        return WireLimits(self.request_deadline, self.min_transfer_rate, self.transfer_rate_window)

    def trust_source(self) -> PolicySource | None:
        """The settings' trust policy, read from its file (SettingsError when it is bad)."""
        if self.trust_policy is None:
            return None
        from reconciler.errors import TrustError
        from reconciler.trust.config import PolicySource
        from reconciler.trust.policy import load_policy_file

        try:
            policy = load_policy_file(self.trust_policy)
        except TrustError as exc:
            raise SettingsError(f"trust_policy: {exc}") from None
        return PolicySource(
            policy, self.trust_policy.absolute().parent, f"trust policy {self.trust_policy}"
        )

    def key_source(self) -> KeySource | None:
        if self.signing is None:
            return None
        from reconciler.trust.config import KeySource

        signing = self.signing
        return KeySource(
            signing.key_file, signing.passphrase_file, signing.passphrase_env, signing.recursive
        )

    def registry_options(self) -> dict[str, RegistryOptions]:
        return {host: entry.options() for host, entry in self.registries.items()}


_ENV_PREFIX = "RECONCILER_"
_SCALARS = (str, int, float, bool, Path)


def _is_scalar(annotation: Any) -> bool:
    """A field an environment variable gives as a plain string (no JSON, no nesting)."""
    union = get_origin(annotation) in (Union, UnionType)
    kinds = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
    return all(kind in _SCALARS or get_origin(kind) is Literal for kind in kinds)


def _environment() -> dict[str, Any]:
    """The `RECONCILER_*` variables that name fields, as pydantic-settings' environment source
    reads them: names case-insensitive, a scalar field's value its string (validated as the
    file's values are), structured fields from JSON or nested with `__`.

    Only when a structured field is set is pydantic-settings imported, to read them all: with
    the asyncio it loads it is an eighth of a `validate`, which most runs never need."""
    values: dict[str, Any] = {}
    for key, value in os.environ.items():
        if not key.upper().startswith(_ENV_PREFIX):
            continue
        name = key[len(_ENV_PREFIX) :].lower()
        field = Settings.model_fields.get(name)
        if field is None:
            if name.partition("__")[0] in Settings.model_fields:
                return _environment_by_pydantic_settings()  # nested: RECONCILER_HOOKS__...
            continue
        if not _is_scalar(field.annotation):
            return _environment_by_pydantic_settings()
        values[name] = value
    return values


def _environment_by_pydantic_settings() -> dict[str, Any]:
    from pydantic_settings import EnvSettingsSource
    from pydantic_settings import SettingsError as SourceError

    source = EnvSettingsSource(
        Settings,  # type: ignore[arg-type]  # a plain model: the source reads its fields only
        case_sensitive=False,
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter="__",
    )
    try:
        return source()
    except SourceError as exc:  # JSON that does not parse
        raise SettingsError(f"invalid settings: {exc} ({_ENV_PREFIX}* variables)") from None


# Settings only `reconciler run` reads: a bad value of one of them fails the daemon's start,
# never validate, diff, apply, lock or save (they use the default instead).
DAEMON_ONLY = frozenset(
    {
        "resync_interval",
        "resync_jitter",
        "debounce",
        "shutdown_grace",
        "spec_deadline",
        "listen",
        "http_read_timeout",
        "http_keep_alive_timeout",
        "http_max_connections",
        "ui",
        "hooks",
        "shard",
        "prune",
        "mode",
        "base_policy",
        "notifications",
        "notification_queue",
        "notification_retries",
        "notification_retry_delay",
        "notification_retry_max_delay",
        "notification_flush",
    }
)


def load_settings(
    config_file: Path | None = None, *, daemon: bool = True, **overrides: Any
) -> Settings:
    """Settings from the environment over the YAML file over defaults; `overrides` win.

    Errors name where each value came from: the file and line, or the environment variable;
    an unknown key gets the closest known one. `daemon=False` (the one-shot commands): a bad
    value of a setting in DAEMON_ONLY is left at its default instead of failing."""
    path = config_file or (
        Path(os.environ["RECONCILER_CONFIG"]) if os.environ.get("RECONCILER_CONFIG") else None
    )
    from_file: dict[str, Any] = {}
    text = ""
    if path is not None:
        import yaml  # only with a settings file: start-up (#13)

        try:
            text = path.read_text(encoding="utf-8")
            loaded = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path} must be a mapping")
        from_file = loaded or {}
    environment = _environment()
    skipped: set[str] = set()
    while True:
        try:
            # Environment beats the file: build from the file, then let env-derived values win.
            env_only = Settings(**{k: v for k, v in environment.items() if k not in skipped})
            env_set = {k: getattr(env_only, k) for k in env_only.model_fields_set}
            merged = {
                **{k: v for k, v in from_file.items() if k not in skipped},
                **env_set,
                **{k: v for k, v in overrides.items() if v is not None},
            }
            return Settings(**merged)
        except ValidationError as exc:
            found = exc.errors()
            lenient = {str(e["loc"][0]) for e in found if e["loc"]} & DAEMON_ONLY
            if (
                not daemon
                and lenient
                and all(e["loc"] and str(e["loc"][0]) in DAEMON_ONLY for e in found)
            ):
                skipped |= lenient  # only the daemon reads them: it will say so
                continue
            from_env = set(environment) - skipped
            explained = [_explained(e, path, text, from_env) for e in found]
            if len(explained) == 1:
                raise SettingsError(f"invalid settings: {explained[0]}") from None
            raise SettingsError("invalid settings:\n  " + "\n  ".join(explained)) from None


def _explained(error: Any, path: Path | None, text: str, from_env: set[str]) -> str:
    """One validation error, with where its value came from and, for an unknown key, the
    closest known one."""
    import difflib

    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        message = "unknown setting" + (f"; did you mean {close[0]}?" if close else "")
    top = str(loc[0]) if loc else ""
    if top in from_env:  # the environment beats the file: the value was the variable's
        variable = _ENV_PREFIX + "__".join(str(p) for p in loc).upper()
        return f"{dotted}: {message} (from {variable})"
    if path is not None:
        line = _line_of(text, loc)
        return f"{path}{f':{line}' if line else ''}: {dotted}: {message}"
    return f"{dotted}: {message}"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a settings mapping at `loc` may hold (top level, or a nested model's)."""
    model: Any = Settings
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        inner: list[Any] = [a for a in get_args(annotation) if isinstance(a, type)]
        inner = inner or [annotation]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the key (or item) at `loc` in the settings file's YAML, or None."""
    import yaml

    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next((p for p in node.value if p[0].value == str(part)), None)
            if pair is None:
                return line
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
