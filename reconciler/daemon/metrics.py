"""The daemon's metrics, in their own prometheus registry (no process-global state), so that
several daemons in one test process never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
