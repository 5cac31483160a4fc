"""A small real HTTP(S) server with canned answers: documents no real registry would store, and
the far end of redirects (it records every request's headers)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]


@contextmanager
def canned_server(
    routes: dict[str, Answer],
    seen: list[Received] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[str]:
    """Serve `routes` (path -> Answer) on a free loopback port; yields "127.0.0.1:PORT".

    Every request is appended to `seen`; `tls` (certificate, key) serves HTTPS.
    """

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            if seen is not None:
                seen.append(Received(self.command, self.path, dict(self.headers.items())))
            answer = routes.get(self.path.split("?", 1)[0], Answer(404, {}, b"{}"))
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if "Content-Length" not in answer.headers:
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if with_body:
                self.wfile.write(answer.body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
