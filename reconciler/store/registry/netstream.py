"""httpcore's network layer on an asyncio protocol of its own, without anyio's streams between.

Profiled on a no-op over 3,000 specs (6,010 HEADs): a quarter of the process's CPU was anyio's
wrapping of asyncio, not HTTP. Each request made the pool ask every idle connection whether
it had expired, and anyio answered through a freshly built dict of attribute getters (one of
them a getpeername system call) per connection per request; every read and write entered a
cancel scope that looked up the current task. Here an idle connection's check is its EOF, its
queue and a poll of its socket, and a deadline is `asyncio.timeout`. Received data is queued
as the chunks asyncio hands over, and a read takes one: no buffer is copied (asyncio's
StreamReader copied each byte twice, and a blob download cost twice the CPU).

A connection closes by abort: no TLS close handshake with a peer that may never answer, no
wait for unsent bytes a stalled server will never read. A name with several addresses is
tried as RFC 8305 says: the next address starts after 250 ms without waiting for the first.

Errors are httpcore's, so httpx maps them as it does for its own backends: a refused connect
keeps the OS errors it came from (every address tried) as its context.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

# Received bytes a connection holds before asyncio stops reading its socket (resumed at half).
READ_LIMIT = 1024 * 1024
# RFC 8305's connection attempt delay: the next address of a name starts after this long.
ATTEMPT_DELAY = 0.25

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Connection(asyncio.Protocol):
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

    async def read(self, max_bytes: int) -> bytes:
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.queued -= len(chunk)
        if self._paused and self.queued <= READ_LIMIT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.error or ConnectionResetError("the connection is closed")
        self.transport.write(data)
        while self._writable is not None:
            await self._writable
            if self.error is not None:
                raise self.error


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, connection: _Connection, sock: socket.socket) -> None:
        self._connection = connection
        self._socket = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._connection.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no data in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._connection.write(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not send in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._connection.transport is not None:
            self._connection.transport.abort()
        await asyncio.sleep(0)  # the transport's connection_lost runs: the socket is closed

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        transport = self._connection.transport
        assert transport is not None  # noqa: S101 - connected before TLS starts
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake not done in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            transport.abort()
            raise
        if tls is None:
            transport.abort()
            raise httpcore.ConnectError("the TLS handshake did not complete")
        self._connection.transport = tls
        return self

    def get_extra_info(self, info: str) -> Any:
        connection = self._connection
        if info == "is_readable":
            # Idle and readable means the server closed it (or sent what it should not have).
            return connection.eof or bool(connection.chunks) or is_socket_readable(self._socket)
        if info == "socket":
            return self._socket
        transport = connection.transport
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                sock = await _connect(host, port, local_address)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection in {timeout:g} s") from exc
        connection = _Connection()
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            await loop.create_connection(lambda: connection, sock=sock)
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        return AsyncioStream(connection, sock)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by reconciler")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(host: str, port: int, local_address: str | None) -> socket.socket:
    """A connected non-blocking socket to one of `host`'s addresses, in getaddrinfo's order,
    each started ATTEMPT_DELAY after the one before unless that one failed sooner. Fails with
    httpcore's ConnectError, its context every address's error (a group)."""
    loop = asyncio.get_running_loop()
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        addresses: list[tuple[int, Any]] = [(info[0], info[4]) for info in infos]
    else:
        addresses = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, (host, port))]
    if not addresses:
        raise httpcore.ConnectError(f"{host}: no address to connect to")

    async def attempt(family: int, address: Any) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if local_address is not None:
                sock.bind((local_address, 0))
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
    error = httpcore.ConnectError(message)
    # httpcore's pool re-raises a failed connect `from None`, which drops the cause and keeps
    # the context: the context is what says the connection was refused (http.py).
    error.__context__ = cause
    raise error from cause
