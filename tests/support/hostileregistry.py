"""A registry that misbehaves: a raw-socket server that serves one small valid image under
every repository `hostile/<case>`, and answers one kind of request (the ping, the manifest's
HEAD or GET, the config's or the layer's GET) of that case the wrong way.

Every answer is written byte for byte by the case (no HTTP library between), one request per
connection, so a case can send what no server library would: bare LF heads, numbers in other
scripts, 1xx for ever, a gzip bomb, a chunk size of 2**64 - 1, a body cut short.

Used by tests/test_hostile_registry.py (all cases in one `diff` and one `apply`) and by
bench/hostile_registry.py (each case alone, timed, with its peak RSS).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.images import OCI_MANIFEST, Image, make_layer

# The bounds every case is run under (tests/test_hostile_registry.py, bench/hostile_registry.py).
LIMITS = {
    "RECONCILER_TIMEOUT": "5",
    "RECONCILER_RETRIES": "1",
    "RECONCILER_REQUEST_DEADLINE": "3",
    "RECONCILER_MIN_TRANSFER_RATE": "1024",
    "RECONCILER_TRANSFER_RATE_WINDOW": "2",
}

# What a case writes: bytes, a pause (seconds), or CLOSE (end now, whatever was announced).
CLOSE = object()
Piece = bytes | float | object
Script = list[Piece]


@dataclass(frozen=True)
class Honest:
    """The answer a well-behaved registry would give."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    method: str
    path: str = ""
    host: str = ""

    def head(
        self,
        *,
        status_line: bytes | None = None,
        drop: tuple[str, ...] = (),
        extra: list[tuple[str, str]] | None = None,
        eol: bytes = b"\r\n",
    ) -> bytes:
        lines = [status_line or b"HTTP/1.1 %d %s" % (self.status, REASONS[self.status])]
        for name, value in self.headers:
            if name.lower() not in drop:
                lines.append(f"{name}: {value}".encode("latin-1"))
        for name, value in extra or []:
            lines.append(name.encode("latin-1") + b": " + value.encode("utf-8"))
        return eol.join(lines) + eol + eol

    def whole(self, **head: object) -> Script:
        body = b"" if self.method == "HEAD" else self.body
        return [self.head(**head) + body]  # type: ignore[arg-type]


REASONS = {
    200: b"OK",
    202: b"Accepted",
    302: b"Found",
    401: b"Unauthorized",
    404: b"Not Found",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    100: b"Continue",
    103: b"Early Hints",
}


Misbehave = Callable[[Honest], Script]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # which request misbehaves: ping, head (manifest HEAD), manifest, config, layer
    misbehave: Misbehave
    says: str  # a phrase the failure's message must hold (besides the registry's host:port)
    slow: bool = False  # bounded by the deadline or the rate rule, not by a quick refusal
    ok: bool = False  # a quirk reconciler works through: the spec must not fail
    manifest: bytes | None = None  # served (HEAD and GET, digest and all) instead of the image's
    # Changes what reconciler knows of the whole host (its auth challenge): on a server of its
    # own, so that it does not decide the other cases' outcome.
    alone: bool = False
    # How the case's token server (realm /token/<case>) answers; its `kind` of request, sent
    # without a token, gets `misbehave` (a Bearer challenge naming that realm), and with one
    # the honest answer.
    token: Misbehave | None = None


def trickle(data: bytes, every: float = 0.5) -> Script:
    script: Script = []
    for byte in data:
        script += [bytes([byte]), every]
    return script


def gzip_bomb(size: int, times: int) -> bytes:
    """`size` zero bytes, gzipped `times` over (the first pass streamed: no `size` in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip stream
    block = b"\0" * (16 << 20)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    data = b"".join(parts) + packer.flush()
    for _ in range(times - 1):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return data


def bearer_challenge(case: str) -> Misbehave:
    """A 401 whose challenge names the case's own token realm on the same server."""

    def answer(h: Honest) -> Script:
        realm = f"http://{h.host}/token/{case}"
        return [
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="%s",service="x"\r\n'
            b"Content-Length: 0\r\n\r\n" % realm.encode()
        ]

    return answer


def error_cut_short(status: int, code: str) -> Misbehave:
    """An error answer whose JSON body stops a third of the way through its Content-Length."""
    body = json.dumps({"errors": [{"code": code, "message": "as the registry says"}]}).encode()
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        status,
        REASONS[status],
        len(body),
    )
    return lambda h: [head + body[: len(body) // 3], CLOSE]


def chunked(body: bytes, size_line: bytes | None = None, *, end: bool = True) -> bytes:
    line = size_line if size_line is not None else b"%x" % len(body)
    return line + b"\r\n" + body + b"\r\n" + (b"0\r\n\r\n" if end else b"")


def _cases() -> list[Case]:
    c: list[Case] = []

    def add(name: str, kind: str, says: str, **kw: object) -> Callable[[Misbehave], Misbehave]:
        def register(fn: Misbehave) -> Misbehave:
            c.append(Case(name, kind, fn, says, **kw))  # type: ignore[arg-type]
            return fn

        return register

    # -- heads --------------------------------------------------------------------------------
    add("head-trickle", "manifest", "request_deadline", slow=True)(lambda h: trickle(h.head(), 0.4))
    add("manifest-body-trickle", "manifest", "request_deadline", slow=True)(
        lambda h: [h.head(), *trickle(h.body, 0.4)]
    )
    add("config-body-trickle", "config", "request_deadline", slow=True)(
        lambda h: [h.head(), *trickle(h.body, 0.4)]
    )
    add("endless-1xx", "manifest", "informational")(
        lambda h: [b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"] * 1000 + h.whole()
    )
    add("switching-protocols", "manifest", "switched protocols")(
        lambda h: [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"]
    )
    add("bare-lf-head", "manifest", "bare LF")(lambda h: h.whole(eol=b"\n"))
    add("http2-status-line", "manifest", "status line")(
        lambda h: h.whole(status_line=b"HTTP/2 200 OK")
    )
    add("no-status-line", "manifest", "status line")(lambda h: [b"hello\r\n\r\n"])
    add("nul-in-head", "manifest", "NUL")(lambda h: h.whole(extra=[("X-Note", "a\0b")]))
    add("head-over-64k", "manifest", "over 65536 bytes")(
        lambda h: [h.head(extra=[(f"X-Pad-{i}", "p" * 1000) for i in range(80)])]
    )
    add("obs-fold", "manifest", "malformed header")(
        lambda h: [h.head().replace(b"\r\n\r\n", b"\r\n  folded\r\n\r\n", 1) + h.body]
    )
    add("header-without-colon", "manifest", "malformed header")(
        lambda h: [h.head().replace(b"\r\n\r\n", b"\r\nno colon here\r\n\r\n", 1) + h.body]
    )
    add("empty-answer", "manifest", "closed")(lambda h: [CLOSE])
    add("reset-mid-head", "manifest", "closed")(lambda h: [h.head()[:20], CLOSE])
    # -- numbers ------------------------------------------------------------------------------
    add("content-length-superscript", "manifest", "Content-Length")(
        lambda h: [h.head(drop=("content-length",), extra=[("Content-Length", "²")]) + h.body]
    )
    add("content-length-arabic-digits", "manifest", "Content-Length")(
        lambda h: [h.head(drop=("content-length",), extra=[("Content-Length", "١٢")]) + h.body]
    )
    # A HEAD's length is never used (the size comes from the verified GET): worked through.
    add("head-content-length-superscript", "head", "", ok=True)(
        lambda h: [h.head(drop=("content-length",), extra=[("Content-Length", "²")])]
    )
    add("two-content-lengths", "manifest", "Content-Length")(
        lambda h: [h.head(extra=[("Content-Length", "7")]) + h.body]
    )
    add("negative-content-length", "manifest", "Content-Length")(
        lambda h: [h.head(drop=("content-length",), extra=[("Content-Length", "-1")]) + h.body]
    )
    add("retry-after-superscript", "manifest", "503")(
        lambda h: [
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xc2\xb9\r\n"
            b"Content-Length: 0\r\n\r\n"
        ]
    )
    add("ratelimit-superscript", "manifest", "429")(
        lambda h: [
            b"HTTP/1.1 429 Too Many Requests\r\nRateLimit-Limit: \xc2\xb2\r\n"
            b"RateLimit-Remaining: \xc2\xb2\r\nContent-Length: 0\r\n\r\n"
        ]
    )
    add("retry-after-a-day", "manifest", "Retry-After")(
        lambda h: [
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 86400\r\nContent-Length: 0\r\n\r\n"
        ]
    )
    # -- framing ------------------------------------------------------------------------------
    add("huge-announced-manifest", "manifest", "announced 100000000 bytes")(
        lambda h: [
            h.head(drop=("content-length",), extra=[("Content-Length", "100000000")]),
            b"{" * 4096,
            CLOSE,
        ]
    )
    add("chunk-size-2-64", "manifest", "18446744073709551615 bytes it announced")(
        lambda h: [
            h.head(drop=("content-length",), extra=[("Transfer-Encoding", "chunked")])
            + b"FFFFFFFFFFFFFFFF\r\n"
            + b"{" * 65536,
            CLOSE,
        ]
    )
    add("chunk-size-not-hex", "manifest", "not 1 to 16 hex digits")(
        lambda h: [
            h.head(drop=("content-length",), extra=[("Transfer-Encoding", "chunked")])
            + chunked(h.body, b"zz")
        ]
    )
    add("chunked-endless", "manifest", "limit")(
        lambda h: (
            [h.head(drop=("content-length",), extra=[("Transfer-Encoding", "chunked")])]
            + [chunked(b" " * 65536, end=False)] * 80
            + [CLOSE]
        )
    )
    add("chunked-cut", "manifest", "closed")(
        lambda h: [
            h.head(drop=("content-length",), extra=[("Transfer-Encoding", "chunked")])
            + chunked(h.body, end=False)[:-5],
            CLOSE,
        ]
    )
    add("body-cut-short", "manifest", "closed the connection after")(
        lambda h: [h.head() + h.body[: len(h.body) // 2], CLOSE]
    )
    add("close-delimited-garbage", "manifest", "does not match its digest")(
        lambda h: [h.head(drop=("content-length",)) + b"not json at all", CLOSE]
    )
    add("bytes-after-head-answer", "head", "", ok=True)(
        lambda h: [h.head() + b"surplus bytes after a bodiless answer"]
    )
    # -- encodings ----------------------------------------------------------------------------
    add("gzip-gzip-bomb-manifest", "manifest", "Content-Encoding")(
        lambda h: [
            h.head(
                drop=("content-length",),
                extra=[("Content-Encoding", "gzip, gzip"), ("Content-Length", str(len(BOMB)))],
            )
            + BOMB
        ]
    )
    add("gzip-bomb-config", "config", "Content-Encoding")(
        lambda h: [
            h.head(
                drop=("content-length",),
                extra=[("Content-Encoding", "gzip"), ("Content-Length", str(len(BOMB)))],
            )
            + BOMB
        ]
    )
    add("deflate-layer", "layer", "Content-Encoding")(
        lambda h: [
            h.head(drop=("content-length",), extra=[("Content-Encoding", "deflate")])
            + zlib.compress(h.body),
            CLOSE,
        ]
    )
    add("br-manifest", "manifest", "Content-Encoding")(
        lambda h: [h.head(extra=[("Content-Encoding", "br")]) + h.body]
    )
    # -- documents ----------------------------------------------------------------------------
    add("deep-json-manifest", "manifest", "", manifest=b"[" * 200_000 + b"]" * 200_000)(
        lambda h: h.whole()
    )
    add("manifest-not-json", "manifest", "", manifest=b"\xff\xfe garbage")(lambda h: h.whole())
    add("manifest-digest-mismatch", "manifest", "digest")(
        lambda h: _with_body(h, h.body.replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    )
    add("manifest-over-4-mib", "manifest", "limit", manifest=_many_layers(60_000))(
        lambda h: h.whole()
    )
    add("config-wrong-bytes", "config", "digest")(lambda h: _with_body(h, h.body[:-1] + b" "))
    add("layer-wrong-bytes", "layer", "digest")(
        lambda h: [h.head() + h.body[:-1] + bytes([h.body[-1] ^ 1])]
    )
    add("layer-trickle", "layer", "min_transfer_rate", slow=True)(
        lambda h: [h.head(), *trickle(h.body, 0.3)]
    )
    add("layer-cut-short", "layer", "closed the connection after")(
        lambda h: [h.head() + h.body[:10], CLOSE]
    )
    # -- statuses, realms, redirects ----------------------------------------------------------
    # An error answer cut short is fetched again (it may be whole next time), then fails
    # saying so, with its status.
    add("404-error-body-cut-short", "manifest", "answered 404, its error body cut short")(
        error_cut_short(404, "MANIFEST_UNKNOWN")
    )
    add(
        "401-error-body-cut-short", "manifest", "answered 401, its error body cut short", alone=True
    )(error_cut_short(401, "UNAUTHORIZED"))
    add("always-500", "manifest", "500")(
        lambda h: [b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!"]
    )
    add("html-error-body", "manifest", "500")(
        lambda h: [
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
            b"Content-Length: 33\r\n\r\n<img src=x onerror=alert(1)>oops!"
        ]
    )
    add("401-without-challenge", "manifest", "401", alone=True)(
        lambda h: [b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"]
    )
    add("realm-elsewhere-401-loop", "manifest", "", alone=True)(
        lambda h: [
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="http://127.0.0.1:9/token"'
            b',service="x"\r\nContent-Length: 0\r\n\r\n'
        ]
    )
    add("redirect-loop", "manifest", "redirects")(
        lambda h: [
            b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % h.path.encode()
        ]
    )
    add("redirect-to-file", "manifest", "refusing a redirect")(
        lambda h: [
            b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n"
        ]
    )
    add("redirect-without-location", "manifest", "without Location")(
        lambda h: [b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"]
    )
    add(
        "token-answer-bomb",
        "manifest",
        "Content-Encoding",
        alone=True,
        token=lambda h: [
            h.head(
                drop=("content-length",),
                extra=[("Content-Encoding", "gzip"), ("Content-Length", str(len(BOMB)))],
            )
            + BOMB
        ],
    )(bearer_challenge("token-answer-bomb"))
    add(
        "token-answer-cut-short",
        "manifest",
        "token answer cut short",
        alone=True,
        token=lambda h: [h.head() + h.body[:5], CLOSE],
    )(bearer_challenge("token-answer-cut-short"))
    return c


def _with_body(h: Honest, body: bytes) -> Script:
    head = h.head(drop=("content-length",), extra=[("Content-Length", str(len(body)))])
    return [head + (b"" if h.method == "HEAD" else body)]


def _many_layers(count: int) -> bytes:
    value = json.loads(image_for("manifest-over-4-mib").manifest)
    value["layers"] = value["layers"] * count
    return json.dumps(value).encode()


def image_for(repository: str) -> Image:
    """Each case's own image (own layer, config and manifest digests): what one case's honest
    answers put in the state directory's caches must not spare another case its requests."""
    layer = make_layer({"f": repository.encode() * 100})
    return Image("linux", "amd64", [layer], config_extra={"comment": repository})


BOMB = gzip_bomb(1 << 30, 2)  # 1 GiB of zeros; a few KB on the wire
CASES = _cases()
BY_NAME = {case.name: case for case in CASES}


@dataclass
class HostileRegistry:
    """The server; `host` is its 127.0.0.1:port. Serves `hostile/<case>:1` for every case and
    `hostile/good:1` honestly."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    alone: dict[str, HostileRegistry] = field(default_factory=dict)  # case -> its own server

    def host_of(self, case: str) -> str:
        server = self.alone.get(case)
        return server.host if server is not None else self.host

    def __post_init__(self) -> None:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._images: dict[str, Image] = {}

    def _image(self, name: str) -> Image:
        image = self._images.get(name)
        if image is None:
            image = self._images[name] = image_for(name)
        return image

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return
            data += more
        method, path, _ = data.split(b"\r\n", 1)[0].decode().split(" ", 2)
        request_head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        self.requests.append((method, path))
        if path.startswith("/token/"):
            kind, honest = "token", self._token(method)
            name = path.partition("?")[0].removeprefix("/token/")
        else:
            repo = path.removeprefix("/v2/").rpartition("/manifests/")[0]
            repo = repo or path.removeprefix("/v2/").rpartition("/blobs/")[0]
            name = repo.removeprefix("hostile/")
            kind, honest = self._honest(method, path, name)
        case = BY_NAME.get(name)
        tokened = "Authorization" in request_head
        if case is None:
            script = honest.whole()
        elif kind == "token":
            script = case.token(honest) if case.token is not None else honest.whole()
        elif case.kind == kind and not (case.token is not None and tokened):
            script = case.misbehave(honest)
        else:
            script = honest.whole()
        try:
            for piece in script:
                if piece is CLOSE:
                    break
                if isinstance(piece, float):
                    time.sleep(piece)
                else:
                    sock.sendall(piece)  # type: ignore[arg-type]
        except OSError:
            pass  # the client went away: its bound worked
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _token(self, method: str) -> Honest:
        body = b'{"token":"t"}'
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        return Honest(200, [*headers, ("Connection", "close")], body, method, host=self.host)

    def _honest(self, method: str, path: str, name: str) -> tuple[str, Honest]:
        close = [("Connection", "close")]
        where = {"path": path, "host": self.host}
        if path == "/v2/":
            headers = [("Content-Type", "application/json"), ("Content-Length", "2"), *close]
            return "ping", Honest(200, headers, b"{}", method, **where)
        image = self._image(name)
        case = BY_NAME.get(name)
        repo, _, reference = path.removeprefix("/v2/").rpartition("/manifests/")
        body = case.manifest if case is not None and case.manifest is not None else image.manifest
        if repo and reference in ("1", _sha(body)):
            headers = [
                ("Content-Type", OCI_MANIFEST),
                ("Docker-Content-Digest", _sha(body)),
                ("Content-Length", str(len(body))),
                *close,
            ]
            kind = "head" if method == "HEAD" else "manifest"
            return kind, Honest(200, headers, body, method, **where)
        repo, _, digest = path.removeprefix("/v2/").rpartition("/blobs/")
        blobs = {_sha(image.config): ("config", image.config)}
        blobs.update({layer.digest: ("layer", layer.blob) for layer in image.layers})
        if repo and digest in blobs:
            kind, body = blobs[digest]
            headers = [
                ("Content-Type", "application/octet-stream"),
                ("Docker-Content-Digest", digest),
                ("Content-Length", str(len(body))),
                *close,
            ]
            return kind, Honest(200, headers, body, method, **where)
        body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such thing"}]}'
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *close]
        return "other", Honest(404, headers, body, method, **where)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
