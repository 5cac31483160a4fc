"""reconciler.memo: shared work is cancelled when its last waiter is, never before, and the key
is free again for whoever asks next (a spec past the daemon's spec_deadline frees the slot the
work it started holds, and the next pass starts that work anew)."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.memo import Memo, Shared


def test_shared_work_outlives_one_waiter_and_ends_with_the_last() -> None:
    async def go() -> None:
        started = asyncio.Event()
        held = asyncio.Semaphore(1)  # what the work holds: a concurrency slot

        async def stall() -> str:
            async with held:
                started.set()
                await asyncio.sleep(3600)
            return "never"

        shared = Shared(stall())
        first = asyncio.ensure_future(shared.wait())
        second = asyncio.ensure_future(shared.wait())
        await started.wait()
        first.cancel()
        await asyncio.sleep(0.01)
        assert not shared.task.done() and not shared.abandoned  # second still waits for it
        second.cancel()
        await asyncio.sleep(0.01)
        assert shared.task.cancelled() and shared.abandoned
        assert not held.locked()  # the slot is free at once

    asyncio.run(go())


def test_a_failure_of_the_work_is_not_an_abandonment() -> None:
    async def go() -> None:
        async def fail() -> None:
            raise ValueError("registry said no")

        shared = Shared(fail())
        for _ in range(2):
            with pytest.raises(ValueError, match="registry said no"):
                await shared.wait()
        assert not shared.abandoned

    asyncio.run(go())


def test_a_memo_key_whose_waiters_all_left_is_computed_anew() -> None:
    async def go() -> None:
        calls = []

        async def make(answer: str, wait: float) -> str:
            calls.append(answer)
            await asyncio.sleep(wait)
            return answer

        memo = Memo()
        waiter = asyncio.ensure_future(memo.get("k", lambda: make("stalled", 3600)))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        # The next asker starts the work again rather than being told it was cancelled.
        assert await memo.get("k", lambda: make("fresh", 0)) == "fresh"
        assert await memo.get("k", lambda: make("third", 0)) == "fresh"
        assert calls == ["stalled", "fresh"]

    asyncio.run(go())
