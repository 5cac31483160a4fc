"""One computation per key for the length of a run, shared by every caller that asks; and the
shared task under it, cancelled once nobody waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Shared(Generic[T]):
    """Work that several callers await, run as a task of its own: one caller's cancellation
    does not cancel what the others wait for. When the last caller waiting is cancelled (a
    spec past the daemon's spec_deadline, a shutdown), the work is cancelled too, so that what
    it holds (a concurrency slot, a connection, a request budget's turn) is freed at once
    rather than when the registry it waits on lets go; it is then `abandoned`, and whoever
    wants the same result later starts it anew.

    A caller that stops waiting because the work itself failed changes nothing: the failure is
    everyone's."""

    def __init__(self, work: Awaitable[T]) -> None:
        self.task: asyncio.Future[T] = asyncio.ensure_future(work)
        self.abandoned = False
        self._waiting = 0

    async def wait(self) -> T:
        self._waiting += 1
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self._waiting == 1 and not self.task.done():
                self.abandoned = True
                self.task.cancel()
            raise
        finally:
            self._waiting -= 1


class Memo:
    """Concurrent callers with the same key await the same task (`Shared`); its failure is
    shared too, so a run asks a failing registry once. One caller's cancellation does not
    cancel the work the others wait for; the last one's does, and the key is free again.

    A settled task is kept as its outcome alone (the value, or the exception and its
    traceback): a run over ten thousand specs settles some fifteen keys per spec, and a done
    task with its coroutine and context cost several times what it computed."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, Shared[Any]] = {}
        self._values: dict[Hashable, Any] = {}
        self._errors: dict[Hashable, tuple[BaseException, TracebackType | None]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        if key in self._values:
            value: T = self._values[key]
            return value
        failed = self._errors.get(key)
        if failed is not None:
            raise failed[0].with_traceback(failed[1])
        shared = self._tasks.get(key)
        if shared is None or shared.abandoned:
            shared = self._tasks[key] = Shared(make())
            shared.task.add_done_callback(lambda done: self._settle(key, shared, done))
        result: T = await shared.wait()
        return result

    def _settle(self, key: Hashable, shared: Shared[Any], future: asyncio.Future[Any]) -> None:
        if self._tasks.get(key) is shared:
            del self._tasks[key]
        if future.cancelled():
            return  # abandoned (or a shutdown): whoever asks again starts it anew
        error = future.exception()
        if error is None:
            self._values[key] = future.result()
        else:
            self._errors[key] = (error, error.__traceback__)
