"""A local SMTP server that accepts every message and keeps it where a person can read it.

Each message is written to <dir>/<n>-<recipient>.eml (open it with any mail client or a text
editor) and summarised in <dir>/index.jsonl. Tests run the same handler in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class CaughtMail:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, content_type: str) -> str:
        body = self.message.get_body(preferencelist=(content_type.split("/")[1],))
        return "" if body is None else str(body.get_content())


@dataclass
class MailStore:
    """aiosmtpd handler: accepts everything, keeps it in memory and, if given, on disk."""

    directory: Path | None = None
    messages: list[CaughtMail] = field(default_factory=list)
    reject_recipients: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.reject_recipients:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = CaughtMail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        self.messages.append(mail)
        if self.directory is not None:
            self._write(mail)
        return "250 Message accepted for delivery"

    def _write(self, mail: CaughtMail) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        number = len(list(self.directory.glob("*.eml"))) + 1
        safe_to = "".join(c if c.isalnum() or c in "@.-" else "_" for c in mail.recipients[0])
        path = self.directory / f"{number:05d}-{safe_to}.eml"
        path.write_bytes(mail.raw)
        summary = {
            "file": path.name,
            "received_at": datetime.now(UTC).isoformat(),
            "from": mail.sender,
            "to": mail.recipients,
            "subject": str(mail.message["Subject"]),
        }
        with (self.directory / "index.jsonl").open("a") as index:
            index.write(json.dumps(summary) + "\n")
        print(json.dumps({"event": "mail_caught", **summary}), flush=True)


def start_catcher(store: MailStore, port: int, host: str = "127.0.0.1") -> Controller:
    controller = Controller(store, hostname=host, port=port)
    controller.start()
    return controller


async def _serve(port: int, directory: Path) -> None:
    controller = start_catcher(MailStore(directory=directory), port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        json.dumps({"event": "mailcatcher_listening", "port": port, "dir": str(directory)}),
        flush=True,
    )
    await stop.wait()
    controller.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path(".local/mail"))
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.dir))
