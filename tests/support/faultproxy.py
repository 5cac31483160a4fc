"""A fault-injecting HTTP proxy in front of a real registry.

Requests pass through to the registry unchanged (Host header included, so the registry's upload
`Location`s point back at the proxy) unless a `Fault` matches them. Each fault fires a given
number of times, then the proxy is transparent again: that is how a test shows that a client
retries and converges, or fails clearly when the fault does not go away.

Faults act on the request (answer it without forwarding, rewrite its query) or on the answer
(cut the connection mid-body with a reset, truncate the body, flip a byte, drop or set a header,
swap the body, redirect elsewhere, make `Location` relative). `rate` throttles bodies in both
directions so that transfers last long enough to be interrupted.

Two options act on every answer: `headers` are added to each, and a `quota` (a server's request
budget: `limit` requests a `window`) counts requests down, says what is left in RateLimit
headers, and answers 429 to the requests over it until the window ends.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    method: str  # "GET", "PUT", ... or "*"
    path: str  # regex searched in the request path (with query)
    kind: str
    times: int = 1  # how many matching requests it hits; -1: all of them
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    after: int = 0  # bytes of the answer's body sent before a cut
    where: Callable[[str], str] | None = None  # redirect target for a request path
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times >= 0 and self.fired >= self.times:
            return False
        plain = urllib.parse.unquote(path)
        return self.method in ("*", method) and re.search(self.path, plain) is not None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    fault: str | None
    headers: dict[str, str]
    at: float  # time.monotonic() when the answer went out
    arrived: float  # time.monotonic() when the request line came in
    client: tuple[str, int]  # the client's address: one connection, one client process


@dataclass
class Quota:
    """A server's request budget: `limit` requests in a window of `window` seconds, the window
    starting at the first request after the last one ended. `style` "ietf" answers
    `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`; "docker" as Docker Hub does,
    `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`, and no reset; "none"
    says nothing until it refuses (429 with Retry-After), as a registry without the headers."""

    limit: int
    window: float
    style: str = "ietf"
    started: float | None = None
    used: int = 0
    refused: int = 0

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request: whether it is within the budget, and the headers that say so."""
        if self.started is None or now >= self.started + self.window:
            self.started, self.used = now, 0
        allowed = self.used < self.limit
        if allowed:
            self.used += 1
        else:
            self.refused += 1
        left = self.limit - self.used
        reset = math.ceil(self.started + self.window - now)  # never earlier than it is
        if self.style == "none":
            headers = {}
        elif self.style == "docker":
            w = int(self.window)
            headers = {
                "ratelimit-limit": f"{self.limit};w={w}",
                "ratelimit-remaining": f"{left};w={w}",
            }
        else:
            headers = {
                "RateLimit-Limit": str(self.limit),
                "RateLimit-Remaining": str(left),
                "RateLimit-Reset": str(reset),
            }
        if not allowed:
            headers["Retry-After"] = str(reset)
        return allowed, headers


KINDS = {
    "status",  # answer with `status`, `headers`, `body`; the registry never sees the request
    "reset",  # forward, send headers and `after` body bytes, then reset the connection
    "truncate",  # forward, send headers (full Content-Length) and `after` bytes, then close
    "flip",  # forward, flip one bit of body byte `after`
    "drop_header",  # forward, remove the headers named in `headers`
    "set_header",  # forward, set the headers in `headers` (a HEAD's Content-Length, say)
    "body",  # forward, replace the body with `body` (Content-Length follows)
    "no_mount",  # strip mount/from from the query: the registry opens an upload (202)
    "relative_location",  # forward, rewrite an absolute Location to a relative one
    "redirect",  # answer `status` (307) with Location `where(path)`
}


class FaultProxy:
    def __init__(self, upstream: str, rate: float | None = None) -> None:
        self.upstream = upstream  # host:port of the registry
        self.rate = rate  # bytes per second for bodies, None: as fast as possible
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.headers: dict[str, str] = {}  # added to every answer
        self.quota: Quota | None = None
        self._lock = threading.Lock()
        self._answer = threading.local()  # this request's extra answer headers (per thread)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def finish(self) -> None:
                with contextlib.suppress(OSError):  # a fault closed the connection under us
                    super().finish()

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def add(self, fault: Fault) -> Fault:
        assert fault.kind in KINDS, fault.kind
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def _record(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        fault: Fault | str | None,
        arrived: float,
    ) -> None:
        with self._lock:
            self.seen.append(
                Seen(
                    handler.command,
                    handler.path,
                    status,
                    fault.kind if isinstance(fault, Fault) else fault,
                    dict(handler.headers.items()),
                    time.monotonic(),
                    arrived,
                    handler.client_address,
                )
            )

    def _read_body(self, handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self._throttled_read(handler, size)
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return self._throttled_read(handler, length)

    def _throttled_read(self, handler: BaseHTTPRequestHandler, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            piece = handler.rfile.read(min(65536, length - len(out)))
            if not piece:
                raise ConnectionError("client went away mid-body")
            out += piece
            if self.rate:
                time.sleep(len(piece) / self.rate)
        return bytes(out)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        method, path = handler.command, handler.path
        body = self._read_body(handler)
        extra = dict(self.headers)
        if self.quota is not None:
            with self._lock:
                allowed, said = self.quota.take(arrived)
            extra.update(said)
            if not allowed:
                self._answer.headers = extra
                self._record(handler, 429, "quota", arrived)
                headers = {"Content-Length": "0"}
                return self._send(handler, 429, headers, b"", head=True)
        self._answer.headers = extra
        fault = self._pick(method, path)
        if fault is not None and fault.kind == "status":
            self._record(handler, fault.status, fault, arrived)
            headers = {"Content-Length": str(len(fault.body)), **fault.headers}
            return self._send(handler, fault.status, headers, fault.body, head=method == "HEAD")
        if fault is not None and fault.kind == "redirect":
            assert fault.where is not None
            self._record(handler, fault.status, fault, arrived)
            headers = {"Location": fault.where(path), "Content-Length": "0"}
            return self._send(handler, fault.status, headers, b"", head=True)
        if fault is not None and fault.kind == "no_mount":
            parts = urllib.parse.urlsplit(path)
            query = [
                (k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in ("mount", "from")
            ]
            path = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        status, headers, answer = self._forward(handler, method, path, body)
        self._record(handler, status, fault, arrived)
        head = method == "HEAD"
        if fault is None or fault.kind == "no_mount":
            return self._send(handler, status, headers, answer, head=head)
        if fault.kind == "drop_header":
            drop = {name.lower() for name in fault.headers}
            headers = {k: v for k, v in headers.items() if k.lower() not in drop}
            return self._send(handler, status, headers, answer, head=head)
        if fault.kind == "set_header":
            names = {name.lower() for name in fault.headers}
            headers = {k: v for k, v in headers.items() if k.lower() not in names}
            return self._send(handler, status, {**headers, **fault.headers}, answer, head=head)
        if fault.kind == "relative_location":
            location = headers.get("Location", "")
            split = urllib.parse.urlsplit(location)
            if split.scheme:
                headers["Location"] = urllib.parse.urlunsplit(("", "", *split[2:]))
            return self._send(handler, status, headers, answer, head=head)
        if fault.kind == "flip":
            changed = bytearray(answer)
            if fault.after < len(changed):
                changed[fault.after] ^= 0x01
            return self._send(handler, status, headers, bytes(changed), head=head)
        if fault.kind == "body":
            headers["Content-Length"] = str(len(fault.body))
            return self._send(handler, status, headers, fault.body, head=head)
        # reset / truncate: headers promise the whole body, then the connection ends early.
        handler.close_connection = True
        self._send(handler, status, headers, answer[: fault.after], head=head)
        if fault.kind == "reset":
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        if fault.kind == "truncate":
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        handler.connection.close()
        return None

    def _forward(
        self, handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue
                conn.putheader(name, value)
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            answer = response.read()
            headers = {
                k: v
                for k, v in response.getheaders()
                if k.lower() not in ("transfer-encoding", "connection")
            }
            if method != "HEAD":
                headers["Content-Length"] = str(len(answer))
            return response.status, headers, answer
        finally:
            conn.close()

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        head: bool,
    ) -> None:
        handler.send_response_only(status)
        for name, value in {**headers, **getattr(self._answer, "headers", {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            for offset in range(0, len(body), 65536):
                handler.wfile.write(body[offset : offset + 65536])
                if self.rate:
                    time.sleep(min(65536, len(body) - offset) / self.rate)
        handler.wfile.flush()
