"""Backoff for transient failures: a pure function of the attempt, and a loop using it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)


# The database or the broker away: try again at least this often, so work resumes within
# about this long of their return (a longer cap left loops asleep for seconds after an outage
# had ended). Each try is one connection attempt; downstream refusals (an SMTP relay) keep
# their own, longer backoff.
OUTAGE_RETRY_MAX_S = 2.0


def backoff_s(attempt: int, initial_s: float, max_s: float, jitter: float = 0.2) -> float:
    """Exponential backoff with +-jitter; attempt 0 is the first retry."""
    base: float = min(max_s, initial_s * 2.0 ** min(attempt, 30))
    return base * (1 + random.uniform(-jitter, jitter))


async def retry_forever(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    initial_s: float = 0.2,
    max_s: float = 10.0,
    retryable: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Run `operation` until it succeeds, backing off on `retryable` errors; never gives up.

    Backoff waits in real time: brokers and databases come back on the wall clock even when
    a test drives the domain `Clock`.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except retryable as exc:
            delay_s = backoff_s(attempt, initial_s, max_s)
            log.warning(
                "retrying", what=what, attempt=attempt, delay_s=round(delay_s, 2), error=repr(exc)
            )
            attempt += 1
            await sleep(delay_s)
