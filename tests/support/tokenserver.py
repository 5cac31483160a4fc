"""A small token server for distribution's token auth: Basic or refresh-token in, RS256 JWT out.

It grants what was asked for to known users (or `pull` only to anonymous callers when allowed),
and records every request (method, scopes, whether credentials came with it) so tests can check
what the client asked for. `jwt_lifetime` and `expires_in` can disagree on purpose, to make the
registry refuse a token the client still believes is fresh.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from tests.support.pki import Pki

ISSUER = "reconciler-test-issuer"
SERVICE = "reconciler-test-registry"


@dataclass
class TokenRequest:
    method: str
    scopes: list[str]
    authorization: str | None
    grant: str  # "basic", "refresh_token" or "anonymous"
    user: str | None


@dataclass
class TokenServer:
    pki: Pki
    users: dict[str, str] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    anonymous_pull: bool = False
    jwt_lifetime: int = 300
    # Lifetimes (seconds) for the next tokens, used up first; distribution allows 60 s of
    # clock skew past `exp`, so -57 makes a token that dies 3 s after it is issued.
    lifetimes: list[int] = field(default_factory=list)
    expires_in: int = 300
    # repository -> actions a user may have there; absent: everything asked for.
    limits: dict[str, set[str]] = field(default_factory=dict)
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.urlparse(self.path).query
                params = urllib.parse.parse_qs(query)
                server._answer(self, params, self.headers.get("Authorization"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                params = urllib.parse.parse_qs(self.rfile.read(length).decode())
                server._answer(self, params, self.headers.get("Authorization"), post=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_config(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.pki.token_cert_file}\n"
        )

    def issue(self, user: str, access: list[dict[str, object]], lifetime: int = 300) -> str:
        """A signed token, as the registry expects it (also for tests that walk a registry)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(
            claims,
            self.pki.token_key_pem,
            algorithm="RS256",
            headers={"x5c": [base64.b64encode(self.pki.token_cert_der).decode()]},
        )

    def pull_header(self, repository: str) -> dict[str, str]:
        access = [{"type": "repository", "name": repository, "actions": ["pull"]}]
        return {"Authorization": "Bearer " + self.issue("walker", access)}

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        params: dict[str, list[str]],
        authorization: str | None,
        *,
        post: bool = False,
    ) -> None:
        scopes = [s for item in params.get("scope", []) for s in item.split(" ") if s]
        user: str | None = None
        grant = "anonymous"
        if post:
            grant = params.get("grant_type", [""])[0]
            user = self.refresh_tokens.get(params.get("refresh_token", [""])[0])
            if grant != "refresh_token" or user is None:
                self.requests.append(TokenRequest("POST", scopes, authorization, grant, None))
                return _reply(handler, 401, {"error": "invalid_grant"})
        elif authorization is not None:
            grant = "basic"
            user = _check_basic(authorization, self.users)
            if user is None:
                self.requests.append(TokenRequest("GET", scopes, authorization, grant, None))
                return _reply(handler, 401, {"error": "bad credentials"})
        self.requests.append(TokenRequest(handler.command, scopes, authorization, grant, user))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            if user is None:
                wanted = [a for a in wanted if a == "pull" and self.anonymous_pull]
            allowed = self.limits.get(name)
            if allowed is not None:
                wanted = [a for a in wanted if a in allowed]
            access.append({"type": kind, "name": name, "actions": wanted})
        lifetime = self.lifetimes.pop(0) if self.lifetimes else self.jwt_lifetime
        token = self.issue(user or "", access, lifetime)
        key = "access_token" if post else "token"
        _reply(handler, 200, {key: token, "expires_in": self.expires_in})


def _check_basic(header: str, users: dict[str, str]) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return user if users.get(user) == password else None


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
