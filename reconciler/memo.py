"""One computation per key for the length of a run, shared by every caller that asks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class Memo:
    """Concurrent callers with the same key await the same task; its failure is shared too,
    so a run asks a failing registry once. Each caller awaits through a shield, so one
    caller's cancellation does not cancel the work the others wait for."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        future = self._tasks.get(key)
        if future is None:
            future = self._tasks[key] = asyncio.ensure_future(make())
        result: T = await asyncio.shield(future)
        return result
