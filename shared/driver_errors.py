"""Driver errors -> the one error policy: what PostgreSQL, asyncpg, SQLAlchemy and Kafka raise,
translated into `Poison` (this record can never be stored) or `Transient` (the server is away).

The only place that knows SQLSTATE codes. Handlers let driver errors rise; `ConsumerLoop` (and
any loop) calls `translate` before `decide`, so no handler needs to know what a 22021 is.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.errors import Poison, Transient, classify

# SQLSTATE class (two characters) or code -> what it means for the record that caused it.
# 22 data exception (bad datetime, NUL in text, value out of range), 23 integrity violation:
# the same values fail again. 08 connection, 53 resources (too many connections), 57P0x
# shutdown, 40 serialization failure / deadlock, 55P03 lock not available: the server, not
# the record. 23505 (unique) is left unclassified: a race between two consumers looks like it,
# so it gets the bounded retries before it is called poison.
_POISON_CLASSES = frozenset({"22", "23"})
_TRANSIENT_CLASSES = frozenset({"08", "53", "40"})
_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "55P03", "57014"})
_UNDECIDED_CODES = frozenset({"23505"})


def translate(error: BaseException) -> BaseException:
    """`error` as Poison or Transient when a driver raised it; otherwise `error` unchanged."""
    if classify(error) is not None:
        return error
    kind = _database_kind(error) or _broker_kind(error) or _network_kind(error)
    if kind is None:
        return error
    translated = kind(_describe(error, kind))
    translated.__cause__ = error
    return translated


def _database_kind(error: BaseException) -> type[Exception] | None:
    if isinstance(error, PoolTimeoutError | DisconnectionError):
        return Transient  # the pool had no connection in time, or a pooled one was dead
    if not _is_database(error):
        return None
    sqlstate = _sqlstate(error)
    if sqlstate is not None:
        return _by_sqlstate(sqlstate)
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Transient
    if _driver_refused_argument(error):
        return Poison
    if isinstance(error, DBAPIError) and _is_connection_problem(error.orig):
        return Transient
    if isinstance(error, asyncpg.InterfaceError):
        return Transient  # connection closed or busy: the record is not to blame
    return None


def _by_sqlstate(sqlstate: str) -> type[Exception] | None:
    if sqlstate in _UNDECIDED_CODES:
        return None
    if sqlstate in _TRANSIENT_CODES or sqlstate[:2] in _TRANSIENT_CLASSES:
        return Transient
    if sqlstate[:2] in _POISON_CLASSES:
        return Poison
    return None


def _sqlstate(error: BaseException) -> str | None:
    """SQLAlchemy wraps an adapter error that wraps asyncpg's; the code may sit on any of them."""
    cause: BaseException | None = error
    while cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            return sqlstate
        cause = getattr(cause, "orig", None) or cause.__cause__
    return None


def _driver_refused_argument(error: BaseException) -> bool:
    """asyncpg could not encode an argument (a str for an int, an int past 2**63): a ValueError
    somewhere in the chain. Nothing was sent; the same value fails the same way again."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ValueError):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__
    return False


def _is_connection_problem(orig: BaseException | None) -> bool:
    cause = orig
    while cause is not None:
        if isinstance(cause, OSError | TimeoutError | asyncpg.InterfaceError):
            return True
        cause = cause.__cause__
    return False


def _broker_kind(error: BaseException) -> type[Exception] | None:
    if isinstance(error, MessageSizeTooLargeError):
        return Poison  # a record too big for the broker stays too big
    return Transient if isinstance(error, KafkaError) else None


def _network_kind(error: BaseException) -> type[Exception] | None:
    # ConnectionRefusedError, a DNS failure, a timeout waiting for a server: nothing about data.
    return Transient if isinstance(error, OSError | TimeoutError) else None


def _describe(error: BaseException, kind: type[Exception]) -> str:
    """The driver's own words (first line), e.g. for the dlq.reason header."""
    shown = _innermost(error)
    lines = str(shown).strip().splitlines()
    said = f"{type(shown).__name__}: {lines[0]}" if lines else type(shown).__name__
    if kind is Poison and _is_database(error):
        return f"the database refused it: {said}"
    return said


def _is_database(error: BaseException) -> bool:
    return isinstance(error, DBAPIError | asyncpg.PostgresError | asyncpg.InterfaceError)


def _innermost(error: BaseException) -> BaseException:
    """asyncpg's own error (named after its SQLSTATE) rather than SQLAlchemy's wrappers."""
    orig = getattr(error, "orig", None)
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, asyncpg.PostgresError | asyncpg.InterfaceError):
            found: BaseException = cause
            return found
        cause = getattr(cause, "orig", None) or cause.__cause__
    return orig if isinstance(orig, BaseException) else error
