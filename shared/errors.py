"""One error policy for every consumer and timer loop: what failed decides what happens next.

Like getsentry/arroyo's `InvalidMessage` + DLQ policy and procrastinate's pure
`get_retry_decision`: adapters translate driver errors into three classes, and loops decide
by class with `decide(error, attempts)`, a pure function.

- `Poison`: this record can never succeed. Dead-letter it with the reason and go on.
- `Transient`: the database or broker is away. Back off and retry, without limit: the
  record is fine, the world is not.
- `Unavailable`: a downstream (the SMTP relay, a platform API) cannot take work now.
  Release what was claimed and retry later, without limit.
- anything else is unclassified: retried a bounded number of times, then treated as poison,
  so a partition never stalls on one record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.events import InvalidEvent

# An unclassified error gets this many tries before the record is dead-lettered.
MAX_UNCLASSIFIED_ATTEMPTS = 3


class Poison(Exception):
    """This record can never be processed; it goes to the dead-letter topic with the reason."""


class InvalidRecord(Poison):
    """Poison that names its record (like arroyo's InvalidMessage): the loop dead-letters exactly
    that one and hands the rest of the batch back to the handler, without trying each alone."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason


class Transient(Exception):
    """The database or the broker is unreachable or overloaded; retry the same work later."""


class Unavailable(Exception):
    """A downstream (SMTP relay, platform API) refuses work for now; release it, retry later."""


class Action(enum.Enum):
    RETRY = "retry"  # back off, then the same work again
    RELEASE = "release"  # give claimed work back, back off, then try again
    DEAD_LETTER = "dead_letter"  # record the reason, skip the record, go on


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def classify(error: BaseException) -> type[Exception] | None:
    """The class an error belongs to, or None when nobody classified it."""
    if isinstance(error, Poison | InvalidEvent):
        return Poison
    if isinstance(error, Transient):
        return Transient
    if isinstance(error, Unavailable):
        return Unavailable
    return None


def decide(
    error: BaseException, attempts: int, max_attempts: int = MAX_UNCLASSIFIED_ATTEMPTS
) -> Decision:
    """What to do after `attempts` tries (1 = the first) of one record failed with `error`."""
    kind = classify(error)
    reason = describe(error)
    if kind is Poison:
        return Decision(Action.DEAD_LETTER, reason)
    if kind is Transient:
        return Decision(Action.RETRY, reason)
    if kind is Unavailable:
        return Decision(Action.RELEASE, reason)
    if attempts >= max_attempts:
        return Decision(Action.DEAD_LETTER, f"failed {attempts} times: {reason}")
    return Decision(Action.RETRY, reason)


def describe(error: BaseException) -> str:
    """The reason as a person reads it: our own errors say it all, others carry their name."""
    text = str(error)
    if classify(error) is not None and text:
        return text
    name = type(error).__name__
    return f"{name}: {text}" if text else name
