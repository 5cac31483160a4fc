"""Who may call the webhooks: a bearer token and/or an HMAC-SHA256 of the raw body (secrets
read from files, compared in constant time). How often is bounded in http.py, with the token
bucket of the registry budgets.

- A bearer token: `Authorization: Bearer <token>` (the distribution registry sends it from its
  endpoint's `headers:`; Harbor sends its configured auth header as it is, so set it to
  `Bearer <token>` there).
- An HMAC: `X-Hub-Signature-256: sha256=<hex>` (GitHub) or `X-Signature-256` with the same
  value, or the hex alone.

When both are configured either one suffices (a registry sends a token, GitHub signs). With
neither, the hooks are off unless `hooks.allow_unauthenticated` is set. The secrets never leave
this module: refusals say which check failed, never what was expected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import SettingsError
from reconciler.settings import HookSettings

SIGNATURE_HEADERS = ("x-hub-signature-256", "x-signature-256")


def _read_secret(path: Path, what: str) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not secret:
        raise SettingsError(f"{what} {path} is empty")
    return secret


@dataclass(frozen=True)
class HookAuth:
    token: bytes | None = field(default=None, repr=False)
    hmac_secret: bytes | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False

    @classmethod
    def load(cls, settings: HookSettings) -> HookAuth:
        """The configured secrets, read now (a SettingsError names an unreadable file)."""
        token = (
            _read_secret(settings.token_file, "hooks.token_file") if settings.token_file else None
        )
        secret = (
            _read_secret(settings.hmac_secret_file, "hooks.hmac_secret_file")
            if settings.hmac_secret_file
            else None
        )
        return cls(token, secret, settings.allow_unauthenticated)

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.hmac_secret or self.allow_unauthenticated)

    @property
    def open(self) -> bool:
        """No secret configured, and unauthenticated calls allowed."""
        return self.token is None and self.hmac_secret is None and self.allow_unauthenticated

    def refusal(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Why this request is refused (for the log), or None when it is authenticated."""
        if self.open:
            return None
        offered: list[str] = []
        authorization = headers.get("authorization")
        if self.token is not None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self.token
            ):
                return None
            offered.append("a wrong bearer token")
        signature = next((headers[h] for h in SIGNATURE_HEADERS if h in headers), None)
        if self.hmac_secret is not None and signature is not None:
            expected = hmac.new(self.hmac_secret, body, hashlib.sha256).hexdigest()
            given = signature.strip().removeprefix("sha256=").lower()
            if hmac.compare_digest(given.encode(), expected.encode()):
                return None
            offered.append("a signature that does not match the body")
        return " and ".join(offered) if offered else "no credentials"
