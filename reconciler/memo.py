"""One computation per key for the length of a run, shared by every caller that asks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Memo:
    """Concurrent callers with the same key await the same task; its failure is shared too,
    so a run asks a failing registry once. Each caller awaits through a shield, so one
    caller's cancellation does not cancel the work the others wait for.

    A settled task is kept as its outcome alone (the value, or the exception and its
    traceback): a run over ten thousand specs settles some fifteen keys per spec, and a done
    task with its coroutine and context cost several times what it computed."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Future[Any]] = {}
        self._values: dict[Hashable, Any] = {}
        self._errors: dict[Hashable, tuple[BaseException, TracebackType | None]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        if key in self._values:
            value: T = self._values[key]
            return value
        failed = self._errors.get(key)
        if failed is not None:
            raise failed[0].with_traceback(failed[1])
        future = self._tasks.get(key)
        if future is None:
            future = self._tasks[key] = asyncio.ensure_future(make())
            future.add_done_callback(lambda done: self._settle(key, done))
        result: T = await asyncio.shield(future)
        return result

    def _settle(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return  # stays as it is: whoever asks again is told it was cancelled, as before
        del self._tasks[key]
        error = future.exception()
        if error is None:
            self._values[key] = future.result()
        else:
            self._errors[key] = (error, error.__traceback__)
