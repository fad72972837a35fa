"""Background loops of a service: started together, cancelled together, never silently dead."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from shared import metrics
from shared.logging import get_logger
from shared.retry import backoff_s

log = get_logger(__name__)
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
CANCEL_AGAIN_S = 1.0  # a task still running this long after its cancel is cancelled again


def quiet_garbage_collector() -> None:
    """Fewer, shorter collections, once start-up is done: a batch or request allocates many
    short-lived objects (pydantic models, dicts), so collections ran every few records, and
    the older ones walked every module and model class loaded at start-up (scipy's among
    them). Their pauses showed in the webhooks' p99 and in the scheduler's CPU per activity."""
    gc.freeze()  # what start-up made lives as long as the process: never scan it again
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


class Loops:
    def __init__(self, service: str) -> None:
        self._service = service
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """A loop that crashes is logged and restarted with backoff; the process stays up."""
        attempt = 0
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.ERRORS.labels(self._service, f"loop:{name}").inc()
                delay_s = backoff_s(attempt, 0.5, 15.0)
                log.exception("loop_crashed", loop=name, delay_s=round(delay_s, 2), error=repr(exc))
                attempt += 1
                await asyncio.sleep(delay_s)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], again_s: float = CANCEL_AGAIN_S
) -> None:
    """Cancels the tasks and returns once every one has ended.

    One cancel is not always enough on Python 3.11: `asyncio.wait_for` drops a cancellation
    that arrives in the same turn of the loop as the end of what it waits for, and goes on
    (aiosmtplib connects that way). A dispatcher stopped just as its SMTP connection opened
    then kept retrying the mail, and its stop never returned. So a task still running after
    `again_s` is cancelled again, until it ends. Their errors are retrieved, not raised."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_s)
        if pending:
            log.warning("cancel_repeated", tasks=sorted(_name(t) for t in pending))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio does not log it as never retrieved


async def wait_any(*waits: asyncio.Future[Any]) -> None:
    """Returns when the first of the waits is done; the others are cancelled and ended (also
    when the caller is cancelled)."""
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(waits)


async def quietly(step: Awaitable[None], what: str) -> None:
    """One step of a service's stop: an error (a client that never connected, a broker that
    is away) is logged and the stop goes on, so the steps after it still run."""
    try:
        await step
    except Exception as exc:
        log.warning("stop_step_failed", step=what, error=repr(exc))


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
