"""DKIM signing with dkimpy, over the final bytes of a message, just before SMTP DATA.

Relaxed/relaxed canonicalisation (survives the header folding relays do). From, Subject and the
RFC 8058 headers are signed, as mailbox providers require for one-click unsubscribe.
"""

from __future__ import annotations

from dataclasses import dataclass

import dkim

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str
    private_key_pem: bytes


class DkimSigningFailed(ValueError):
    """The key or the message cannot be signed (a configuration error, not a transient one)."""


def dkim_sign(message: bytes, key: DkimKey) -> bytes:
    """The message with its DKIM-Signature header in front."""
    try:
        signature = dkim.sign(
            message,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h for h in SIGNED_HEADERS if _has_header(message, h)],
        )
    except dkim.DKIMException as exc:
        raise DkimSigningFailed(str(exc)) from exc
    return bytes(signature) + message


def _has_header(message: bytes, name: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(name + b":") or (b"\r\n" + name + b":") in head
