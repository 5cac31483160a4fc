"""The daemon's metrics, in their own prometheus registry (no process-global state), so that
several daemons in one test process never share counters."""

from __future__ import annotations

import collections
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.daemon.status import PENDING, StatusBoard
from reconciler.model.state import SpecState

# The request counts of the pass whose task this is (None: not in a pass).
_pass_counts: contextvars.ContextVar[collections.Counter[str] | None] = contextvars.ContextVar(
    "pass_counts", default=None
)


class Metrics:
    def __init__(self, board: StatusBoard) -> None:
        self.registry = CollectorRegistry()
        self._pass_hosts: set[str] = set()
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
        self.spec_deadlines = Counter(
            "reconciler_spec_deadlines",
            "Spec reconciles cancelled at spec_deadline (each also counts as failed).",
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
        self.notifications = Counter(
            "reconciler_notifications",
            "Notification events, by endpoint (its name or index, never its URL) and result "
            "(delivered, failed, dropped, retried: one per retry).",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self.requests = Counter(
            "reconciler_registry_requests",
            "Requests answered by registries, by host, method and status (0: no answer).",
            ["host", "method", "status"],
            registry=self.registry,
        )
        self.hooks_received = Counter(
            "reconciler_hooks_received",
            "Webhook calls, by hook (registry, git) and result (accepted, unauthorized, "
            "bad_request, rate_limited, too_large).",
            ["hook", "result"],
            registry=self.registry,
        )
        self.hook_relays = Counter(
            "reconciler_hook_relays",
            "Hook calls relayed to peer replicas, by peer and result (sent, failed, dropped).",
            ["peer", "result"],
            registry=self.registry,
        )
        self.hook_specs_queued = Counter(
            "reconciler_hook_specs_queued",
            "Specs queued by registry webhooks (a spec named by several events of one burst "
            "counts once per call).",
            registry=self.registry,
        )
        self.ratelimit_remaining = Gauge(
            "reconciler_registry_ratelimit_remaining",
            "Requests the registry says are left in its window (RateLimit-Remaining), as its "
            "last answer said, by host.",
            ["host"],
            registry=self.registry,
        )
        self.budget_wait = Counter(
            "reconciler_registry_budget_wait_seconds",
            "Seconds requests waited for their host's request budget (ours or the registry's).",
            ["host"],
            registry=self.registry,
        )
        self.pass_requests = Gauge(
            "reconciler_pass_requests",
            "Requests the last reconcile pass sent, by host (0: a host an earlier pass used).",
            ["host"],
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
        counts = _pass_counts.get()
        if counts is not None:  # a request of a pass (the var is set in the pass's task)
            counts[host] += 1

    def on_budget_wait(self, host: str, seconds: float) -> None:
        self.budget_wait.labels(host).inc(seconds)

    def on_ratelimit(self, host: str, remaining: int) -> None:
        self.ratelimit_remaining.labels(host).set(remaining)

    @contextmanager
    def counting_pass(self) -> Iterator[None]:
        """Count the requests of one pass (its task and the tasks it starts, which inherit the
        context), and show them as `reconciler_pass_requests` when it ends. Passes that
        overlap each count their own."""
        counts: collections.Counter[str] = collections.Counter()
        _pass_counts.set(counts)
        try:
            yield
        finally:
            _pass_counts.set(None)
            for host in self._pass_hosts - counts.keys():
                self.pass_requests.labels(host).set(0)
            for host, count in counts.items():
                self.pass_requests.labels(host).set(count)
            self._pass_hosts |= counts.keys()
