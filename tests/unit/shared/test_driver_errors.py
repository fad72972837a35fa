"""Driver errors become Poison or Transient by what they say about the record, not by where."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from asyncpg import exceptions as pg
from sqlalchemy.exc import DBAPIError

from shared.driver_errors import translate
from shared.errors import Action, Poison, Transient, decide


def wrapped(error: BaseException) -> DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises: its error, around an adapter error, around
    asyncpg's."""
    adapter_error = Exception(f"<class '{type(error).__name__}'>: {error}")
    adapter_error.__cause__ = error
    return DBAPIError("INSERT ...", {}, adapter_error)


@pytest.mark.parametrize(
    "error",
    [
        pg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        pg.DatetimeFieldOverflowError("date/time field value out of range"),
        pg.InvalidDatetimeFormatError("invalid input syntax for type timestamp"),
        pg.NumericValueOutOfRangeError("value out of range"),
        pg.NotNullViolationError("null value in column"),
        pg.CheckViolationError("violates check constraint"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $9"),
    ],
)
def test_what_the_database_refuses_for_its_content_is_poison(error: Exception) -> None:
    for raised in (error, wrapped(error)):
        translated = translate(raised)
        assert isinstance(translated, Poison), raised
        assert str(translated).startswith("the database refused it: ")
        assert decide(translated, 1).action is Action.DEAD_LETTER


@pytest.mark.parametrize(
    "error",
    [
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.SerializationError("could not serialize access"),
        pg.DeadlockDetectedError("deadlock detected"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        KafkaConnectionError("unable to bootstrap"),
        KafkaTimeoutError(),
    ],
)
def test_a_server_that_is_away_or_busy_is_transient(error: Exception) -> None:
    raised = wrapped(error) if isinstance(error, asyncpg.PostgresError) else error
    translated = translate(raised)
    assert isinstance(translated, Transient), raised
    assert decide(translated, 1_000).action is Action.RETRY


def test_a_refused_connection_under_sqlalchemy_is_transient() -> None:
    assert isinstance(translate(wrapped(ConnectionRefusedError(111, "refused"))), Transient)


@pytest.mark.parametrize(
    "error",
    [
        TypeError("can't compare offset-naive and offset-aware datetimes"),
        pg.UniqueViolationError("duplicate key value"),  # may be a race: bounded retries
        KeyError("x"),
    ],
)
def test_anything_else_stays_unclassified(error: Exception) -> None:
    raised = wrapped(error) if isinstance(error, asyncpg.PostgresError) else error
    assert translate(raised) is raised
    assert decide(raised, 1).action is Action.RETRY
    assert decide(raised, 3).action is Action.DEAD_LETTER


def test_already_classified_errors_pass_unchanged() -> None:
    poison = Poison("bad")
    assert translate(poison) is poison
