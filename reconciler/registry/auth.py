"""Registry authentication: where credentials come from, and the challenge flow.

Credentials come from the docker config (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`, and `REGISTRY_AUTH_FILE`), matched by exact host. The flow is an
`httpx.Auth`: it sends the request as is, and answers a `401` with a `WWW-Authenticate`
challenge. After a host has asked once, credentials are sent up front so that streamed bodies
(blob uploads) are never sent twice.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from reconciler.errors import AuthError

_DOCKER_HUB_ALIASES = (
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


def _config_files(env: Mapping[str, str]) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    else:
        files.append(Path.home() / ".docker" / "config.json")
    return files


def _hosts_to_try(host: str) -> tuple[str, ...]:
    return _DOCKER_HUB_ALIASES if host in _DOCKER_HUB_ALIASES else (host,)


def load_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for `host` from the `auths` section of the docker config files."""
    env = os.environ if env is None else env
    for path in _config_files(env):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read docker config {path}: {exc}") from None
        auths = data.get("auths") if isinstance(data, dict) else None
        if not isinstance(auths, dict):
            continue
        for name in _hosts_to_try(host):
            entry = auths.get(name)
            if isinstance(entry, dict):
                creds = _from_entry(entry, path, name)
                if creds is not None:
                    return creds
    return None


def _from_entry(entry: dict[str, object], path: Path, host: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"{path}: auths[{host!r}].auth is not base64 'user:password'") from None
        if not sep:
            raise AuthError(f"{path}: auths[{host!r}].auth is not base64 'user:password'")
        return Credentials(user, password)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(secret, str):
        return Credentials(username, secret)
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().strip(",").strip().lower()
        j = eq + 1
        if j < len(rest) and rest[j] == '"':
            end = j + 1
            value = ""
            while end < len(rest) and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < len(rest):
                    end += 1
                value += rest[end]
                end += 1
            i = end + 1
        else:
            end = rest.find(",", j)
            end = len(rest) if end < 0 else end
            value = rest[j:end].strip()
            i = end
        params[key] = value
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return scheme.lower(), params


class RegistryAuth(httpx.Auth):
    """Answers Basic challenges for one registry host with that host's credentials."""

    def __init__(self, host: str, credentials: Credentials | None) -> None:
        self.host = host
        self.credentials = credentials
        self._preemptive: str | None = None

    def _basic(self) -> str:
        assert self.credentials is not None  # noqa: S101 - checked by the caller
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._preemptive is not None:
            request.headers["Authorization"] = self._preemptive
        response = yield request
        if response.status_code != 401 or self._preemptive is not None:
            return
        scheme, _params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                raise AuthError(
                    f"{self.host} asks for credentials and none are configured for it "
                    "(docker config 'auths')",
                    method=request.method,
                    url=_safe_url(request.url),
                    status=401,
                )
            self._preemptive = self._basic()
            request.headers["Authorization"] = self._preemptive
            yield request
            return
        if scheme == "bearer":
            # Token auth (realm/service/scope, token cache) is the next layer of this flow.
            raise AuthError(
                f"{self.host} asks for bearer-token auth, which this version does not support yet",
                method=request.method,
                url=_safe_url(request.url),
                status=401,
            )


def _safe_url(url: httpx.URL) -> str:
    return str(url.copy_with(username=None, password=None, query=None))
