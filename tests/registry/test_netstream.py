"""The registry store's network layer (store/registry/netstream.py) against servers that
misbehave at the socket: each request ends, with httpx's error for what went wrong, instead of
hanging; a body larger than what a connection queues arrives whole."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from reconciler.store.registry import netstream
from reconciler.store.registry.http import _transport
from tests.support.server import Answer, canned_server

# An outer bound, far above every timeout below: a test that reaches it found a hang.
HANG = 20.0


@contextmanager
def mute_server() -> Iterator[tuple[str, int]]:
    """Accepts connections, then neither reads nor writes: a TLS peer silent in its handshake,
    a server that stops reading an upload."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def request(method: str, url: str, timeouts: dict[str, float], **kw: Any) -> httpx.Request:
    return httpx.Request(method, url, extensions={"timeout": timeouts}, **kw)


async def send(
    url: str, req: httpx.Request, verify: ssl.SSLContext | bool = False, linger: float = 0.0
) -> bytes:
    transport = _transport(httpx.URL(url), verify)
    try:
        async with asyncio.timeout(HANG):
            response = await transport.handle_async_request(req)
            await asyncio.sleep(linger)  # the body arrives while nobody reads it
            body = await response.aread()
            await response.aclose()
            return body
    finally:
        async with asyncio.timeout(HANG):
            await transport.aclose()


def test_a_tls_peer_silent_in_its_handshake_is_a_connect_timeout() -> None:
    with mute_server() as (host, port):
        url = f"https://{host}:{port}/v2/"
        timeouts = {"connect": 0.5, "read": 5.0, "write": 5.0, "pool": 5.0}
        with pytest.raises(httpx.ConnectTimeout, match="TLS handshake"):
            asyncio.run(send(url, request("GET", url, timeouts), ssl.create_default_context()))


def test_an_upload_the_server_stops_reading_is_a_write_timeout() -> None:
    async def body() -> Any:
        for _ in range(256):
            yield b"x" * (1 << 20)

    with mute_server() as (host, port):
        url = f"http://{host}:{port}/v2/r/blobs/uploads/1"
        timeouts = {"connect": 5.0, "read": 5.0, "write": 0.5, "pool": 5.0}
        headers = {"Content-Length": str(256 << 20)}
        with pytest.raises(httpx.WriteTimeout):
            asyncio.run(send(url, request("PUT", url, timeouts, headers=headers, content=body())))


def test_a_name_whose_first_address_never_answers_is_reached_on_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8305's staggered attempts: a dual-stack name whose first route drops packets."""
    with canned_server({"/v2/": Answer(200, {}, b"{}")}) as registry:
        port = int(registry.rsplit(":", 1)[1])

        async def main() -> bytes:
            loop = asyncio.get_running_loop()
            real_connect = loop.sock_connect

            async def getaddrinfo(host: str, port_: int, **_kw: Any) -> list[Any]:
                assert host == "dual.test"
                tcp = (socket.SOCK_STREAM, 6, "")
                return [
                    (socket.AF_INET, *tcp, ("127.0.0.2", port_)),  # dropped: never answers
                    (socket.AF_INET, *tcp, ("127.0.0.1", port_)),
                ]

            async def sock_connect(sock: socket.socket, address: Any) -> None:
                if address[0] == "127.0.0.2":
                    await asyncio.Event().wait()
                await real_connect(sock, address)

            monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
            monkeypatch.setattr(loop, "sock_connect", sock_connect)
            url = f"http://dual.test:{port}/v2/"
            # A connect timeout the first address alone would use up.
            timeouts = {"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 5.0}
            return await send(url, request("GET", url, timeouts))

        assert asyncio.run(main()) == b"{}"


def test_a_body_larger_than_a_connection_queues_arrives_whole() -> None:
    """Reading pauses when READ_LIMIT bytes wait unread, and resumes as they are taken."""
    paused: list[int] = []
    real = netstream.Connection.data_received

    def data_received(self: netstream.Connection, data: bytes) -> None:
        real(self, data)
        if self.queued > netstream.READ_LIMIT:
            paused.append(self.queued)

    body = hashlib.sha256(b"seed").digest() * (5 * netstream.READ_LIMIT // 32 + 7)
    with canned_server({"/blob": Answer(200, {}, body)}) as server:
        url = f"http://{server}/blob"
        timeouts = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(netstream.Connection, "data_received", data_received)
            got = asyncio.run(send(url, request("GET", url, timeouts), linger=0.5))
    assert paused and max(paused) < 2 * netstream.READ_LIMIT  # it paused, and held no more
    assert len(got) == len(body) and hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
