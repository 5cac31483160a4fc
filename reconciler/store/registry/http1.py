"""HTTP/1.1 for one origin, as an httpx transport on netstream's connections.

Profiled on a no-op over 10,000 specs (20,010 HEADs), reconciler spent 0.75 ms of CPU per
request, and more than half of it in httpcore's pool and h11's state machine: per request, two
lock acquires that each yielded to the event loop, an event per pool request, trace hooks at
every step, and h11's event objects and per-header validation. A registry client sends one
request at a time per connection and reads the answer whole or as a stream, so the protocol it
needs is small, and here it is written out:

- A request's head and a bytes body go out in one write. A streamed body follows, framed as
  chunks when its length is not declared, and held to its Content-Length when it is. A method
  or header name that is not a token, or a value with a control character (a line break, a
  NUL), is refused before anything is sent, and the error names the header, never its value.
- An answer's head is at most HEAD_LIMIT bytes, with CRLF line endings: a head whose lines end
  in a bare LF is refused as soon as its blank line arrives (not left to wait for a CRLF that
  never comes). Up to MAX_INFORMATIONAL 1xx answers before the real one are skipped.
  The body is framed as RFC 9112 section 6.3 says: none for HEAD, 204 and 304; chunked when
  Transfer-Encoding ends in chunked; Content-Length when that is one valid number; otherwise
  up to the close. A body cut short is RemoteProtocolError, never a short body.
- Connections are kept for KEEPALIVE_EXPIRY seconds after their last answer, unless either
  side said `Connection: close`, the answer was HTTP/1.0 or close-delimited, or its body was
  not read to the end. A kept connection that the server closed without answering (it timed
  out idle as we sent) is replaced once by a new one for GET, HEAD and OPTIONS: whether the
  server acted on anything else cannot be known, and the caller's retry policy decides.
- At most `max_connections` requests are in flight per origin; one more waits for a free
  connection up to the pool timeout (PoolTimeout).
- Errors are httpx's: ConnectError/ConnectTimeout, WriteError/WriteTimeout,
  ReadError/ReadTimeout, RemoteProtocolError, LocalProtocolError, PoolTimeout.

Behind an HTTP proxy, httpx's own transport is used instead (http.py).
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from reconciler.store.registry import netstream
from reconciler.store.registry.numbers import decimal, shown

KEEPALIVE_EXPIRY = 5.0
HEAD_LIMIT = 64 * 1024  # an answer's status line and headers
LINE_LIMIT = 4 * 1024  # one chunk-size line or trailer line
SMALL_BODY = 64 * 1024  # a body up to this size goes out in the same write as the head
# 1xx answers skipped before the real one: servers send one or two (100 Continue, 103 Early
# Hints); an endless stream of them would hold the request for ever, every head resetting the
# read timeout.
MAX_INFORMATIONAL = 8
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The bytes a request head may hold besides its CRLFs: tab, printable ASCII, obs-text.
_ALLOWED = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_TOKENS: set[bytes] = set()  # method and header names already checked: they are few
_Timeouts = dict[str, float | None]


class _Stale(Exception):
    """The connection was closed (or reset) before any of the answer arrived: on a kept
    connection, the server timing it out as the request went; on a new one, an error."""

    def error(self) -> httpx.TransportError:
        if isinstance(self.__cause__, httpx.TransportError):
            return self.__cause__
        if self.__cause__ is not None:
            return httpx.ReadError(str(self.__cause__) or type(self.__cause__).__name__)
        return httpx.RemoteProtocolError("the server closed the connection without answering")


class Origin(httpx.AsyncBaseTransport):
    """The connections to one origin (scheme, host, port), for httpx requests to it."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        self._ssl = ssl_context
        self._max = max_connections
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._busy = 0  # requests holding a connection slot
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: list[tuple[netstream.Connection, float]] = []
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: _Timeouts = request.extensions.get("timeout") or {}
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"not an HTTP URL: {url.scheme}")
        host = url.raw_host.decode("ascii")  # IDNA-encoded, as the Host header says
        port = url.port or _DEFAULT_PORTS[url.scheme]
        head = _request_head(request)
        body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        declared = _declared_length(request, body)
        await self._take_slot(timeouts.get("pool"))
        try:
            connection, kept = self._kept(), True
            while True:
                if connection is None:
                    connection, kept = await self._connect(host, port, timeouts), False
                try:
                    return await self._exchange(connection, request, head, body, declared, timeouts)
                except _Stale as stale:
                    connection.abort()
                    if not kept or request.method not in _REPLAYABLE or body is None:
                        error = stale.error()
                        if error is stale.__cause__:
                            raise error from error.__cause__  # an httpx error already
                        raise error from stale.__cause__
                    connection = None  # once more, on a new connection
                except BaseException:
                    connection.abort()
                    raise
        except BaseException:
            self._give_slot()
            raise

    async def aclose(self) -> None:
        self._closed = True
        for connection, _since in self._idle:
            connection.abort()
        self._idle.clear()

    # -- connections and slots ----------------------------------------------------------------

    async def _take_slot(self, timeout: float | None) -> None:
        if self._busy < self._max and not self._waiting:
            self._busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter  # a finished request hands over its slot
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()  # handed over as this one gave up: pass it on
            else:
                waiter.cancel()
                if waiter in self._waiting:  # _give_slot may have passed over it already
                    self._waiting.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(f"no free connection in {timeout:g} s") from None
            raise

    def _give_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    def _kept(self) -> netstream.Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection, since = self._idle.pop()  # the most recent: the least likely closed
            if now - since < self._expiry and connection.reusable():
                return connection
            connection.abort()
        return None

    async def _connect(self, host: str, port: int, timeouts: _Timeouts) -> netstream.Connection:
        return await netstream.connect(host, port, self._ssl, timeouts.get("connect"))

    def _done(self, connection: netstream.Connection, keep: bool) -> None:
        """A request is over: its connection is kept or closed, and its slot given on."""
        if keep and not self._closed and connection.reusable() and len(self._idle) < self._max_idle:
            self._idle.append((connection, asyncio.get_running_loop().time()))
        else:
            connection.abort()
        self._give_slot()

    # -- one exchange ---------------------------------------------------------------------------

    async def _exchange(
        self,
        connection: netstream.Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        declared: int | None,
        timeouts: _Timeouts,
    ) -> httpx.Response:
        try:
            if body is not None and len(body) <= SMALL_BODY:
                await _send(connection, head + body, timeouts)
            else:
                await _send(connection, head, timeouts)
                if body is not None:
                    await _send(connection, body, timeouts)
                else:
                    await _send_stream(connection, request.stream, declared, timeouts)
        except httpx.WriteError as exc:
            if not connection.chunks:
                raise _Stale from exc  # nothing came back: on a kept connection, stale
            # The server answered (and closed) before taking the whole body: read its answer.
        reader = _Reader(connection, timeouts.get("read"))
        status, version, reason, headers = await reader.head()
        informational = 0
        while 100 <= status < 200:
            if status == 101:
                raise httpx.RemoteProtocolError("the server switched protocols (101)")
            informational += 1
            if informational > MAX_INFORMATIONAL:
                raise httpx.RemoteProtocolError(
                    f"more than {MAX_INFORMATIONAL} informational (1xx) answers before the "
                    f"answer (the last: {status})"
                )
            status, version, reason, headers = await reader.head()
        options, codings, lengths = _framing(headers)
        keep = version == 1 and not _has_token(options, "close")
        keep = keep and not _has_token(request.headers.get_list("Connection"), "close")
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.%d" % version}
        if reason:
            extensions["reason_phrase"] = reason
        length: int | None = 0
        if request.method != "HEAD" and status not in (204, 304):
            if codings:
                if codings[-1].rsplit(",", 1)[-1].strip().lower() != "chunked":
                    length, keep = None, False  # framed by the close
                else:
                    length = -1
                if lengths:
                    keep = False  # both framings: trust Transfer-Encoding, then close
            elif lengths:
                length = _content_length(lengths)
            else:
                length, keep = None, False
        if length == 0 or (length is not None and length > 0 and connection.queued == length):
            # The whole body (or none) is here already: the connection goes back at once. Bytes
            # after a bodiless answer are the server's error: that connection is not kept.
            data = connection.take_all() if length else b""
            response = httpx.Response(
                status, headers=headers, stream=httpx.ByteStream(data), extensions=extensions
            )
            self._done(connection, keep)
            return response
        stream = _Body(self, reader, length, keep)
        return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; at its end the connection goes back to the origin."""

    def __init__(self, origin: Origin, reader: _Reader, length: int | None, keep: bool) -> None:
        self._origin = origin
        self._reader = reader
        self._length = length  # None: up to the close; -1: chunked
        self._keep = keep
        self._over = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._reader
        try:
            if self._length is None:
                while chunk := await reader.chunk():
                    yield chunk
            elif self._length >= 0:
                async for chunk in reader.exactly(self._length):
                    yield chunk
            else:
                while size := await reader.chunk_size():
                    async for chunk in reader.exactly(size):
                        yield chunk
                    await reader.chunk_end()
                await reader.trailers()
        except BaseException:
            self._end(False)
            raise
        self._end(self._keep)

    async def aclose(self) -> None:
        self._end(False)  # read to the end already, or the rest is not wanted: not reusable

    def _end(self, keep: bool) -> None:
        if not self._over:
            self._over = True
            self._origin._done(self._reader.connection, keep)


class _Reader:
    """Reads an answer off a connection, each wait bounded by the read timeout."""

    def __init__(self, connection: netstream.Connection, timeout: float | None) -> None:
        self.connection = connection
        self._timeout = timeout
        self._received = 0

    async def chunk(self) -> bytes:
        connection = self.connection
        deadline = None
        try:
            if connection.chunks:
                data = await connection.receive()  # queued: no wait, no timer
            else:
                async with asyncio.timeout(self._timeout) as deadline:
                    data = await connection.receive()
        except (OSError, ssl.SSLError) as exc:  # TimeoutError is ours only if the deadline passed
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                raise httpx.ReadTimeout(f"no data in {self._timeout:g} s") from None
            if not self._received:
                raise _Stale from exc  # not even the head
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        self._received += len(data)
        return data

    async def head(self) -> tuple[int, int, bytes, list[tuple[bytes, bytes]]]:
        return _parse_head(await self._until(_HEAD_END, HEAD_LIMIT, "an answer's head"))

    async def line(self) -> bytes:
        return await self._until(b"\r\n", LINE_LIMIT, "a chunked body's line")

    async def _until(self, separator: bytes, limit: int, what: str) -> bytes:
        """The bytes before the next `separator` (taken too), at most `limit` of them however
        they arrive. The connection closed before anything at all came is _Stale."""
        buffer = bytearray()
        while True:
            data = await self.chunk()
            if not data:
                if self._received == 0:
                    raise _Stale
                raise httpx.RemoteProtocolError(
                    f"the server closed the connection in the middle of {what}"
                )
            if not buffer and (end := data.find(separator)) >= 0:
                whole = data  # the usual case: all in one piece, nothing copied
            else:
                searched = max(0, len(buffer) - len(separator) + 1)
                buffer += data
                end = buffer.find(separator, searched)
                whole = bytes(buffer) if end >= 0 else b""
            if end > limit or (end < 0 and len(buffer) > limit + len(separator) - 1):
                raise httpx.RemoteProtocolError(f"{what} over {limit} bytes")
            if separator == _HEAD_END:
                _refuse_bare_lf(whole or buffer, end)
            if end >= 0:
                self.connection.push_back(whole[end + len(separator) :])
                return whole[:end]

    async def chunk_size(self) -> int:
        line = await self.line()
        size = line.split(b";", 1)[0].strip(b" \t")  # chunk extensions are ignored
        if not _CHUNK_SIZE.fullmatch(size):
            raise httpx.RemoteProtocolError(
                f"a chunked body's size line is not 1 to 16 hex digits: {line[:40]!r}"
            )
        return int(size, 16)

    async def chunk_end(self) -> None:
        if await self.line() != b"":
            raise httpx.RemoteProtocolError("a chunk of the body overran its size")

    async def trailers(self) -> None:
        total = 0
        while line := await self.line():
            total += len(line)
            if total > HEAD_LIMIT:
                raise httpx.RemoteProtocolError(
                    f"a chunked body's trailers over {HEAD_LIMIT} bytes"
                )

    async def exactly(self, size: int) -> AsyncIterator[bytes]:
        remaining = size
        while remaining:
            data = await self.chunk()
            if not data:
                raise httpx.RemoteProtocolError(
                    f"the server closed the connection after {size - remaining} of the "
                    f"{size} bytes it announced"
                )
            if len(data) > remaining:
                self.connection.push_back(data[remaining:])
                data = data[:remaining]
            remaining -= len(data)
            yield data


_HEAD_END = b"\r\n\r\n"
_BARE_BLANK = re.compile(rb"(?<!\r)\n\r?\n")  # LF LF, or LF CRLF: a blank line ended by LF


def _refuse_bare_lf(data: bytes | bytearray, end: int) -> None:
    """A head's bytes (up to `end`, its CRLFCRLF, when found) holding an empty line ended by
    bare LFs: the head of a server that writes LF line endings, complete. Waiting for a CRLF
    would only end in a read timeout that says nothing of what arrived."""
    found = _BARE_BLANK.search(bytes(data[: end if end >= 0 else len(data)]))
    if found is not None:
        first = bytes(data[: data.find(b"\n")]).rstrip(b"\r")
        raise httpx.RemoteProtocolError(
            f"an answer's head with bare LF line endings, not CRLF (it began {first[:60]!r})"
        )


def _request_head(request: httpx.Request) -> bytes:
    try:
        method = request.method.encode("ascii")
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("refusing to send a method that is not ASCII") from None
    raw = request.headers.raw
    for name in (method, *(name for name, _value in raw)):
        if name not in _TOKENS:
            if not _NAME.fullmatch(name):
                what = "method" if name is method else "header name"
                raise httpx.LocalProtocolError(f"refusing to send the {what} {name[:40]!r}")
            _TOKENS.add(name)
    lines = [b"%s %s HTTP/1.1" % (method, request.url.raw_path)]
    lines.extend(b"%s: %s" % pair for pair in raw)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    # Each line ends in the one CRLF put there. A CR, LF, NUL or other control character in a
    # value (or the path) would be one of its own: a token from a hostile server, say.
    if head.translate(None, _ALLOWED) != b"\r\n" * (len(lines) + 1):
        bad = next((name for name, value in raw if _CONTROL.search(value)), b"request line")
        raise httpx.LocalProtocolError(
            f"refusing to send {bad.decode('ascii', 'replace')!r}: it holds a control character"
        )
    return head


def _declared_length(request: httpx.Request, body: bytes | None) -> int | None:
    """How a body goes out, checked before anything is sent: a bytes body as long as its
    Content-Length says; a stream either chunked (None) or exactly its one Content-Length. A
    length that the bytes do not match would let the rest of them be read as a request of
    their own."""
    lengths = request.headers.get_list("Content-Length")
    codings = request.headers.get_list("Transfer-Encoding")
    if body is not None:
        if codings or lengths != ([str(len(body))] if lengths or body else []):
            raise httpx.LocalProtocolError(
                f"a body of {len(body)} bytes sent with Content-Length {lengths or 'unset'} "
                f"and Transfer-Encoding {codings or 'unset'}"
            )
        return len(body)
    if codings:
        if lengths:
            raise httpx.LocalProtocolError("a streamed body with both Content-Length and chunked")
        if [coding.lower() for coding in codings] != ["chunked"]:
            raise httpx.LocalProtocolError(f"a streamed body sent as {codings}: only chunked")
        return None
    length = decimal(lengths[0]) if len(lengths) == 1 else None
    if length is None:
        raise httpx.LocalProtocolError(
            "a streamed request body needs one valid Content-Length, or to be chunked"
        )
    return length


def _parse_head(head: bytes) -> tuple[int, int, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise httpx.RemoteProtocolError("an answer's head with a bare CR or LF in a line")
    if b"\0" in head:
        raise httpx.RemoteProtocolError("an answer's head with a NUL byte")
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _NAME.fullmatch(name):
            # Folded lines (obsolete), spaces before the colon, or no colon at all.
            raise httpx.RemoteProtocolError(f"a malformed header line: {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    status = int(match[2])
    if not 100 <= status <= 599:  # RFC 9110 15: no class to read a 0xx or 6xx code as
        raise httpx.RemoteProtocolError(f"a status code out of 100-599: {lines[0][:80]!r}")
    return status, int(match[1]), match[3] or b"", headers


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[list[str], list[str], list[str]]:
    """The values of Connection, Transfer-Encoding and Content-Length, in order."""
    found: dict[bytes, list[str]] = {
        b"connection": [],
        b"transfer-encoding": [],
        b"content-length": [],
    }
    for name, value in headers:
        values = found.get(name.lower())
        if values is not None:
            values.append(value.decode("latin-1"))
    return found[b"connection"], found[b"transfer-encoding"], found[b"content-length"]


def _has_token(values: list[str], token: str) -> bool:
    return any(part.strip().lower() == token for value in values for part in value.split(","))


def _content_length(values: list[str]) -> int:
    """One length, however often repeated (`5, 5`); anything else is refused (RFC 9112 6.3)."""
    numbers = {decimal(part.strip(" \t")) for value in values for part in value.split(",")}
    if len(numbers) != 1 or (number := numbers.pop()) is None:
        raise httpx.RemoteProtocolError(f"an invalid Content-Length: {shown(', '.join(values))}")
    return number


async def _send(connection: netstream.Connection, data: bytes, timeouts: _Timeouts) -> None:
    timeout = timeouts.get("write")
    deadline = None
    try:
        if not connection.send(data):
            return
        async with asyncio.timeout(timeout) as deadline:
            await connection.drain()
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
            raise httpx.WriteTimeout(f"could not send in {timeout:g} s") from None
        raise httpx.WriteError(str(exc) or type(exc).__name__) from exc  # ETIMEDOUT too


async def _send_stream(
    connection: netstream.Connection,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    declared: int | None,
    timeouts: _Timeouts,
) -> None:
    """A streamed body: chunked when `declared` is None, else exactly that long."""
    assert isinstance(stream, httpx.AsyncByteStream)  # noqa: S101 - an async client's request
    sent = 0
    async for part in stream:
        if not part:
            continue
        sent += len(part)
        if declared is not None and sent > declared:
            raise httpx.LocalProtocolError(f"a request body over its Content-Length ({declared})")
        framed = part if declared is not None else b"%x\r\n%s\r\n" % (len(part), part)
        await _send(connection, framed, timeouts)
    if declared is None:
        await _send(connection, b"0\r\n\r\n", timeouts)
    elif sent != declared:
        raise httpx.LocalProtocolError(
            f"a request body of {sent} bytes, under its Content-Length ({declared})"
        )
