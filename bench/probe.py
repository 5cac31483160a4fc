"""A timestamping relay: when did a process send its first request?

The relay listens on a loopback port of its own and forwards every connection to a registry,
byte for byte, both ways. It notes the `time.perf_counter()` at which the first byte of the
first connection arrives, so `first - start` (start taken just before the process was
spawned) is exec to first request: interpreter start, imports, settings, specs, up to the
first byte on the wire, as the registry would see it. Registries' access logs have one-second
timestamps; this has the clock of the bench process itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Relay:
    """Forward 127.0.0.1:<port> to `target` (host:port), byte for byte, both ways; a subclass
    sees each piece on its way (`passing`) before it is sent on."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def passing(self, data: bytes, request: bool) -> None:
        """A piece on its way: from the client (`request`) or from the target."""

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while data := source.recv(65536):
                self.passing(data, request)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            source.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()


class FirstByteRelay(Relay):
    """A relay to `target`; `first` is when a byte of a request first came."""

    def __init__(self, target: str) -> None:
        self.first: float | None = None
        super().__init__(target)

    def reset(self) -> None:
        with self._lock:
            self.first = None

    def passing(self, data: bytes, request: bool) -> None:
        if request and self.first is None:
            now = time.perf_counter()
            with self._lock:
                if self.first is None:
                    self.first = now
