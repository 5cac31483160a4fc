"""httpcore's network layer on asyncio's own streams, without anyio in between.

Profiled on a no-op over 3,000 specs (6,010 HEADs): a quarter of the process's CPU was anyio's
wrapping of asyncio, not HTTP. Each request made the pool ask every idle connection whether
it had expired, and anyio answered through a freshly built dict of attribute getters (one of
them a getpeername system call) per connection per request; every read and write entered a
cancel scope that looked up the current task. Here an idle connection's check is a poll of
its socket and the reader's EOF, and a deadline is `asyncio.timeout`.

Errors are httpcore's, so httpx maps them as it does for its own backends: a refused connect
keeps the OS errors it came from (every address tried) as its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

# A reader's buffer holds this much before asyncio stops reading the socket: with httpcore
# reading 1 MiB at a time (http.py), a blob streams in reads of up to that size.
READ_LIMIT = 1024 * 1024

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._socket = writer.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no data in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not send in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake not done in {timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle and readable means the server closed it (or sent what it should not have).
            # asyncio reads the socket as data comes, so an EOF may already sit in the reader.
            return self._reader.at_eof() or is_socket_readable(self._socket)
        if info == "socket":
            return self._socket
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
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
        try:
            async with asyncio.timeout(timeout):
                sock = await _connect(host, port, local_address)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection in {timeout:g} s") from exc
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT)
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(reader, writer)

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
    """A connected non-blocking socket: each address of `host` in turn, as getaddrinfo orders
    them. Fails with httpcore's ConnectError caused by every address's error (a group)."""
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
    errors: list[OSError] = []
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if local_address is not None:
                sock.bind((local_address, 0))
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
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
