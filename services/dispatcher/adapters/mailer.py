"""SMTP through aiosmtplib: persistent connections, one step at a time, so a failure says how
far the message got.

A connection is opened once and reused for mail after mail (a new connection per mail costs
the relay a TCP and EHLO handshake each time). It reconnects by itself after it broke; after
a refused envelope it sends RSET so the next mail starts clean; after the relay throttled it
(4xx) or dropped it, the connection waits before taking the next mail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPStatus,
)

from services.dispatcher.domain.decisions import SmtpFailure, Stage
from shared.retry import backoff_s

# The relay closes the connection with this code (e.g. too many connections or mails).
SERVICE_CLOSING = 421
# An ASCII address that goes on the command line as it is: no name, space, <, > or quote.
_PLAIN_ADDRESS = re.compile(r'[^\s<>"@]+@[^\s<>"@]+', re.ASCII)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False
    timeout_s: float = 10.0
    local_hostname: str | None = None
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    content: bytes  # the whole message, CRLF line ends


class ClaimLost(Exception):
    """The DATA gate said no: another dispatcher owns the request now. Nothing was sent."""


class SmtpConnection:
    """One persistent connection to the relay."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._smtp: SMTP | None = None
        self._setbacks = 0  # failures in a row, for this connection's backoff

    def _client(self) -> SMTP:
        c = self._config
        return SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.tls,
            start_tls=c.starttls and not c.tls,
            timeout=c.timeout_s,
            local_hostname=c.local_hostname,
        )

    async def send(
        self, envelope: Envelope, before_data: Callable[[], Awaitable[bool]]
    ) -> SmtpFailure | None:
        """None when the relay accepted the message, else how far it got and what was said.

        `before_data` runs after the envelope was accepted and before DATA is issued; False
        (or an exception) aborts the transaction with RSET and raises ClaimLost (or that).
        """
        stage: Stage = "connect"
        try:
            smtp = await self._connected()
            stage = "envelope"
            await _mail_from(smtp, envelope.sender)
            stage = "recipient"
            await _rcpt_to(smtp, envelope.recipient)
            await self._gate(smtp, before_data)
            stage = "data"
            await smtp.data(envelope.content)
        except SMTPResponseException as exc:
            await self._after_refusal(exc.code, stage)
            return SmtpFailure(stage, exc.code, exc.message)
        except (SMTPException, OSError, TimeoutError) as exc:
            self.close()
            self._setbacks += 1
            return SmtpFailure(stage, None, f"{type(exc).__name__}: {exc}")
        self._setbacks = 0
        return None

    async def _connected(self) -> SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            self.close()
            self._smtp = self._client()
            await self._smtp.connect()
        return self._smtp

    async def _gate(self, smtp: SMTP, before_data: Callable[[], Awaitable[bool]]) -> None:
        try:
            allowed = await before_data()
        except Exception:
            await self._reset(smtp)
            raise
        if not allowed:
            await self._reset(smtp)
            raise ClaimLost

    async def _after_refusal(self, code: int, stage: Stage) -> None:
        if 400 <= code < 500:
            self._setbacks += 1
        if code == SERVICE_CLOSING or stage == "connect":
            self.close()
        elif stage in ("envelope", "recipient") and self._smtp is not None:
            await self._reset(self._smtp)

    async def _reset(self, smtp: SMTP) -> None:
        """End a half-done transaction so the next mail starts clean; a broken line is closed."""
        try:
            await smtp.rset()
        except (SMTPException, OSError, TimeoutError):
            self.close()

    async def pause(self) -> None:
        """After throttling or a broken line, wait before this connection takes more mail."""
        if self._setbacks:
            c = self._config
            await asyncio.sleep(backoff_s(self._setbacks - 1, c.backoff_initial_s, c.backoff_max_s))

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def _plain(smtp: SMTP, address: str) -> bool:
    """aiosmtplib's mail() and rcpt() parse each address again (about a tenth of the SMTP
    CPU per mail); a plain address needs none of it. The first mail on a connection and any
    other address take the library's way (it also says EHLO first)."""
    return (
        not smtp.is_ehlo_or_helo_needed
        and address.isascii()
        and _PLAIN_ADDRESS.fullmatch(address) is not None
    )


async def _mail_from(smtp: SMTP, address: str) -> None:
    if not _plain(smtp, address):
        await smtp.mail(address)
        return
    response = await smtp.execute_command(b"MAIL", b"FROM:<%s>" % address.encode())
    if response.code != SMTPStatus.completed:
        raise SMTPSenderRefused(response.code, response.message, address)


async def _rcpt_to(smtp: SMTP, address: str) -> None:
    if not _plain(smtp, address):
        await smtp.rcpt(address)
        return
    response = await smtp.execute_command(b"RCPT", b"TO:<%s>" % address.encode())
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise SMTPRecipientRefused(response.code, response.message, address)


class SmtpPool:
    """A fixed set of persistent connections; each carries one mail at a time."""

    def __init__(self, config: SmtpConfig, size: int) -> None:
        self.connections = [SmtpConnection(config) for _ in range(size)]

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
