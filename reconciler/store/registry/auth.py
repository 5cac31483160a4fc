"""Registry authentication: where credentials come from, and how challenges are answered.

Credentials come from the docker config files, in this order: `REGISTRY_AUTH_FILE`, then
`$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`). In each file, for the registry's
host: `credHelpers[host]` (runs `docker-credential-NAME get`), then `auths[host]` (`auth` as
base64 `user:password`, or `username`/`password`, or `identitytoken`), then `credsStore`. Hosts
match exactly; keys written as URLs (`https://host/v1/`) match their host; Docker Hub's names
(`docker.io`, `index.docker.io`, ...) are one host.

A host's first request goes out without credentials. Its `401` challenge tells the scheme:
- Basic: send the credentials, and from then on send them up front.
- Bearer: fetch a token from the realm for the request's scopes (`repository:NAME:pull` to read,
  `pull,push` to write, plus `pull` on the source repository of a mount), cache it per scope set
  until shortly before it expires, and from then on fetch tokens up front. A `401` on a request
  that carried a token drops that token and fetches a fresh one, once.
Credentials go to a token realm over plain HTTP only when the transport policy says that host is
plain HTTP on purpose (loopback or `insecure: true`). Nothing here logs or formats a secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from reconciler.errors import AuthError, BodyError, DocumentError, RegistryError
from reconciler.memo import Shared
from reconciler.oci.document import load_json

log = logging.getLogger("reconciler.auth")

_DOCKER_HUB_ALIASES = (
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
)
# The key Docker uses for Docker Hub in config files and credential helpers.
_DOCKER_HUB_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0
TOKEN_BODY_LIMIT = 1024 * 1024
CLIENT_ID = "reconciler"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # An OAuth2 refresh token (docker config `identitytoken`, or a helper's `<token>` user).
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        return f"Credentials(username={self.username!r}, secret=***)"


def _config_files(env: Mapping[str, str]) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    else:
        files.append(Path.home() / ".docker" / "config.json")
    return files


def _key_host(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000`; a plain host is itself."""
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0]


def _same_host(key: str, host: str) -> bool:
    key_host = _key_host(key)
    if host in _DOCKER_HUB_ALIASES:
        return key_host in _DOCKER_HUB_ALIASES
    return key_host == host


def _lookup(section: object, host: str) -> tuple[str, object] | None:
    if not isinstance(section, dict):
        return None
    if host in section:
        return host, section[host]
    for key, value in section.items():
        if isinstance(key, str) and _same_host(key, host):
            return key, value
    return None


def load_credentials(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for `host`, or None. May run a credential helper (blocking)."""
    env = os.environ if env is None else env
    for path in _config_files(env):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read docker config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise AuthError(f"docker config {path} is not a JSON object")
        helper = _lookup(data.get("credHelpers"), host)
        if helper is not None and isinstance(helper[1], str) and helper[1]:
            return run_helper(helper[1], _helper_server(host), env)
        entry = _lookup(data.get("auths"), host)
        if entry is not None and isinstance(entry[1], dict):
            creds = _from_entry(entry[1], path, entry[0])
            if creds is not None:
                return creds
        store = data.get("credsStore")
        if isinstance(store, str) and store:
            creds = run_helper(store, _helper_server(host), env)
            if creds is not None:
                return creds
    return None


def _helper_server(host: str) -> str:
    return _DOCKER_HUB_KEY if host in _DOCKER_HUB_ALIASES else host


def _from_entry(entry: dict[str, object], path: Path, key: str) -> Credentials | None:
    where = f"{path}: auths[{key!r}]"
    identity = entry.get("identitytoken")
    identity = identity if isinstance(identity, str) and identity else None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"{where}.auth is not base64 'user:password'") from None
        if not sep:
            raise AuthError(f"{where}.auth is not base64 'user:password'")
        return Credentials(user, password, identity)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(secret, str):
        return Credentials(username, secret, identity)
    if identity is not None:
        return Credentials("", "", identity)
    return None


def run_helper(name: str, server: str, env: Mapping[str, str]) -> Credentials | None:
    """`docker-credential-NAME get` with the server on stdin; None when it has nothing."""
    program = f"docker-credential-{name}"
    binary = shutil.which(program, path=env.get("PATH"))
    if binary is None:
        raise AuthError(f"credential helper {program} is not on PATH (docker config names it)")
    try:
        done = subprocess.run(
            [binary, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AuthError(
            f"credential helper {program} did not answer in {HELPER_TIMEOUT:.0f}s"
        ) from None
    except OSError as exc:
        raise AuthError(f"cannot run credential helper {program}: {exc.strerror}") from None
    if done.returncode != 0:
        # The helpers' own message for "nothing stored"; their stderr never holds the secret.
        said = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
        first = said[0][:200] if said else ""
        if "credentials not found" in first.lower():
            return None
        raise AuthError(f"credential helper {program} failed (exit {done.returncode}): {first}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    username = answer.get("Username") if isinstance(answer, dict) else None
    secret = answer.get("Secret") if isinstance(answer, dict) else None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise AuthError(f"credential helper {program} printed no Username/Secret JSON")
    if username == "<token>":
        return Credentials("", "", secret)
    return Credentials(username, secret)


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


# A scope set: (resource, action) pairs, e.g. ("repository:team/app", "push").
Scopes = frozenset[tuple[str, str]]


def parse_scopes(text: str) -> Scopes:
    """`repository:a:pull,push repository:b:pull` -> pairs."""
    pairs: set[tuple[str, str]] = set()
    for item in text.split():
        resource, sep, actions = item.rpartition(":")
        if sep and resource:
            pairs.update((resource, action) for action in actions.split(",") if action)
    return frozenset(pairs)


def scopes_for(method: str, url: httpx.URL) -> Scopes:
    """The token scopes a registry API request needs, from its path, method and mount source."""
    path = url.path
    if not path.startswith("/v2/"):
        return frozenset()
    rest = path[4:]
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        name, sep, _ = rest.rpartition(marker)
        if sep and name:
            break
    else:
        return frozenset()
    if method in ("GET", "HEAD"):
        actions: tuple[str, ...] = ("pull",)
    elif method == "DELETE":
        actions = ("delete",)
    else:
        actions = ("pull", "push")
    pairs = {(f"repository:{name}", action) for action in actions}
    source = url.params.get("from")
    if source:
        pairs.add((f"repository:{source}", "pull"))
    return frozenset(pairs)


def scope_params(scopes: Scopes) -> list[str]:
    """Pairs back to `repository:NAME:a,b` strings, one per resource, in a stable order."""
    by_resource: dict[str, set[str]] = {}
    for resource, action in scopes:
        by_resource.setdefault(resource, set()).add(action)
    return [f"{r}:{','.join(sorted(a))}" for r, a in sorted(by_resource.items())]


@dataclass
class _Token:
    value: str
    scopes: Scopes
    expires_at: float  # time.monotonic()


# (method, url, headers, form) -> (status, body); provided by the transport, which owns TLS
# policy, retries and size caps.
TokenFetch = Callable[
    [str, httpx.URL, dict[str, str], dict[str, str] | None], Awaitable[tuple[int, bytes]]
]


class HostAuth:
    """The authentication state of one registry host: its challenge, credentials and tokens."""

    def __init__(
        self,
        host: str,
        load: Callable[[], Credentials | None],
        fetch: TokenFetch,
        plain_http_ok: Callable[[str], bool],
    ) -> None:
        self.host = host
        self._load = load
        self._fetch = fetch
        self._plain_http_ok = plain_http_ok
        self._credentials: Credentials | None = None
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self.scheme: str | None = None  # "basic" or "bearer" once the host has challenged
        self._params: dict[str, str] = {}
        self._tokens: list[_Token] = []
        self._inflight: dict[Scopes, Shared[_Token]] = {}
        self.token_fetches = 0

    async def credentials(self) -> Credentials | None:
        async with self._load_lock:
            if not self._loaded:
                self._credentials = await asyncio.to_thread(self._load)
                self._loaded = True
        return self._credentials

    async def authorization(self, scopes: Scopes) -> str | None:
        """The Authorization header to send up front, once the host's scheme is known."""
        if self.scheme == "basic":
            return _basic(await self._require_credentials())
        if self.scheme == "bearer" and scopes:
            return "Bearer " + (await self._token(scopes)).value
        return None

    async def answer(self, challenge: str, scopes: Scopes, sent: str | None) -> str:
        """The Authorization header to retry a request that got `401` with `challenge`."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if sent is not None and sent.startswith("Basic "):
                raise AuthError(f"{self.host} refused the configured credentials", status=401)
            self.scheme, self._params = "basic", params
            return _basic(await self._require_credentials())
        if scheme == "bearer":
            if not params.get("realm"):
                raise AuthError(f"{self.host} sent a Bearer challenge without a realm", status=401)
            self.scheme, self._params = "bearer", params
            wanted = scopes | parse_scopes(params.get("scope", ""))
            if sent is not None and sent.startswith("Bearer "):
                stale = sent.removeprefix("Bearer ")
                self._tokens = [t for t in self._tokens if t.value != stale]
            return "Bearer " + (await self._token(wanted)).value
        raise AuthError(
            f"{self.host} asks for {scheme or 'an unnamed'} authentication, which reconciler "
            "does not speak (Basic and Bearer only)",
            status=401,
        )

    async def refusal(self, scopes: Scopes) -> str:
        """Why a request failed with 401 after being authenticated as asked."""
        creds = await self.credentials()
        if creds is None:
            return self._no_credentials("needs")
        if self.scheme == "basic":
            return f"{self.host} refused the configured credentials"
        wanted = " ".join(scope_params(scopes)) or "the registry"
        return f"{self.host} refused the token issued for {wanted}: these credentials lack access"

    def _no_credentials(self, verb: str) -> str:
        return (
            f"{self.host} {verb} credentials and none are configured for it "
            "(docker config auths, credHelpers or credsStore)"
        )

    async def _require_credentials(self) -> Credentials:
        creds = await self.credentials()
        if creds is None or not (creds.username or creds.password):
            raise AuthError(self._no_credentials("asks for"), status=401)
        return creds

    async def _token(self, scopes: Scopes) -> _Token:
        now = time.monotonic()
        self._tokens = [t for t in self._tokens if t.expires_at > now]
        for token in self._tokens:
            if scopes <= token.scopes:
                return token
        fetch = self._inflight.get(scopes)
        if fetch is None or fetch.abandoned:
            fetch = self._inflight[scopes] = Shared(self._fetch_token(scopes))
            fetch.task.add_done_callback(lambda _f: self._forget(scopes, fetch))
        return await fetch.wait()

    def _forget(self, scopes: Scopes, fetch: Shared[_Token]) -> None:
        if self._inflight.get(scopes) is fetch:  # not a fetch started after it was abandoned
            del self._inflight[scopes]

    async def _fetch_token(self, scopes: Scopes) -> _Token:
        realm = httpx.URL(self._params["realm"])
        if realm.scheme not in ("http", "https"):
            raise AuthError(f"{self.host}: token realm is not an http(s) URL")
        creds = await self.credentials()
        if creds is not None and realm.scheme == "http" and not self._plain_http_ok(netloc(realm)):
            raise AuthError(
                f"{self.host}: refusing to send credentials to token realm "
                f"http://{netloc(realm)}{realm.path} over plain HTTP (the registry itself is "
                "not plain HTTP); configure that realm's host with insecure: true if that is "
                "really meant (docs/reliability.md)"
            )
        service = self._params.get("service")
        scope_list = scope_params(scopes)
        headers = {"Accept": "application/json"}
        form: dict[str, str] | None = None
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": CLIENT_ID,
                "scope": " ".join(scope_list),
            }
            if service:
                form["service"] = service
            url = realm
        else:
            params: list[tuple[str, str]] = list(realm.params.multi_items())
            if service:
                params.append(("service", service))
            params.extend(("scope", s) for s in scope_list)
            url = realm.copy_with(params=params)
            if creds is not None and (creds.username or creds.password):
                headers["Authorization"] = _basic(creds)
        method = "POST" if form else "GET"
        try:
            status, body = await self._fetch(method, url, headers, form)
        except RegistryError as exc:
            cause = exc.__cause__
            if isinstance(exc, BodyError):
                # Its body cut short: the registry request that needed it tries again.
                why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
                raise RegistryError(
                    f"registry {self.host}: {method} {realm.path}: token answer cut short ({why})",
                    retryable=True,
                ) from exc
            # The realm's host failed otherwise: say whose realm it is.
            raise AuthError(
                f"token server {netloc(realm)} named by {self.host}'s challenge: {exc}",
                retryable=exc.retryable,
            ) from None
        self.token_fetches += 1
        if status in (401, 403):
            raise AuthError(
                f"token server for {self.host} refused the credentials "
                f"for {' '.join(scope_list) or 'the registry'}",
                url=str(realm.copy_with(query=None)),
                status=status,
            )
        if status != 200:
            raise AuthError(
                f"token server for {self.host} answered {status}",
                url=str(realm.copy_with(query=None)),
                status=status,
            )
        token = _parse_token(body, scopes, self.host)
        self._tokens.append(token)
        return token


class TokenAnswer(BaseModel):
    """A token server's answer (distribution's token spec): `token`, or OAuth2's
    `access_token`, and a lifetime in seconds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    token: StrictStr | None = None
    access_token: StrictStr | None = None
    expires_in: StrictInt | StrictFloat | None = None


def _parse_token(body: bytes, scopes: Scopes, host: str) -> _Token:
    try:
        answer = TokenAnswer.model_validate(load_json(body, "token answer", TOKEN_BODY_LIMIT))
    except (DocumentError, ValidationError):
        raise AuthError(f"token server for {host} sent no JSON token") from None
    value = answer.token or answer.access_token
    if not value or any(c.isspace() for c in value):
        raise AuthError(f"token server for {host} sent no usable token")
    expires_in = answer.expires_in
    lifetime = float(expires_in) if expires_in is not None and 0 < expires_in < 1e9 else 60.0
    # Renew a little before the server's deadline, so a request never leaves with a dying token.
    margin = min(10.0, lifetime * 0.1)
    return _Token(value, scopes, time.monotonic() + lifetime - margin)


def _basic(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def netloc(url: httpx.URL) -> str:
    """`host[:port]` as references write it (IPv6 in brackets)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def log_safe(url: httpx.URL) -> str:
    """A URL fit for logs and errors: no userinfo, no query (upload state, tokens)."""
    if not (url.userinfo or url.query or url.fragment):
        return str(url)  # nothing to drop: copy_with re-parses the URL, some 30 us a request
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
