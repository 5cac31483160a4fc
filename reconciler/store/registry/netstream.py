"""Sockets for the registry store's HTTP/1.1 (http1.py): an asyncio protocol of our own.

Received data is queued as the chunks asyncio hands over, and a read takes one whole: no buffer
is copied (asyncio's StreamReader copied each byte twice, and a blob download cost twice the
CPU). Reading pauses while READ_LIMIT bytes wait unread. A connection closes by abort: no TLS
close handshake with a peer that may never answer, no wait for unsent bytes a stalled server
will never read. A name with several addresses is tried as RFC 8305 says: the next address
starts after 250 ms without waiting for the first.

Errors are httpx's: a failed connect is ConnectError or ConnectTimeout, and a refused one keeps
the OS errors it came from (every address tried) as its cause.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
from typing import Any

import httpx

# Received bytes a connection holds before asyncio stops reading its socket (resumed at half).
READ_LIMIT = 1024 * 1024
# RFC 8305's connection attempt delay: the next address of a name starts after this long.
ATTEMPT_DELAY = 0.25


class Connection(asyncio.Protocol):
    """One socket's received chunks, its EOF or error, and its write flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.eof = False
        self.error: BaseException | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream socket's
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.queued += len(data)
        self._wake_reader()
        if self.queued > READ_LIMIT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # the transport closes: HTTP/1.1 has no use for a half-closed socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    async def receive(self) -> bytes:
        """The next chunk received, whole; b"" once the peer has closed. Raises the socket's
        error (an OSError or SSLError) if it failed."""
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        chunk = self.chunks.popleft()
        self._taken(len(chunk))
        return chunk

    def push_back(self, data: bytes) -> None:
        """Return the unused end of a chunk: the next receive() starts with it."""
        if data:
            self.chunks.appendleft(data)
            self.queued += len(data)

    def take_all(self) -> bytes:
        """Everything received and not yet read, at once (reading resumes if it was paused)."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self._taken(len(data))
        return data

    def _taken(self, size: int) -> None:
        """`size` bytes left the queue: reading resumes once it is down to half the limit."""
        self.queued -= size
        if self._paused and self.queued <= READ_LIMIT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def send(self, data: bytes) -> bool:
        """Queue `data` on the socket; True if the caller must await drain() before more."""
        if self.transport is None or self.transport.is_closing():
            raise self.error or ConnectionResetError("the connection is closed")
        self.transport.write(data)
        return self._writable is not None

    async def drain(self) -> None:
        while self._writable is not None:
            await self._writable
            if self.error is not None:
                raise self.error

    def reusable(self) -> bool:
        """Idle, open and quiet: no EOF, no error, nothing received while nobody asked."""
        transport = self.transport
        return (
            not self.eof
            and not self.chunks
            and not self._paused
            and transport is not None
            and not transport.is_closing()
        )

    def abort(self) -> None:
        """Close at once: no TLS close handshake, no wait for unsent bytes."""
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float | None
) -> Connection:
    """A connection to host:port, TLS on top when `ssl_context` is given, within `timeout` for
    the TCP connect and the TLS handshake together. Fails with httpx's ConnectError or
    ConnectTimeout; nothing is left open."""
    loop = asyncio.get_running_loop()
    connection = Connection()
    phase = "no connection"
    try:
        async with asyncio.timeout(timeout) as deadline:
            sock = await _connect(host, port)
            try:
                await loop.create_connection(lambda: connection, sock=sock)
            except BaseException:
                sock.close()
                raise
            if ssl_context is not None:
                phase = "TLS handshake not done"
                plain = connection.transport
                assert plain is not None  # noqa: S101 - connection_made ran
                try:
                    tls = await loop.start_tls(
                        plain,
                        connection,
                        ssl_context,
                        server_hostname=host,
                        # Ours is the deadline above; asyncio's own (60 s) must not come first.
                        ssl_handshake_timeout=(timeout or 24 * 3600.0) + 1.0,
                    )
                except BaseException:
                    plain.abort()
                    raise
                if tls is None:
                    plain.abort()
                    raise httpx.ConnectError("the TLS handshake did not complete")
                connection.transport = tls
    except TimeoutError as exc:
        connection.abort()
        if deadline.expired():
            raise httpx.ConnectTimeout(f"{phase} in {timeout:g} s") from exc
        raise httpx.ConnectError(str(exc) or "timed out") from exc  # the system's ETIMEDOUT
    except (OSError, ssl.SSLError) as exc:
        connection.abort()
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    return connection


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to one of `host`'s addresses, in getaddrinfo's order,
    each started ATTEMPT_DELAY after the one before unless that one failed sooner. Fails with
    httpx's ConnectError, its context every address's error (a group)."""
    loop = asyncio.get_running_loop()
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            raise httpx.ConnectError(f"{host}: {exc}") from exc
        addresses: list[tuple[int, Any]] = [(info[0], info[4]) for info in infos]
    else:
        addresses = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, (host, port))]
    if not addresses:
        raise httpx.ConnectError(f"{host}: no address to connect to")

    async def attempt(family: int, address: Any) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    errors: list[OSError] = []
    waiting = iter(addresses)
    running: set[asyncio.Task[socket.socket]] = set()
    try:
        while True:
            following = next(waiting, None)
            if following is not None:
                running.add(asyncio.ensure_future(attempt(*following)))
            if not running:
                break
            done, running = await asyncio.wait(
                running,
                timeout=ATTEMPT_DELAY if following is not None else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            connected = None
            for task in done:
                error = task.exception()
                if error is None:
                    if connected is None:
                        connected = task.result()
                    else:
                        task.result().close()
                elif isinstance(error, OSError):
                    errors.append(error)
                else:
                    raise error
            if connected is not None:
                return connected
    finally:
        for task in running:
            task.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, socket.socket):
                outcome.close()
    cause: OSError | ExceptionGroup[OSError] = errors[0]
    message = str(errors[0])
    if len(errors) > 1:
        cause = ExceptionGroup(f"connecting to {host}:{port}", errors)
        message = f"all {len(errors)} addresses of {host} failed; the last: {errors[-1]}"
    raise httpx.ConnectError(message) from cause  # the cause says if it was refused (http.py)
