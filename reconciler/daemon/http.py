"""The daemon's HTTP surface: /healthz, /readyz, /metrics, /status (read-only, in threads).

Metrics live in their own prometheus registry (no process-global state), so that several
daemons in one test process never share counters.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler.daemon.status import PENDING, StatusBoard
from reconciler.model.state import SpecState


class Metrics:
    def __init__(self, board: StatusBoard) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "reconciler_reconciles",
            "Spec reconciles, by result (synced, failed, invalid).",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Wall time of one reconcile pass over a batch of specs.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.blobs = Counter(
            "reconciler_blobs",
            "Blobs handled for target repositories, by action (mounted, copied, uploaded, "
            "skipped).",
            ["action"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "reconciler_pushed_bytes", "Bytes pushed to registries.", registry=self.registry
        )
        self.requests = Counter(
            "reconciler_registry_requests",
            "Requests answered by registries, by host, method and status (0: no answer).",
            ["host", "method", "status"],
            registry=self.registry,
        )
        specs = Gauge("reconciler_specs", "Specs by state.", ["state"], registry=self.registry)
        for state in SpecState:
            specs.labels(str(state)).set_function(
                lambda state=state: board.counts()[state]  # type: ignore[misc]
            )
        pending = Gauge(
            "reconciler_pending",
            "What the plans of specs not in sync would push (observe mode), by kind: blobs, "
            "bytes, manifests, tags.",
            ["kind"],
            registry=self.registry,
        )
        for kind in PENDING:
            pending.labels(kind).set_function(
                lambda kind=kind: board.pending()[kind]  # type: ignore[misc]
            )

    def on_response(self, host: str, method: str, status: int) -> None:
        self.requests.labels(host, method, str(status)).inc()


class StatusServer:
    def __init__(self, listen: str, board: StatusBoard, metrics: Metrics) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the operator chose the address

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, "text/plain", b"ok\n")
                elif path == "/readyz":
                    ready = board.ready
                    self._send(
                        200 if ready else 503, "text/plain", b"ready\n" if ready else b"starting\n"
                    )
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                elif path == "/status":
                    body = json.dumps(board.snapshot(), indent=2).encode() + b"\n"
                    self._send(200, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, int(port)), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
