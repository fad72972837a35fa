"""Stopping a service's tasks: every task ends, even one whose first cancel was lost."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime import cancel_and_wait, quietly, wait_any

AGAIN_S = 0.01
BOUND_S = 5.0  # far beyond what any of these needs; reached only if a stop hangs


async def _connect_then_retry(connected: asyncio.Future[str], steps: list[str]) -> None:
    """Like a dispatcher's SMTP connection: wait_for the connect, then go on with the mail."""
    steps.append(await asyncio.wait_for(connected, 60))
    while True:  # the relay never answers: retry, as the dispatcher does
        await asyncio.sleep(3600)
        steps.append("retried")


async def test_a_task_stopped_as_its_connect_completes_still_ends() -> None:
    """On Python 3.11 wait_for returns the connect's result and drops a cancel that arrives
    in the same turn of the loop; the task goes on to its retries. It is cancelled again."""
    steps: list[str] = []
    connected: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_connect_then_retry(connected, steps))
    await asyncio.sleep(0)  # the task waits for its connect
    connected.set_result("connected")  # the connect ends, and the stop comes in this turn
    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait([task], again_s=AGAIN_S)
    assert task.cancelled()
    assert "retried" not in steps


async def test_a_task_that_ignores_cancels_is_cancelled_until_it_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 3:
                    raise

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait([task], again_s=AGAIN_S)
    assert task.cancelled() and cancels == 3
    assert "cancel_repeated" in capsys.readouterr().out


async def test_tasks_that_ended_or_failed_are_waited_for_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("broker away")

    failed = asyncio.create_task(fails())
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    running = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait([failed, finished, running], again_s=AGAIN_S)
    assert isinstance(failed.exception(), RuntimeError)
    assert finished.done() and not finished.cancelled()
    assert running.cancelled()


async def test_wait_any_returns_with_the_first_and_ends_the_others() -> None:
    first = asyncio.ensure_future(asyncio.sleep(0))
    other = asyncio.ensure_future(asyncio.sleep(3600))
    async with asyncio.timeout(BOUND_S):
        await wait_any(first, other)
    assert first.done() and not first.cancelled()
    assert other.cancelled()


async def test_wait_any_cancelled_by_its_caller_ends_every_wait() -> None:
    waits = [asyncio.ensure_future(asyncio.sleep(3600)) for _ in range(2)]
    waiting = asyncio.create_task(wait_any(*waits))
    await asyncio.sleep(0)
    waiting.cancel()
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(waiting, return_exceptions=True)
    assert all(w.cancelled() for w in waits)


async def test_a_failed_stop_step_is_logged_and_the_next_one_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    done: list[str] = []

    async def leave_group() -> None:
        raise ConnectionRefusedError("the broker is away")

    async def dispose() -> None:
        done.append("database released")

    await quietly(leave_group(), "consumer")
    await quietly(dispose(), "engine")
    assert done == ["database released"]
    out = capsys.readouterr().out
    assert "stop_step_failed" in out and "consumer" in out and "the broker is away" in out
