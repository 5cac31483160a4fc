"""The daemon's HTTP surface: GET /healthz, /readyz, /metrics, /status; POST /hooks/registry,
/hooks/git; the status page (GET /, /specs/NAME, /static/..., ui/). A small ASGI callable served by
hypercorn in the daemon's own event loop.

Nothing here may block the loop: /healthz answers while a reconcile runs and while slow
clients dribble bytes. /metrics, /status and the page are rendered in a worker thread (the
status board publishes immutable views, so a thread reads one without a lock). /status carries
an ETag (the board's version): If-None-Match with it is answered 304 without building the body.

Limits, and who enforces them:
- hypercorn: `read_timeout` (a connection that sends nothing for that long is closed),
  `keep_alive_timeout` (idle kept-alive connections; hypercorn's idle timer also runs from a
  connection's start until a request's headers are complete, so it is the header deadline: it
  is set to at most the read timeout), `h11_max_incomplete_size` (the header cap: an
  unfinished request head over 16 KiB is 431; a head that arrives whole in one read of up to
  64 KiB is parsed, so memory per connection stays bounded either way).
- this module: the body cap (413 on a Content-Length over it, before reading; 413 once a
  streamed body passes it), the body deadline (408 when the whole body has not arrived within
  the read timeout), and the connection bound. hypercorn has no option for the last, so the
  listening socket is ours (`_BoundedSocket`): it counts the connections it accepts and the
  ones closed, and beyond the bound answers 503 at once and closes (before the request is read).
- guard.py: who may call the hooks, and how often.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger
from hypercorn.typing import ASGIFramework
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler.daemon.guard import HookAuth
from reconciler.daemon.hooks import HookError, Push, parse_registry_hook
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.relay import RELAYED, Relay, Relayed, own_peers
from reconciler.daemon.status import StatusBoard
from reconciler.daemon.ui.site import SECURITY_HEADERS, StatusSite, accepts_gzip
from reconciler.settings import Settings
from reconciler.store.registry.budget import TokenBucket
from reconciler.store.registry.numbers import decimal

log = logging.getLogger("reconciler.daemon.http")

HEADER_LIMIT = 16 * 1024
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)
_ROUTES = {
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
    "/status": "GET",
    "/hooks/registry": "POST",
    "/hooks/git": "POST",
}

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class HookTargets:
    """What the hooks do in the daemon: queue the specs pushes concern (returns how many), and
    read the specs directory again."""

    pushes: Callable[[Sequence[Push]], Awaitable[int]]
    rescan: Callable[[], None]


class _Refused(Exception):
    """A request answered early: a status and a reason (for the client)."""

    def __init__(self, status: int, reason: str, result: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.result = status, reason, result


class _Connection(socket.socket):
    """An accepted connection that tells its listener once when it is closed."""

    _on_close: Callable[[], None] | None = None

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        super().close()


class _BoundedSocket(socket.socket):
    """The listening socket: at most `bound` accepted connections open at once."""

    bound = 0
    open_connections = 0

    def accept(self) -> tuple[socket.socket, Any]:
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = _Connection(self.family, self.type, self.proto, fileno=fd)
        if self.open_connections >= self.bound:
            try:
                conn.setblocking(False)
                conn.send(_BUSY)  # a fresh socket's buffer takes it whole
            except OSError:
                pass  # gone already, or full: it is closed all the same
            conn.close()
            log.debug("connection refused: %d open, the bound", self.open_connections)
            # asyncio's accept loop reads this as "nothing to accept now" and carries on.
            raise ConnectionAbortedError("over the connection bound")
        self.open_connections += 1
        conn._on_close = self._release
        return conn, address

    def _release(self) -> None:
        self.open_connections -= 1


class _Config(Config):
    """hypercorn's settings, serving on our bound socket instead of one it would create."""

    def __init__(self, listening: socket.socket) -> None:
        super().__init__()
        self._listening = listening

    def create_sockets(self) -> Sockets:
        return Sockets([], [self._listening], [])


class _QuietLogger(Logger):
    """hypercorn's own lines (its start, errors of clients' connections) into our log at
    debug; no access log."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.access_logger = None
        self.error_logger = log

    async def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.debug(message, *args, **kwargs)

    async def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.debug(message, *args, **kwargs)

    async def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.debug(message, *args, **kwargs)

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.debug(message, *args, **kwargs)

    async def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.debug(message, *args, exc_info=True, **kwargs)


def _bind(listen: str) -> tuple[_BoundedSocket, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the operator chose the address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _BoundedSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
        sock.listen(128)  # listening before the port is announced: a client may come at once
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


def _close_at_eof() -> None:
    """Make hypercorn close a connection as soon as its client has closed it.

    hypercorn 0.17's TCPServer reads until EOF, then hands its protocol a Closed event; on an
    idle HTTP/1.1 connection (between requests, as a registry's notifier leaves it) nothing
    comes of it, and the socket is closed only when the connection's task group ends, that is
    when the keep-alive idle timer fires. Until then it sits in CLOSE-WAIT and holds a slot
    of http_max_connections (measured before: 230 of them under 10 hook calls a second, and
    40 of 1,380 calls answered 503). hypercorn offers no hook to change the server it builds
    per connection, so its read loop is wrapped once, here: after EOF with no request in
    flight, the connection is closed at once (hypercorn's own _close, which it calls again
    later harmlessly)."""
    from hypercorn.asyncio.tcp_server import TCPServer

    if getattr(TCPServer._read_data, "_closes_at_eof", False):
        return
    read_data = TCPServer._read_data

    async def read_then_close(self: TCPServer) -> None:
        await read_data(self)
        # Only between requests: a client that half-closes after its request still gets the
        # answer (the stream in flight closes the connection itself when done).
        protocol = getattr(self.protocol, "protocol", None)
        if getattr(protocol, "stream", None) is None:
            await self._close()

    read_then_close._closes_at_eof = True  # type: ignore[attr-defined]
    TCPServer._read_data = read_then_close  # type: ignore[method-assign]


class HttpServer:
    def __init__(
        self, settings: Settings, board: StatusBoard, metrics: Metrics, targets: HookTargets
    ) -> None:
        self._settings = settings
        self._app = _App(settings, board, metrics, targets)
        self._stop = asyncio.Event()
        self._socket: _BoundedSocket | None = None
        self.port = 0

    def open(self) -> int:
        """Read the hooks' secrets and bind the port (SettingsError, OSError); the port."""
        hooks = self._settings.hooks
        self._app.auth = HookAuth.load(hooks)
        self._socket, self.port = _bind(self._settings.listen)
        self._socket.bound = self._settings.http_max_connections
        peers = own_peers(hooks.peers, self.port)
        self._app.relay = Relay(
            peers,
            self._app.auth,
            self._app.metrics.hook_relays,
            sender=f"{socket.gethostname()}:{self.port}",
            timeout=hooks.relay_timeout,
            queue=hooks.relay_queue,
        )
        if peers:
            log.info("hook calls are relayed to %d peers: %s", len(peers), ", ".join(peers))
        return self.port

    async def serve(self) -> None:
        assert self._socket is not None  # noqa: S101 - open() first
        _close_at_eof()
        settings = self._settings
        config = _Config(self._socket)
        config.accesslog = None
        config.errorlog = None
        config.logger_class = _QuietLogger
        config.read_timeout = settings.http_read_timeout
        config.keep_alive_timeout = min(
            settings.http_keep_alive_timeout, float(settings.http_read_timeout)
        )
        config.h11_max_incomplete_size = HEADER_LIMIT
        config.h2_max_concurrent_streams = 16  # h2c (prior knowledge) is one connection too
        config.include_server_header = False
        config.graceful_timeout = 2.0
        app = cast(ASGIFramework, self._app)  # its scopes and messages, as dicts
        try:
            await serve(app, config, shutdown_trigger=self._stop.wait, mode="asgi")
        finally:
            if self._app.relay is not None:
                await self._app.relay.aclose()

    def stop(self) -> None:
        self._stop.set()


class _App:
    def __init__(
        self, settings: Settings, board: StatusBoard, metrics: Metrics, targets: HookTargets
    ) -> None:
        self.auth = HookAuth()
        self.relay: Relay | None = None
        self.metrics = metrics
        self._hooks = settings.hooks
        self._read_timeout = float(settings.http_read_timeout)
        self._board = board
        self._metrics = metrics
        self._targets = targets
        self._buckets: dict[str, TokenBucket] = {}
        self._site = StatusSite(settings, board, metrics) if settings.ui else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/" or path.startswith(("/static/", "/specs/")):
            await self._page(scope, send)
            return
        wanted = _ROUTES.get(path)
        hook = path.removeprefix("/hooks/") if path.startswith("/hooks/") else None
        if wanted is None or (hook is not None and not self._hook_on(hook)):
            await _respond(send, 404, b"not found\n")
        elif method != wanted:
            await _respond(send, 405, b"method not allowed\n", [(b"allow", wanted.encode())])
        elif hook is not None:
            await self._hook(hook, scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            ready = self._board.ready
            await _respond(send, 200 if ready else 503, b"ready\n" if ready else b"starting\n")
        elif path == "/metrics":
            body = await asyncio.to_thread(generate_latest, self._metrics.registry)
            await _respond(send, 200, body, content_type=CONTENT_TYPE_LATEST)
        else:
            await self._status(scope, send)

    async def _status(self, scope: Scope, send: Send) -> None:
        etag = f'"{self._board.version()}"'  # before the snapshot: never a stale 304
        headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        if _header(scope, b"if-none-match") in (etag, f"W/{etag}"):
            await _respond(send, 304, b"", headers, "application/json")
            return
        body = await asyncio.to_thread(self._status_body)
        await _respond(send, 200, body, headers, "application/json")

    def _status_body(self) -> bytes:
        return json.dumps(self._board.snapshot(), indent=2).encode() + b"\n"

    async def _page(self, scope: Scope, send: Send) -> None:
        """The status page and its files: 404 when `ui` is off, GET only."""
        site = self._site
        if site is None:
            await _respond(send, 404, b"not found\n")
            return
        if scope["method"] != "GET":
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET")])
            return
        query = scope.get("query_string", b"").decode("latin-1")
        tag = _header(scope, b"if-none-match")
        gzip_ok = accepts_gzip(_header(scope, b"accept-encoding"))
        answer = await asyncio.to_thread(site.answer, scope["path"], query, tag, gzip_ok)
        headers = [*SECURITY_HEADERS, (b"cache-control", b"no-cache"), *answer.headers]
        await _respond(send, answer.status, answer.body, headers, answer.content_type)

    def _hook_on(self, hook: str) -> bool:
        """Whether a hook answers at all (404 when off)."""
        return self.auth.enabled or (hook == "git" and self._hooks.git_from_loopback)

    async def _hook(self, hook: str, scope: Scope, receive: Receive, send: Send) -> None:
        received = self._metrics.hooks_received
        try:
            result = await self._handle_hook(hook, scope, receive)
        except _Refused as refused:
            received.labels(hook, refused.result).inc()
            extra = [(b"connection", b"close")] if refused.status in (408, 413) else []
            if refused.status == 429:
                extra.append((b"retry-after", b"1"))
            body = json.dumps({"error": refused.reason}).encode() + b"\n"
            await _respond(send, refused.status, body, extra, "application/json")
            return
        received.labels(hook, "accepted").inc()
        await _respond(send, 202, json.dumps(result).encode() + b"\n", [], "application/json")

    async def _handle_hook(self, hook: str, scope: Scope, receive: Receive) -> dict[str, int]:
        loop_now = asyncio.get_running_loop().time()
        per_minute = self._hooks.max_per_minute
        bucket = self._buckets.setdefault(
            hook, TokenBucket.full(per_minute / 60.0, per_minute, loop_now)
        )
        if bucket.wait(loop_now) > 0:
            raise _Refused(
                429, f"more than {self._hooks.max_per_minute} calls a minute", "rate_limited"
            )
        bucket.take(loop_now)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self._body(headers, receive)
        refusal = self.auth.refusal(headers, body)
        client = (scope.get("client") or ("?",))[0]
        sidecar = hook == "git" and self._hooks.git_from_loopback and _loopback(client)
        if refusal is not None and not sidecar:
            log.warning("refused a call of /hooks/%s from %s: %s", hook, client, refusal)
            raise _Refused(401, "unauthorized", "unauthorized")
        relayed = headers.get(RELAYED)
        if hook == "git":
            self._targets.rescan()
            if refusal is None:  # a sidecar's call is its own replica's: each has its git-sync
                self._relay_on(hook, headers, body, relayed)
            return {"rescan": 1}
        try:
            pushes = parse_registry_hook(body)
        except HookError as exc:
            log.info("refused a call of /hooks/registry: %s", exc)
            raise _Refused(400, str(exc), "bad_request") from None
        queued = await self._targets.pushes(pushes)
        self._metrics.hook_specs_queued.inc(queued)
        self._relay_on(hook, headers, body, relayed)
        if relayed is not None:
            log.debug("/hooks/registry relayed by %s: %d specs queued", relayed, queued)
        return {"pushes": len(pushes), "queued": queued}

    def _relay_on(
        self, hook: str, headers: dict[str, str], body: bytes, relayed: str | None
    ) -> None:
        """An accepted call, sent on to the peers unless a peer sent it."""
        if self.relay is not None and relayed is None:
            kind = headers.get("content-type", "application/json")
            self.relay.submit(Relayed(hook, body, kind))

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        cap = self._hooks.max_body_bytes
        length = headers.get("content-length")
        declared = decimal(length.strip(" \t")) if length is not None else None
        if length is not None and declared is None:
            raise _Refused(400, "the Content-Length is not a number", "bad_request")
        if declared is not None and declared > cap:
            raise _Refused(413, f"the body is over {cap} bytes", "too_large")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._read_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise _Refused(400, "the client went away", "bad_request")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > cap:
                        raise _Refused(413, f"the body is over {cap} bytes", "too_large")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(408, "the body did not arrive in time", "bad_request") from None


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first, if repeated), or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _loopback(client: object) -> bool:
    """Whether a peer address is loopback (127.0.0.0/8, ::1, v4-mapped loopback)."""
    try:
        address = ipaddress.ip_address(str(client))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: str = "text/plain",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                # A 304 has no body, and no length of one: its ETag names the one the client has.
                *([] if status == 304 else [(b"content-length", str(len(body)).encode())]),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
