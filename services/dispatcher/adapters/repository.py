"""dispatcher.messages: one row per request key, claimed before SMTP is spoken."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.domain.records import FinalStatus, MessageRecord

SCHEMA = "dispatcher"
# What a database outage looks like from here; worth waiting out, never worth a wrong record.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)

metadata = MetaData(schema=SCHEMA)
messages = Table(
    "messages",
    metadata,
    Column("request_key", Text, primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("journey_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("smtp_message_id", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "status IN ('sending', 'sent', 'failed', 'suppressed')", name="messages_status_known"
    ),
)


def _record(row: Row[tuple[object, ...]]) -> MessageRecord:
    return MessageRecord(**row._asdict())


class MessageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, request_key: str) -> MessageRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(messages).where(messages.c.request_key == request_key))
            ).first()
        return None if row is None else _record(row)

    async def insert(self, record: MessageRecord) -> bool:
        """Store a new record (a claim when its status is 'sending'); False if the key exists."""
        statement = (
            insert(messages)
            .values(**vars(record))
            .on_conflict_do_nothing(index_elements=["request_key"])
            .returning(messages.c.request_key)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def count_attempt(self, request_key: str, now: datetime) -> int:
        """Record that SMTP is about to be tried once more; returns the attempt number."""
        statement = (
            update(messages)
            .where(messages.c.request_key == request_key)
            .values(attempts=messages.c.attempts + 1, updated_at=now)
            .returning(messages.c.attempts)
        )
        async with self._engine.begin() as conn:
            attempts: int = (await conn.execute(statement)).scalar_one()
        return attempts

    async def finish(
        self,
        request_key: str,
        status: FinalStatus,
        reason: str | None,
        smtp_message_id: str | None,
        now: datetime,
    ) -> MessageRecord:
        statement = (
            update(messages)
            .where(messages.c.request_key == request_key)
            .values(status=status, reason=reason, smtp_message_id=smtp_message_id, updated_at=now)
            .returning(*messages.c)
        )
        async with self._engine.begin() as conn:
            return _record((await conn.execute(statement)).one())

    async def release(self, request_key: str) -> None:
        """Give a claim back when nothing reached the SMTP server, so a retry may send."""
        statement = delete(messages).where(
            messages.c.request_key == request_key, messages.c.status == "sending"
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
