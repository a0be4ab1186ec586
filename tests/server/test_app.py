"""The handler's eager start: finished coroutines answer at once, waiting ones resume in a Task correctly."""

from __future__ import annotations

import asyncio

import pytest

from tidal.server.app import eager


async def _immediate():
    return "done"


async def _waits(fut):
    value = await fut
    await asyncio.sleep(0)
    return value + 1


async def _fails(fut):
    await fut


def test_a_coroutine_that_never_waits_needs_no_task():
    assert eager(_immediate()) == "done"
    assert eager("not a coroutine") == "not a coroutine"


def test_a_waiting_coroutine_resumes_with_the_result_and_exceptions():
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending = eager(_waits(fut))
        task = loop.create_task(pending)
        await asyncio.sleep(0)
        fut.set_result(41)
        assert await task == 42
        fut2 = loop.create_future()
        task2 = loop.create_task(eager(_fails(fut2)))
        await asyncio.sleep(0)
        fut2.set_exception(ValueError("boom"))
        with pytest.raises(ValueError, match="boom"):
            await task2

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_coroutine():
    seen = []

    async def victim(fut):
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        task = loop.create_task(eager(victim(fut)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()

    asyncio.run(main())
    assert seen == ["cancelled"]
