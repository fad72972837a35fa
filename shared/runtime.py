"""Background loops of a service: started together, cancelled together, never silently dead."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from shared import metrics
from shared.logging import get_logger
from shared.retry import backoff_s

log = get_logger(__name__)
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
