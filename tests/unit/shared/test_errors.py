"""The retry decision is a pure function of (error, attempts)."""

from __future__ import annotations

from shared.errors import Action, Poison, Transient, Unavailable, decide
from shared.events import InvalidEvent


def test_poison_and_invalid_events_are_dead_lettered_at_once() -> None:
    assert decide(Poison("bad date"), 1).action is Action.DEAD_LETTER
    assert decide(InvalidEvent("not json"), 1).action is Action.DEAD_LETTER
    assert "bad date" in decide(Poison("bad date"), 1).reason


def test_transient_and_unavailable_are_retried_without_limit() -> None:
    assert decide(Transient("db away"), 1_000).action is Action.RETRY
    assert decide(Unavailable("relay down"), 1_000).action is Action.RELEASE


def test_an_unclassified_error_is_retried_a_few_times_then_dead_lettered() -> None:
    error = TypeError("can't compare offset-naive and offset-aware datetimes")
    assert decide(error, 1).action is Action.RETRY
    assert decide(error, 2).action is Action.RETRY
    final = decide(error, 3)
    assert final.action is Action.DEAD_LETTER
    assert "failed 3 times" in final.reason and "TypeError" in final.reason
