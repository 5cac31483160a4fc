"""The registry store's HTTP/1.1 transport (store/registry/http1.py) against raw socket servers
whose every byte is scripted: framing, keep-alive, stale connections, bad answers, the request's
wire bytes, the pool's slots, read timeouts and TLS. Each server records the bytes it received
and the connections it accepted, so a test sees what the transport really did on the wire."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from reconciler.store.registry import http1
from reconciler.store.registry.http import _transport
from reconciler.store.registry.http1 import Origin
from tests.support.pki import make_pki

# An outer bound, far above every timeout below: a test that reaches it found a hang.
HANG = 20.0
# How long a server waits for a state a test expects (held requests, a barrier): a wrong
# transport makes the wait run out, and the test fails instead of hanging.
EXPECT = 5.0
TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
T = TypeVar("T")


# -- the scripted server ------------------------------------------------------------------------


class _Token:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUEST = _Token("REQUEST")  # read one whole request (head and body, as it is framed)
HEAD = _Token("HEAD")  # read a request's head only
CLOSE = _Token("CLOSE")  # close the connection (FIN)
RESET = _Token("RESET")  # close it with a TCP reset


@dataclass(frozen=True)
class Pause:
    """Sleep: only where a test is about time or about how bytes are split into reads."""

    seconds: float


@dataclass
class Seen:
    """One request as the server read it."""

    head: bytes  # the request line and headers, with the blank line
    body: bytes  # decoded: chunked framing removed

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> list[bytes]:
        found = []
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.lower() == name.lower():
                found.append(value.strip())
        return found


Step = bytes | _Token | Pause | threading.Event | threading.Barrier | Callable[["RawServer"], Any]


@dataclass
class _Conn:
    index: int
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    requests: list[Seen] = field(default_factory=list)
    closed_by_client: bool = False


class _Wire:
    """Reads requests off a server-side socket, recording every byte."""

    def __init__(self, conn: _Conn, sock: socket.socket) -> None:
        self._conn = conn
        self._sock = sock
        self._buffer = b""

    def _more(self) -> bool:
        data = self._sock.recv(65536)
        if not data:
            self._conn.closed_by_client = True
            return False
        self._conn.received += data
        self._buffer += data
        return True

    def until(self, separator: bytes) -> bytes | None:
        while (end := self._buffer.find(separator)) < 0:
            if not self._more():
                return None
        end += len(separator)
        found, self._buffer = self._buffer[:end], self._buffer[end:]
        return found

    def exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not self._more():
                return None
        found, self._buffer = self._buffer[:size], self._buffer[size:]
        return found

    def request(self, body: bool = True) -> Seen | None:
        head = self.until(b"\r\n\r\n")
        if head is None:
            return None
        seen = Seen(head, b"")
        if not body:
            return seen
        if b"chunked" in b",".join(seen.header(b"Transfer-Encoding")).lower():
            parts = []
            while True:
                line = self.until(b"\r\n")
                if line is None:
                    return None
                size = int(line[:-2].split(b";")[0], 16)
                if size == 0:
                    while self.until(b"\r\n") not in (None, b"\r\n"):
                        pass
                    break
                part = self.exactly(size)
                if part is None or self.until(b"\r\n") != b"\r\n":
                    return None
                parts.append(part)
            seen.body = b"".join(parts)
        elif lengths := seen.header(b"Content-Length"):
            data = self.exactly(int(lengths[0]))
            if data is None:
                return None
            seen.body = data
        return seen

    def hold(self) -> None:
        """The script is over: keep the connection open until the client closes it."""
        while self._more():
            pass


class RawServer:
    """A TCP (or TLS) server on 127.0.0.1 that plays `scripts[i]` on its i-th accepted
    connection (`default` on the ones after), once or, with `repeat`, until the client closes.
    When a script is over, the connection stays open (recording what comes) until the client
    closes it."""

    def __init__(
        self,
        scripts: Sequence[Sequence[Step]] = (),
        default: Sequence[Step] = (),
        repeat: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.scripts = [list(script) for script in scripts]
        self.default = list(default)
        self.repeat = repeat
        self.tls = tls
        self.conns: list[_Conn] = []
        self.open = 0
        self.max_open = 0
        self.held = 0  # connections waiting at an event, barrier or hold function
        self.max_held = 0
        self.errors: list[BaseException] = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def requests(self, index: int) -> list[Seen]:
        return self.conns[index].requests

    def all_requests(self) -> list[Seen]:
        return [seen for conn in self.conns for seen in conn.requests]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = EXPECT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_event(self, event: threading.Event) -> bool:
        """Wait for `event` unless the server stops first."""
        while not event.wait(0.05):
            if self.stopping.is_set():
                return False
        return True

    def start(self) -> None:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            conns = list(self.conns)
        for conn in conns:
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(HANG)
        self._listener.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(HANG)
            with self.cond:
                conn = _Conn(len(self.conns), sock)
                self.conns.append(conn)
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self.cond.notify_all()
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _blocking(self, step: Step) -> bool:
        with self.cond:
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            self.cond.notify_all()
        try:
            if isinstance(step, threading.Event):
                return self.wait_event(step)
            if isinstance(step, threading.Barrier):
                step.wait(EXPECT)
                return True
            assert callable(step)
            return step(self) is not False
        finally:
            with self.cond:
                self.held -= 1
                self.cond.notify_all()

    def _serve(self, conn: _Conn) -> None:
        script = self.scripts[conn.index] if conn.index < len(self.scripts) else self.default
        sock = conn.sock
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            wire = _Wire(conn, sock)
            while True:
                for step in script:
                    if step is REQUEST or step is HEAD:
                        seen = wire.request(body=step is REQUEST)
                        if seen is None:
                            return
                        with self.cond:
                            conn.requests.append(seen)
                            self.cond.notify_all()
                    elif isinstance(step, bytes):
                        sock.sendall(step)
                    elif isinstance(step, Pause):
                        time.sleep(step.seconds)
                    elif step is CLOSE:
                        return
                    elif step is RESET:
                        conn.sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
                        )
                        return
                    elif not self._blocking(step):
                        return
                if not self.repeat or not script:
                    break
            wire.hold()
        except (OSError, threading.BrokenBarrierError) as exc:
            if not self.stopping.is_set():
                self.errors.append(exc)
        finally:
            sock.close()
            with self.cond:
                self.open -= 1
                self.cond.notify_all()


@contextmanager
def raw_server(
    scripts: Sequence[Sequence[Step]] = (),
    default: Sequence[Step] = (),
    repeat: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Iterator[RawServer]:
    server = RawServer(scripts, default, repeat, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def answer(
    body: bytes = b"",
    status: bytes = b"200 OK",
    headers: Sequence[bytes] = (),
    length: bool = True,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    lines = [version + b" " + status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def ok(body: bytes = b"ok") -> list[Step]:
    """An exchange: read a request, answer 200 with `body`."""
    return [REQUEST, answer(body)]


# -- the client side ------------------------------------------------------------------------------


def request(
    method: str, url: str, timeouts: dict[str, float] | None = None, **kw: Any
) -> httpx.Request:
    return httpx.Request(method, url, extensions={"timeout": timeouts or TIMEOUTS}, **kw)


async def fetch(
    origin: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    timeouts: dict[str, float] | None = None,
    **kw: Any,
) -> tuple[httpx.Response, bytes]:
    response = await origin.handle_async_request(request(method, url, timeouts, **kw))
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    return response, body


async def get(origin: httpx.AsyncBaseTransport, url: str, **kw: Any) -> bytes:
    response, body = await fetch(origin, "GET", url, **kw)
    assert response.status_code == 200
    return body


def run(
    main: Callable[[Origin], Awaitable[T]],
    max_connections: int = 4,
    max_idle: int = 4,
    ssl_context: ssl.SSLContext | None = None,
) -> T:
    async def outer() -> T:
        origin = Origin(ssl_context, max_connections=max_connections, max_idle=max_idle)
        try:
            async with asyncio.timeout(HANG):
                return await main(origin)
        finally:
            await origin.aclose()

    return asyncio.run(outer())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- 1. framing ----------------------------------------------------------------------------------


def test_a_content_length_body_in_one_piece() -> None:
    body = bytes(range(256)) * 40
    with raw_server([[REQUEST, answer(body), *ok(b"again")]]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            return await get(origin, server.url("/a")), await get(origin, server.url("/b"))

        assert run(main) == (body, b"again")
        assert server.accepted == 1
        assert [seen.line for seen in server.requests(0)] == [
            b"GET /a HTTP/1.1",
            b"GET /b HTTP/1.1",
        ]


def test_a_content_length_body_split_across_small_sends_with_pauses() -> None:
    body = b"0123456789abcdefghij" * 5
    pieces: list[Step] = [REQUEST, answer(body)[:7], Pause(0.02)]
    rest = answer(body)[7:]
    for start in range(0, len(rest), 9):
        pieces += [rest[start : start + 9], Pause(0.01)]
    with raw_server([[*pieces, *ok(b"next")]]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            return await get(origin, server.url()), await get(origin, server.url())

        assert run(main) == (body, b"next")
        assert server.accepted == 1


def test_a_chunked_body_with_extensions_trailers_and_uppercase_hex() -> None:
    part = b"z" * 0x1A
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a=b\r\nhello\r\n"
        b"1A\r\n" + part + b"\r\n"
        b'1 ; name="q;uoted"\r\n!\r\n'
        b"0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"
    )
    with raw_server([[REQUEST, wire[:60], Pause(0.02), wire[60:], *ok(b"next")]]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            return await get(origin, server.url()), await get(origin, server.url())

        # The trailers were read to their end: the next answer on the connection is whole.
        assert run(main) == (b"hello" + part + b"!", b"next")
        assert server.accepted == 1


def test_a_close_delimited_body_is_read_to_the_close_and_its_connection_not_reused() -> None:
    body = b"until the close " * 300
    with raw_server([[REQUEST, answer(body, length=False), CLOSE], ok(b"second")]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            return await get(origin, server.url()), await get(origin, server.url())

        assert run(main) == (body, b"second")
        assert server.accepted == 2
        assert len(server.requests(0)) == 1 and len(server.requests(1)) == 1


def test_a_head_answer_has_no_body_whatever_its_content_length() -> None:
    head = answer(headers=[b"Content-Length: 1234"], length=False)
    with raw_server([[REQUEST, head, *ok(b"after")]]) as server:

        async def main(origin: Origin) -> tuple[httpx.Response, bytes, bytes]:
            response, body = await fetch(origin, "HEAD", server.url("/v2/r/blobs/x"))
            return response, body, await get(origin, server.url())

        response, body, after = run(main)
        assert response.status_code == 200 and response.headers["Content-Length"] == "1234"
        assert body == b"" and after == b"after"
        assert server.accepted == 1  # the same connection carried the next request
        assert [seen.line.split()[0] for seen in server.requests(0)] == [b"HEAD", b"GET"]


def test_204_and_304_have_no_body() -> None:
    no_content = answer(status=b"204 No Content", length=False)
    not_modified = answer(status=b"304 Not Modified", headers=[b"Content-Length: 50"], length=False)
    script = [REQUEST, no_content, REQUEST, not_modified, *ok(b"after")]
    with raw_server([script]) as server:

        async def main(origin: Origin) -> list[tuple[int, bytes]]:
            found = []
            for _ in range(3):
                response, body = await fetch(origin, "GET", server.url())
                found.append((response.status_code, body))
            return found

        assert run(main) == [(204, b""), (304, b""), (200, b"after")]
        assert server.accepted == 1


def test_100_continue_and_103_early_hints_before_the_answer_are_skipped() -> None:
    informational = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    ]
    real = answer(b"the answer", status=b"201 Created", headers=[b"X-Real: yes"])
    with raw_server([[REQUEST, informational[0], Pause(0.02), informational[1] + real, *ok()]]) as (
        server
    ):

        async def main(origin: Origin) -> tuple[httpx.Response, bytes, bytes]:
            response, body = await fetch(origin, "PUT", server.url(), content=b"data")
            return response, body, await get(origin, server.url())

        response, body, after = run(main)
        assert response.status_code == 201 and body == b"the answer"
        assert response.headers["X-Real"] == "yes" and "Link" not in response.headers
        assert after == b"ok" and server.accepted == 1


# -- 2. keep-alive -------------------------------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    with raw_server(default=ok(b"same"), repeat=True) as server:

        async def main(origin: Origin) -> list[bytes]:
            return [await get(origin, server.url(f"/{i}")) for i in range(8)]

        assert run(main) == [b"same"] * 8
        assert server.accepted == 1
        assert [seen.line for seen in server.requests(0)] == [
            b"GET /%d HTTP/1.1" % i for i in range(8)
        ]


def test_the_store_builds_an_origin_that_keeps_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with raw_server(default=ok(b"x"), repeat=True) as server:
        transport = _transport(httpx.URL(server.url()), False)
        assert isinstance(transport, Origin)

        async def main() -> list[bytes]:
            try:
                return [await get(transport, server.url()) for _ in range(3)]
            finally:
                await transport.aclose()

        assert asyncio.run(main()) == [b"x"] * 3
        assert server.accepted == 1


@pytest.mark.parametrize(
    "first",
    [
        answer(b"bye", headers=[b"Connection: close"]),
        answer(b"bye", headers=[b"Connection: keep-alive, Close"]),
        answer(b"bye", version=b"HTTP/1.0"),
        # Both framings: Transfer-Encoding is trusted, and the connection closed after.
        answer(
            b"3\r\nbye\r\n0\r\n\r\n", headers=[b"Transfer-Encoding: chunked"], length=False
        ).replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n", 1),
    ],
    ids=["connection-close", "close-among-tokens", "http-1.0", "chunked-and-length"],
)
def test_an_answer_that_ends_its_connection_is_followed_by_a_new_one(first: bytes) -> None:
    # The server keeps the first connection open: only the client can decide not to reuse it.
    with raw_server([[REQUEST, first], ok(b"second")]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            timeouts = {**TIMEOUTS, "read": 2.0}
            return (
                await get(origin, server.url(), timeouts=timeouts),
                await get(origin, server.url(), timeouts=timeouts),
            )

        assert run(main) == (b"bye", b"second")
        assert server.accepted == 2
        assert len(server.requests(0)) == 1
        assert server.wait_for(lambda: server.conns[0].closed_by_client)


def test_a_body_not_read_to_the_end_closes_its_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    with raw_server([[REQUEST, head + b"a" * 1000], ok(b"second")]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            response = await origin.handle_async_request(request("GET", server.url()))
            part = b""
            async for chunk in response.aiter_raw():
                part = chunk
                break
            await response.aclose()
            return part, await get(origin, server.url())

        part, second = run(main)
        assert part and set(part) == {ord("a")} and second == b"second"
        assert server.accepted == 2
        assert server.wait_for(lambda: server.conns[0].closed_by_client)
        assert len(server.requests(0)) == 1


# -- 3. stale connections ------------------------------------------------------------------------


@pytest.mark.parametrize("ending", [CLOSE, RESET], ids=["fin", "reset"])
def test_a_kept_connection_closed_as_a_get_goes_is_retried_on_a_new_one(ending: _Token) -> None:
    with raw_server([[*ok(b"one"), REQUEST, ending], ok(b"two")]) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            return await get(origin, server.url("/1")), await get(origin, server.url("/2"))

        assert run(main) == (b"one", b"two")
        assert server.accepted == 2
        assert [seen.line for seen in server.requests(0)] == [
            b"GET /1 HTTP/1.1",
            b"GET /2 HTTP/1.1",
        ]
        assert [seen.line for seen in server.requests(1)] == [b"GET /2 HTTP/1.1"]


def test_a_put_on_a_stale_connection_is_not_sent_again_by_the_transport() -> None:
    """The server read the PUT and closed: whether it acted on it cannot be known, so only
    GET, HEAD and OPTIONS are sent again here (the caller's retry policy decides for a PUT)."""
    with raw_server([[*ok(b"one"), REQUEST, CLOSE], ok(b"later")]) as server:

        async def main(origin: Origin) -> bytes:
            await get(origin, server.url())
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await fetch(origin, "PUT", server.url("/up"), content=b"payload")
            return await get(origin, server.url("/after"))

        assert run(main) == b"later"
        assert server.accepted == 2
        assert server.requests(0)[1].line == b"PUT /up HTTP/1.1"
        assert server.requests(0)[1].body == b"payload"
        assert [r.line for r in server.requests(1)] == [b"GET /after HTTP/1.1"]  # no PUT again


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_connection_the_server_closed_while_idle_is_not_used_again(method: str) -> None:
    with raw_server([[*ok(b"one"), CLOSE]], default=ok(b"two"), repeat=True) as server:

        async def main(origin: Origin) -> tuple[bytes, bytes]:
            first = await get(origin, server.url())
            assert await asyncio.to_thread(server.wait_for, lambda: server.open == 0)
            response, body = await fetch(origin, method, server.url("/2"), content=b"bytes")
            assert response.status_code == 200
            return first, body

        assert run(main) == (b"one", b"two")
        assert server.accepted == 2
        assert server.requests(1)[0].line == method.encode() + b" /2 HTTP/1.1"
        assert server.requests(1)[0].body == b"bytes"


def test_a_streamed_body_on_a_stale_connection_is_not_sent_again() -> None:
    with raw_server([[*ok(b"one"), REQUEST, CLOSE], ok(b"later")]) as server:

        async def main(origin: Origin) -> bytes:
            await get(origin, server.url())
            with pytest.raises(httpx.TransportError):
                await fetch(origin, "PUT", server.url("/up"), content=chunks(b"ab", b"cd"))
            assert server.accepted == 1  # no second try of the stream
            return await get(origin, server.url())

        assert run(main) == b"later"
        assert server.requests(0)[1].body == b"abcd"
        assert server.accepted == 2 and server.requests(1)[0].line == b"GET / HTTP/1.1"


def test_a_new_connection_closed_without_an_answer_is_a_protocol_error_not_retried() -> None:
    with raw_server(default=[REQUEST, CLOSE]) as server:

        async def main(origin: Origin) -> None:
            await get(origin, server.url())

        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            run(main)
        assert server.accepted == 1  # the docstring: only a kept connection is replaced


def test_a_stale_kept_connection_is_replaced_once_only() -> None:
    with raw_server([[*ok(b"one"), REQUEST, CLOSE], [REQUEST, CLOSE], ok(b"three")]) as server:

        async def main(origin: Origin) -> bytes:
            await get(origin, server.url())
            with pytest.raises(httpx.RemoteProtocolError):
                await get(origin, server.url())
            assert server.accepted == 2
            return await get(origin, server.url())

        assert run(main) == b"three"
        assert server.accepted == 3


# -- 4. bad answers ------------------------------------------------------------------------------

BAD_ANSWERS = {
    "short-body": [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE],
    "chunked-cut-short": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", CLOSE],
    "head-cut-short": [b"HTTP/1.1 200 OK\r\nContent-Le", CLOSE],
    "two-lengths": [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"],
    "two-lengths-one-line": [b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd"],
    "length-not-a-number": [b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc"],
    "length-plus-sign": [b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"],
    "length-negative": [b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
    "length-empty": [b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"],
    "chunk-size-not-hex": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    "chunk-size-0x": [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n" + b"a" * 16 + b"\r\n"
    ],
    "chunk-size-underscore": [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"a" * 16 + b"\r\n"
    ],
    "chunk-overruns-its-size": [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
    ],
    "head-over-64k-never-ending": [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024)],
    "folded-header": [b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n"],
    "header-without-colon": [b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n"],
    "space-before-colon": [b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"],
    "bare-lf-in-head": [b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\r\n"],
    "bare-cr-in-head": [b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 0\r\n\r\n"],
    "nul-in-head": [b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"],
    "status-http-2": [b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n"],
    "status-two-digits": [b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"],
    "status-not-http": [b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n"],
    "switching-protocols": [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    ],
    "bad-head-after-100": [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2000 OK\r\n\r\n"],
}


@pytest.mark.parametrize("bad", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
def test_a_bad_answer_is_a_protocol_error_and_the_next_request_gets_a_new_connection(
    bad: list[Step],
) -> None:
    # The bad answer's connection stays open on the server's side unless it says CLOSE: only
    # the client's error ends it (a wait for more would be a ReadTimeout, not this error).
    with raw_server([[REQUEST, *bad], ok(b"fine")]) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(origin, "GET", server.url())
            return await get(origin, server.url())

        assert run(main) == b"fine"
        assert server.accepted == 2
        assert len(server.requests(0)) == 1 and len(server.requests(1)) == 1


def test_a_head_over_the_limit_is_refused_even_when_its_end_arrives_in_its_last_piece() -> None:
    """The docstring: an answer's head is at most HEAD_LIMIT bytes. Here the first piece stays
    under the limit and the second, which carries the blank line, takes it over."""
    first = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (http1.HEAD_LIMIT - 1000)
    second = b"b" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    assert len(first) < http1.HEAD_LIMIT < len(first + second)
    with raw_server([[REQUEST, first, Pause(0.1), second], ok(b"fine")]) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.RemoteProtocolError, match="head over"):
                await fetch(origin, "GET", server.url())
            return await get(origin, server.url())

        assert run(main) == b"fine"


# -- 5. the request's bytes ----------------------------------------------------------------------


def test_a_get_goes_out_as_exactly_its_request_line_and_headers_in_order() -> None:
    with raw_server([ok()]) as server:
        headers = [
            ("Accept", "application/vnd.oci.image.index.v1+json"),
            ("Authorization", "Bearer t0ken"),
            ("X-Two", "1"),
            ("x-two", "2"),
        ]

        async def main(origin: Origin) -> bytes:
            return await get(origin, server.url("/v2/team/app/manifests/1.0?n=2"), headers=headers)

        assert run(main) == b"ok"
        assert bytes(server.conns[0].received) == (
            b"GET /v2/team/app/manifests/1.0?n=2 HTTP/1.1\r\n"
            b"Host: 127.0.0.1:%d\r\n"
            b"Accept: application/vnd.oci.image.index.v1+json\r\n"
            b"Authorization: Bearer t0ken\r\n"
            b"X-Two: 1\r\n"
            b"x-two: 2\r\n"
            b"\r\n" % server.port
        )


def test_a_put_with_a_small_bytes_body_sends_its_head_and_body() -> None:
    payload = b'{"schemaVersion": 2}'
    with raw_server([[REQUEST, answer(status=b"201 Created")]]) as server:

        async def main(origin: Origin) -> int:
            response, _ = await fetch(
                origin,
                "PUT",
                server.url("/v2/r/manifests/1"),
                headers={"Content-Type": "application/json"},
                content=payload,
            )
            return response.status_code

        assert run(main) == 201
        assert bytes(server.conns[0].received) == (
            b"PUT /v2/r/manifests/1 HTTP/1.1\r\n"
            b"Host: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"\r\n%s" % (server.port, len(payload), payload)
        )


def test_a_put_with_a_large_bytes_body_arrives_whole() -> None:
    payload = bytes(range(251)) * (3 * http1.SMALL_BODY // 251)
    with raw_server([[REQUEST, answer(status=b"201 Created")]]) as server:

        async def main(origin: Origin) -> int:
            response, _ = await fetch(origin, "PUT", server.url(), content=payload)
            return response.status_code

        assert run(main) == 201
        seen = server.requests(0)[0]
        assert seen.header(b"Content-Length") == [str(len(payload)).encode()]
        assert seen.body == payload


def test_a_streamed_body_of_unknown_length_goes_out_chunked() -> None:
    parts = [b"first", b"", b"\r\n0\r\n\r\n", b"x" * 70000, b"end"]
    with raw_server([[REQUEST, answer(status=b"202 Accepted")]]) as server:

        async def main(origin: Origin) -> int:
            response, _ = await fetch(origin, "PATCH", server.url("/up"), content=chunks(*parts))
            return response.status_code

        assert run(main) == 202
        seen = server.requests(0)[0]
        assert seen.header(b"Transfer-Encoding") == [b"chunked"]
        assert seen.header(b"Content-Length") == []
        assert seen.body == b"".join(parts)
        assert bytes(server.conns[0].received).endswith(b"\r\nend\r\n0\r\n\r\n")


def test_a_streamed_body_of_declared_length_goes_out_as_it_is() -> None:
    parts = [b"abc", b"defg"]
    with raw_server([[REQUEST, answer(status=b"201 Created")]]) as server:

        async def main(origin: Origin) -> int:
            response, _ = await fetch(
                origin, "PUT", server.url(), headers={"Content-Length": "7"}, content=chunks(*parts)
            )
            return response.status_code

        assert run(main) == 201
        seen = server.requests(0)[0]
        assert seen.header(b"Transfer-Encoding") == [] and seen.body == b"abcdefg"
        assert bytes(server.conns[0].received).endswith(b"\r\n\r\nabcdefg")


SECRET = "s3cr3t-t0ken-value"


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization", f"Bearer {SECRET}\r\nX-Evil: 1"),
        ("Authorization", f"Bearer {SECRET}\nX-Evil: 1"),
        ("Authorization", f"Bearer {SECRET}\rX-Evil: 1"),
        ("Authorization", f"Bearer {SECRET}\0X-Evil: 1"),
    ],
    ids=["crlf", "lf", "cr", "nul"],
)
def test_a_header_with_a_line_break_is_refused_unsent_and_unnamed(header: tuple[str, str]) -> None:
    with raw_server([ok(b"clean")]) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.LocalProtocolError) as refused:
                await fetch(origin, "GET", server.url("/first"), headers=[header])
            message = str(refused.value)
            assert SECRET not in message and "X-Evil" not in message and "Bearer" not in message
            assert "Authorization" in message  # it names the header, not its value
            assert server.accepted == 0
            # The slot came back (one connection only) and the next request goes out clean.
            return await get(origin, server.url("/second"))

        assert run(main, max_connections=1, max_idle=1) == b"clean"
        assert server.accepted == 1
        received = bytes(server.conns[0].received)
        assert received.startswith(b"GET /second HTTP/1.1\r\n")
        assert b"X-Evil" not in received and SECRET.encode() not in received


# -- 6. the pool ---------------------------------------------------------------------------------


def test_at_most_max_connections_requests_are_in_flight() -> None:
    release = threading.Event()
    with raw_server(default=[REQUEST, release, answer(b"x")], repeat=True) as server:

        async def main(origin: Origin) -> list[bytes]:
            tasks = [asyncio.ensure_future(get(origin, server.url(f"/{i}"))) for i in range(5)]
            assert await asyncio.to_thread(server.wait_for, lambda: server.held == 2)
            release.set()
            return await asyncio.gather(*tasks)

        assert run(main, max_connections=2, max_idle=2) == [b"x"] * 5
        assert server.max_held == 2 and server.max_open == 2 and server.accepted == 2
        assert sorted(seen.line for seen in server.all_requests()) == [
            b"GET /%d HTTP/1.1" % i for i in range(5)
        ]


def test_a_pool_timeout_when_every_connection_is_busy_leaks_no_slot() -> None:
    release = threading.Event()
    pair = threading.Barrier(2)
    phase = {"first": True}

    def hold(server: RawServer) -> bool:
        if phase["first"]:
            return server.wait_event(release)
        pair.wait(EXPECT)  # two at once, or the barrier breaks and the request fails
        return True

    with raw_server(default=[REQUEST, hold, answer(b"x")], repeat=True) as server:

        async def main(origin: Origin) -> list[bytes]:
            busy = [asyncio.ensure_future(get(origin, server.url())) for _ in range(2)]
            assert await asyncio.to_thread(server.wait_for, lambda: server.held == 2)
            timeouts = {**TIMEOUTS, "pool": 0.2}
            with pytest.raises(httpx.PoolTimeout):
                await fetch(origin, "GET", server.url("/third"), timeouts=timeouts)
            phase["first"] = False
            release.set()
            assert await asyncio.gather(*busy) == [b"x", b"x"]
            more = [get(origin, server.url("/more")) for _ in range(4)]
            return await asyncio.gather(*more)

        assert run(main, max_connections=2, max_idle=2) == [b"x"] * 4
        assert server.accepted == 2 and server.max_held == 2
        assert b"GET /third HTTP/1.1" not in [seen.line for seen in server.all_requests()]


def test_a_request_cancelled_while_waiting_for_its_answer_gives_back_its_slot() -> None:
    never = threading.Event()
    pair = threading.Barrier(2)
    numbers = itertools.count()

    def hold(server: RawServer) -> bool:
        if next(numbers) == 0:
            return server.wait_event(never)  # the first request is never answered
        pair.wait(EXPECT)
        return True

    with raw_server(default=[REQUEST, hold, answer(b"x")], repeat=True) as server:

        async def main(origin: Origin) -> list[bytes]:
            waiting = asyncio.ensure_future(get(origin, server.url("/cancelled")))
            assert await asyncio.to_thread(server.wait_for, lambda: server.held == 1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # Both slots are free: two requests are at the server at once (the barrier).
            first = await asyncio.gather(*(get(origin, server.url()) for _ in range(2)))
            second = await asyncio.gather(*(get(origin, server.url()) for _ in range(2)))
            return first + second

        assert run(main, max_connections=2, max_idle=2) == [b"x"] * 4
        assert server.accepted == 3  # the cancelled one's connection was not kept


# -- 7. read timeouts ----------------------------------------------------------------------------


def test_an_answer_that_never_comes_is_a_read_timeout() -> None:
    with raw_server([[REQUEST], ok(b"later")]) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.ReadTimeout):
                await fetch(origin, "GET", server.url(), timeouts={**TIMEOUTS, "read": 0.3})
            return await get(origin, server.url())

        assert run(main) == b"later"
        assert server.accepted == 2


def test_half_a_body_then_a_stall_is_a_read_timeout_while_reading_the_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    with raw_server([[REQUEST, head + b"h" * 50]]) as server:

        async def main(origin: Origin) -> None:
            timeouts = {**TIMEOUTS, "read": 0.3}
            response = await origin.handle_async_request(request("GET", server.url(), timeouts))
            assert response.status_code == 200  # the head came: it is the body that stalls
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()
            await response.aclose()

        run(main)
        assert server.wait_for(lambda: server.conns[0].closed_by_client)


# -- 8. TLS --------------------------------------------------------------------------------------


def test_https_through_an_origin_keeps_its_connection(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(pki.cert_file, pki.key_file)
    trusted = ssl.create_default_context(cafile=str(pki.ca_file))
    with raw_server(default=ok(b"secure"), repeat=True, tls=served) as server:

        async def main(origin: Origin) -> list[bytes]:
            return [await get(origin, server.url(f"/{i}", "https")) for i in range(3)]

        assert run(main, ssl_context=trusted) == [b"secure"] * 3
        assert server.accepted == 1
        assert [seen.line for seen in server.requests(0)] == [
            b"GET /%d HTTP/1.1" % i for i in range(3)
        ]
        assert server.requests(0)[0].header(b"Host") == [b"127.0.0.1:%d" % server.port]
        assert not server.errors


# -- found in review: each of these failed before its fix -----------------------------------------


# Chunked: the body is read from the connection as a stream, which holds the slot until closed.
CHUNKED_X = [
    REQUEST,
    answer(b"1\r\nx\r\n0\r\n\r\n", headers=[b"Transfer-Encoding: chunked"], length=False),
]


def test_a_waiter_cancelled_as_a_slot_frees_is_cancelled_cleanly() -> None:
    """A request waiting for the one slot is cancelled in the same turn as the holder ends: it
    raises CancelledError (not an error of the pool's bookkeeping), and no slot is lost."""
    with raw_server(default=CHUNKED_X, repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            holder = await origin.handle_async_request(request("GET", server.url("/held")))
            waiting = asyncio.ensure_future(get(origin, server.url("/waits")))
            await asyncio.sleep(0.05)  # it waits for the one slot
            waiting.cancel()
            await holder.aclose()  # in the same turn: no await between
            with pytest.raises(asyncio.CancelledError):
                await waiting
            return await get(origin, server.url("/after"))

        assert run(main, max_connections=1, max_idle=1) == b"x"


def test_a_pool_timeout_racing_a_freed_slot_is_a_pool_timeout_or_an_answer() -> None:
    with raw_server(default=CHUNKED_X, repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            holder = await origin.handle_async_request(request("GET", server.url("/held")))
            loop = asyncio.get_running_loop()
            loop.call_at(loop.time() + 0.2, lambda: loop.create_task(holder.aclose()))
            short = dict(TIMEOUTS, pool=0.2)
            with suppress(httpx.PoolTimeout):  # the other outcome allowed, and no other error
                await get(origin, server.url("/waits"), timeouts=short)
            return await get(origin, server.url("/after"))

        assert run(main, max_connections=1, max_idle=1) == b"x"


def test_an_answer_queued_whole_while_reading_was_paused_leaves_a_usable_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server answers (over READ_LIMIT bytes) while the upload is still going: the answer
    is queued whole and reading pauses; taking it must resume reading, or the next request on
    that kept connection would wait out its read timeout."""
    upload = 24 * 1024 * 1024
    # Just over the limit: reading pauses as the answer's last piece is queued. Much more, and
    # the rest would wait in the kernel while the server's send blocks: the deadlock of a server
    # that answers a body it has not read (the upload would end in its write timeout).
    size = http1.netstream.READ_LIMIT + 16 * 1024
    answered = threading.Event()

    def serve(conn: socket.socket) -> None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += conn.recv(65536)
        conn.sendall(answer(b"a" * size))
        answered.wait(EXPECT)
        time.sleep(0.3)  # the answer sits in the client's queue while it sends
        rest = bytearray(buffer.split(b"\r\n\r\n", 1)[1])
        while len(rest) < upload:
            rest += conn.recv(1 << 20)
        buffer = bytes(
            rest[upload:]
        )  # the next request may come in the same read as the upload's end
        while b"\r\n\r\n" not in buffer:
            buffer += conn.recv(65536)
        conn.sendall(answer(b"second"))
        time.sleep(1.0)

    paused: list[int] = []
    real = http1.netstream.Connection.data_received

    def data_received(self: http1.netstream.Connection, data: bytes) -> None:
        real(self, data)
        if self._paused:
            paused.append(self.queued)

    monkeypatch.setattr(http1.netstream.Connection, "data_received", data_received)
    with one_connection_server(serve) as port:

        async def main(origin: Origin) -> tuple[int, bytes]:
            answered.set()
            url = f"http://127.0.0.1:{port}/"
            first, body = await fetch(origin, "POST", url, content=b"b" * upload)
            assert first.status_code == 200 and len(body) == size
            quick = dict(TIMEOUTS, read=2.0)
            return len(origin._idle), await get(origin, url + "second", timeouts=quick)

        assert run(main) == (1, b"second")
    assert paused  # the case this test is about: reading had paused with the answer queued


@contextmanager
def one_connection_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def accept() -> None:
        conn, _ = listener.accept()
        with suppress(OSError), conn:
            serve(conn)
        done.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(EXPECT)


@pytest.mark.parametrize(
    ("declared", "parts", "words"),
    [(5, [b"abc", b"defgh"], "over its Content-Length"), (9, [b"abc"], "under its Content-Length")],
    ids=["over", "under"],
)
def test_a_streamed_body_is_held_to_its_content_length(
    declared: int, parts: list[bytes], words: str
) -> None:
    """More bytes than declared would be a second request on the wire; fewer, a server waiting
    for the rest. Either is refused, and nothing past the declared length is sent."""
    with raw_server([[HEAD, Pause(0.3)]], default=ok(b"next"), repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            headers = {"Content-Length": str(declared)}
            with pytest.raises(httpx.LocalProtocolError, match=words):
                await fetch(
                    origin, "PUT", server.url("/up"), headers=headers, content=chunks(*parts)
                )
            return await get(origin, server.url("/after"))

        assert run(main) == b"next"
        sent = bytes(server.conns[0].received)
        assert len(sent.split(b"\r\n\r\n", 1)[1]) <= declared


def test_a_non_ascii_host_is_dialled_by_its_idna_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name dialled (and checked in TLS) is the one the Host header carries."""
    dialled: list[str] = []

    async def connect(host: str, port: int, *_args: Any) -> Any:
        dialled.append(host)
        raise httpx.ConnectError("not dialled in this test")

    monkeypatch.setattr(http1.netstream, "connect", connect)

    async def main(origin: Origin) -> str:
        sent = request("GET", "http://faß.test:5000/v2/")
        with pytest.raises(httpx.ConnectError):
            await origin.handle_async_request(sent)
        return sent.headers["Host"]

    assert run(main) == "xn--fa-hia.test:5000"
    assert dialled == ["xn--fa-hia.test"]


@pytest.mark.parametrize(
    ("method", "headers", "words"),
    [
        ("GET /admin", {}, "method"),
        ("GET", {"X-A: injected": "v"}, "header name"),
        ("GET", {"X-Ctl": "a\x01b"}, "'X-Ctl': it holds a control character"),
        ("GET", {"X-Del": "a\x7fb"}, "'X-Del': it holds a control character"),
    ],
    ids=["method-with-space", "name-not-a-token", "value-control", "value-del"],
)
def test_what_is_not_a_token_or_holds_a_control_character_is_not_sent(
    method: str, headers: dict[str, str], words: str
) -> None:
    with raw_server(default=ok(b"clean"), repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.LocalProtocolError, match=words):
                await fetch(origin, method, server.url("/x"), headers=headers)
            return await get(origin, server.url("/after"))

        assert run(main, max_connections=1, max_idle=1) == b"clean"
        assert [seen.line for seen in server.all_requests()] == [b"GET /after HTTP/1.1"]


@pytest.mark.parametrize("split", [0, 1, 2, 3], ids=["whole", "cut-3", "cut-2", "cut-1"])
def test_a_head_of_exactly_the_limit_is_taken_however_it_is_split(split: int) -> None:
    """HEAD_LIMIT bytes of head (blank line aside) are allowed, whether the blank line arrives
    with them or is cut across two reads."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: "
    head = start + b"a" * (http1.HEAD_LIMIT - len(start))
    assert len(head) == http1.HEAD_LIMIT
    whole = head + b"\r\n\r\n" + b"ok"
    cut = len(head) + 4 - split if split else len(whole)
    with raw_server([[REQUEST, whole[:cut], Pause(0.1), whole[cut:]]]) as server:

        async def main(origin: Origin) -> bytes:
            return await get(origin, server.url())

        assert run(main) == b"ok"


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"Content-Length": "3"}, b"abc\r\nDELETE /v2/a/manifests/latest HTTP/1.1\r\n\r\n"),
        ({"Content-Length": "99"}, b"short"),
        ({"Transfer-Encoding": "chunked"}, b"unframed bytes"),
    ],
    ids=["length-under-the-bytes", "length-over-the-bytes", "chunked-bytes"],
)
def test_a_bytes_body_that_its_headers_do_not_frame_is_not_sent(
    headers: dict[str, str], content: bytes
) -> None:
    """A body's bytes past a wrong length would be read as a request of their own."""
    with raw_server(default=ok(b"clean"), repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            with pytest.raises(httpx.LocalProtocolError, match="a body of"):
                await fetch(origin, "PUT", server.url("/up"), headers=headers, content=content)
            return await get(origin, server.url("/after"))

        assert run(main, max_connections=1, max_idle=1) == b"clean"
        assert [seen.line for seen in server.all_requests()] == [b"GET /after HTTP/1.1"]


def test_a_streamed_body_without_a_length_or_chunked_is_refused_before_its_head_goes() -> None:
    with raw_server(default=ok(b"clean"), repeat=True) as server:

        async def main(origin: Origin) -> bytes:
            unframed = httpx.Request(
                "PUT",
                server.url("/up"),
                stream=httpx.AsyncByteStream(),  # stream=: httpx adds no framing header
                extensions={"timeout": TIMEOUTS},
            )
            with pytest.raises(httpx.LocalProtocolError, match="needs one valid Content-Length"):
                await origin.handle_async_request(unframed)
            return await get(origin, server.url("/after"))

        assert run(main, max_connections=1, max_idle=1) == b"clean"
        assert [seen.line for seen in server.all_requests()] == [b"GET /after HTTP/1.1"]


def test_a_chunk_size_line_of_exactly_the_limit_is_taken_when_its_crlf_is_split() -> None:
    size_line = b"2;" + b"x" * (http1.LINE_LIMIT - 2)
    assert len(size_line) == http1.LINE_LIMIT
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    whole = head + size_line + b"\r\nok\r\n0\r\n\r\n"
    cut = len(head) + len(size_line) + 1  # between the CR and the LF
    with raw_server([[REQUEST, whole[:cut], Pause(0.1), whole[cut:]]]) as server:

        async def main(origin: Origin) -> bytes:
            return await get(origin, server.url())

        assert run(main) == b"ok"
