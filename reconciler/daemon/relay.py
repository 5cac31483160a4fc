"""Shards share events: a hook call one replica receives is relayed to its peers.

With sharding, a Service spreads webhook calls over the replicas, and the replica that receives
a registry's push knows only its own shard's specs. So each accepted call that did not come
from a peer is sent on, body unchanged, to every peer in `hooks.peers` (the StatefulSet's
stable names through a headless Service; any URLs outside Kubernetes), where it is handled as
a call of its own: its specs are queued by the shard that owns them.

- Authenticated with the same hook secret: the bearer token, and the HMAC-SHA256 of the body
  recomputed with the HMAC secret (the relayed body is byte for byte the received one).
- Never relayed twice: a relayed call carries `X-Reconciler-Relayed: <sender>`, and a replica
  relays only calls without it. The header only ever stops a relay, so forging it gains
  nothing: the call still needs the secret.
- Bounded: at most `relay_queue` calls wait (beyond, the newest is dropped and counted); each
  POST has `relay_timeout` seconds, one try (a peer that misses one relayed push catches up at
  its resync, as it would without relays).
- Counted: reconciler_hook_relays_total{peer, result} (sent, failed, dropped).
- The replica's own URL in the list (all replicas share one list) is skipped: by hostname (a
  StatefulSet pod's hostname is its name, the first label of its stable DNS name), or by port
  on a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from prometheus_client import Counter

from reconciler.daemon.guard import HookAuth

log = logging.getLogger("reconciler.relay")

RELAYED = "x-reconciler-relayed"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Relayed:
    hook: str  # registry, git
    body: bytes
    content_type: str


def own_peers(peers: Sequence[str], port: int, hostname: str | None = None) -> list[str]:
    """`peers` without this replica's own URL."""
    name = (hostname or socket.gethostname()).lower()
    kept = []
    for peer in peers:
        url = httpx.URL(peer)
        host = (url.host or "").lower()
        if host == name or host.startswith(name + "."):
            continue
        if host in _LOOPBACK and (url.port or 80) == port:
            continue
        kept.append(peer.rstrip("/"))
    return kept


class Relay:
    def __init__(
        self,
        peers: Sequence[str],
        auth: HookAuth,
        counter: Counter,
        *,
        sender: str,
        timeout: float = 5.0,
        queue: int = 100,
    ) -> None:
        self.peers = list(peers)
        self._auth = auth
        self._counter = counter
        self._sender = sender
        self._timeout = timeout
        self._queue: asyncio.Queue[Relayed] = asyncio.Queue(queue)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def submit(self, call: Relayed) -> None:
        """Queue a call for the peers; never waits (the caller is answering a hook)."""
        if not self.peers:
            return
        if self._task is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(call)
        except asyncio.QueueFull:
            for peer in self.peers:
                self._counter.labels(peer, "dropped").inc()
            log.warning("hook relay queue full: a /hooks/%s call was not relayed", call.hook)

    async def _run(self) -> None:
        while True:
            call = await self._queue.get()
            await asyncio.gather(*(self._send(peer, call) for peer in self.peers))

    async def _send(self, peer: str, call: Relayed) -> None:
        assert self._client is not None  # noqa: S101 - made with the task
        headers = {"Content-Type": call.content_type, RELAYED: self._sender}
        if self._auth.token is not None:
            headers["Authorization"] = "Bearer " + self._auth.token.decode()
        if self._auth.hmac_secret is not None:
            digest = hmac.new(self._auth.hmac_secret, call.body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = "sha256=" + digest
        try:
            answer = await self._client.post(
                f"{peer}/hooks/{call.hook}", content=call.body, headers=headers
            )
        except httpx.HTTPError as exc:
            self._counter.labels(peer, "failed").inc()
            log.warning("relaying /hooks/%s to %s failed: %s", call.hook, peer, type(exc).__name__)
            return
        result = "sent" if answer.status_code == 202 else "failed"
        self._counter.labels(peer, result).inc()
        if result == "failed":
            log.warning(
                "relaying /hooks/%s to %s: answered %d", call.hook, peer, answer.status_code
            )
        else:
            log.debug("relayed /hooks/%s to %s: %s", call.hook, peer, answer.text.strip())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()
