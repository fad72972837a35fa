"""Group commit for the 'data' mark: every mail waits for the one statement that covers it.

A connection that has its envelope accepted asks the gate before it issues DATA. Keys that
arrive while a statement is running are marked together by the next one, so a batch spread
over N connections costs about one durable commit per N mails, and no DATA command ever goes
out before its row says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class DataGate:
    def __init__(self, mark: Callable[[Sequence[str]], Awaitable[set[str]]]) -> None:
        self._mark = mark  # marks the keys, returns those it was allowed to mark
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.statements = 0

    async def enter(self, key: str) -> bool:
        """True once the key is durably marked; False when the row is not ours any more."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, {}
            self.statements += 1
            try:
                marked = await self._mark(list(group))
            except Exception as exc:
                for future in group.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for key, future in group.items():
                if not future.done():
                    future.set_result(key in marked)
        self._flusher = None

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
