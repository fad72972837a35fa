"""SMTP through aiosmtplib, one step at a time, so a failure says how far the message got."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

from aiosmtplib import SMTP, SMTPException, SMTPResponseException

from services.dispatcher.adapters.dkim import DkimKey, dkim_sign
from services.dispatcher.domain.content import RenderedMessage
from services.dispatcher.domain.decisions import SmtpFailure, Stage


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


class SendFailed(Exception):
    def __init__(self, failure: SmtpFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def compose(
    *,
    rendered: RenderedMessage,
    mail_from: str,
    to_email: str,
    to_name: str,
    message_id: str,
    date: datetime,
    headers: Sequence[tuple[str, str]] = (),
) -> EmailMessage:
    """A multipart/alternative mail: the plain-text part first, the HTML part preferred."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = mail_from
    message["To"] = formataddr((to_name, to_email)) if to_name else to_email
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    for name, value in headers:
        message[name] = value
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


class SmtpMailer:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

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

    async def send(self, message: EmailMessage, dkim: DkimKey | None = None) -> None:
        """Deliver to the relay; raises SendFailed saying at which stage it stopped."""
        sender = parseaddr(str(message["From"]))[1]
        recipient = parseaddr(str(message["To"]))[1]
        raw = message.as_bytes(policy=policy.SMTP)
        if dkim is not None:
            raw = dkim_sign(raw, dkim)  # over the exact bytes DATA sends
        smtp = self._client()
        stage: Stage = "connect"
        try:
            await smtp.connect()
            stage = "envelope"
            await smtp.mail(sender)
            stage = "recipient"
            await smtp.rcpt(recipient)
            stage = "data"
            await smtp.data(raw)
        except SMTPResponseException as exc:
            raise SendFailed(SmtpFailure(stage, exc.code, exc.message)) from exc
        except (SMTPException, OSError) as exc:
            raise SendFailed(SmtpFailure(stage, None, f"{type(exc).__name__}: {exc}")) from exc
        finally:
            await _close(smtp)


async def _close(smtp: SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.quit()
    except (SMTPException, OSError):
        smtp.close()
