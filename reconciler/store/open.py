"""Open the store for a Location: the one module that knows every implementation.

Registries share one HTTP transport (pools, credentials, retries) and a client per host; a
registry location is one repository of its host's client. A local store is opened once per
path and run, so that an archive is indexed once however many specs read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import PushError
from reconciler.oci.location import Location, Scheme
from reconciler.store.base import ImageReader, ImageWriter
from reconciler.store.registry.budget import BudgetEvents, Budgets
from reconciler.store.registry.client import Registries, RegistryRepository
from reconciler.store.registry.limits import WireLimits
from reconciler.store.registry.retry import RetryPolicy
from reconciler.store.registry.transport import RegistryOptions


class Stores:
    """Every store a run opens, closed together; one concurrency slot pool per store."""

    def __init__(
        self,
        options: Mapping[str, RegistryOptions] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        on_budget: BudgetEvents | None = None,
        limits: WireLimits | None = None,
    ) -> None:
        # Request budgets per registry host, for the process (registry/budget.py); the server's
        # budget counts as low under the concurrency: that many requests may be in flight.
        self.budgets = Budgets(
            cap=(retry or RetryPolicy()).cap, low_water=concurrency, events=on_budget
        )
        self.registries = Registries(
            options, env, timeout, retry, on_response, budgets=self.budgets, limits=limits
        )
        self.retry = self.registries.retry
        self._concurrency = concurrency
        self._slots: dict[Location, asyncio.Semaphore] = {}
        self._open: dict[Location, ImageReader] = {}

    def reader(self, location: Location) -> ImageReader:
        """The store that serves reads of `location`."""
        store = self._open.get(location)
        if store is None:
            store = self._open[location] = self._open_store(location)
        return store

    def writer(self, location: Location) -> ImageWriter:
        """The store that takes writes to `location`; a read-only one is refused here."""
        store = self.reader(location)
        if isinstance(store, RegistryRepository):
            return store
        from reconciler.store.layout import WritableLayout

        if not isinstance(store, WritableLayout):
            raise PushError(f"{location} is read-only: it cannot be a target")
        return store

    def _open_store(self, location: Location) -> ImageReader:
        if location.scheme is Scheme.REGISTRY:
            client = self.registries.client(location.authority)
            return RegistryRepository(client, location)
        # The local stores (and the archive readers under them) are imported by the runs that
        # name one: a registry-only diff is spared 14 ms of start (docs/performance.md).
        from reconciler.store.dockerarchive import DockerArchive
        from reconciler.store.layout import OciLayout, WritableLayout

        if location.scheme is Scheme.DOCKER_ARCHIVE:
            return DockerArchive(location)
        path = Path(location.authority)
        return OciLayout(location) if path.is_file() else WritableLayout(location)

    def slot(self, location: Location) -> asyncio.Semaphore:
        """The per-store limit on requests and blob transfers running at once.

        Each operation takes exactly one slot (a copy takes its destination's), so a limit of 1
        cannot deadlock a copy between two repositories of one registry.
        """
        key = location.store
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.Semaphore(self._concurrency)
        return slot

    def waiting_on(self, spec: str) -> tuple[str, ...]:
        """What a spec's work waits on in the registries now: its requests on the wire
        (`METHOD URL`, oldest first), and a request budget it waits for its turn in."""
        sent = self.registries.transport.in_flight.of(spec)
        host = self.budgets.waiting().get(spec)
        return sent + ((f"its turn in the request budget of {host}",) if host else ())

    async def aclose(self) -> None:
        await self.registries.aclose()
        self._open.clear()

    async def __aenter__(self) -> Stores:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
