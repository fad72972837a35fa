"""The e-mail as it goes over the wire, read back with the standard library's parser."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from services.dispatcher.adapters.mime import (
    MAX_HEADER_TEXT_CHARS,
    Mailbox,
    MailParts,
    UnsendableMessage,
    build,
)
from services.dispatcher.domain.content import message_id

SENDER = Mailbox.parse("Demo Shop <hi@shop.example>")
MID = message_id("rk-1", "Demo Shop <hi@shop.example>")
TEXT = "Hi Zoë,\n\n" + "Your cart misses you. " * 12 + "\n.\nFrom the shop\ttab \n"
HTML = "<p>Hi Zoë</p>\n<p>" + "x" * 300 + "</p>\n"


def parts(**overrides: str) -> MailParts:
    fields: dict[str, Any] = {
        "to_name": "Zoë Ünal",
        "to_address": "zoe@example.com",
        "subject": "Zoë, your cart",
    }
    fields.update(overrides)
    return MailParts(
        sender=SENDER,
        message_id=MID,
        date=datetime(2022, 1, 1, 3, tzinfo=UTC),
        text=TEXT,
        html=HTML,
        **fields,
    )


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_wire_format(raw: bytes) -> None:
    assert raw.count(b"\n") == raw.count(b"\r\n"), "every line ends with CRLF"
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    raw.decode("ascii")  # 7-bit clean: nothing needs 8BITMIME or SMTPUTF8


def test_a_mail_has_a_text_and_an_html_alternative_and_stable_headers() -> None:
    raw = build(parts())
    assert_wire_format(raw)
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Zoë, your cart"
    assert message["From"] == "Demo Shop <hi@shop.example>"
    assert message["To"] == "Zoë Ünal <zoe@example.com>"
    assert message["Message-ID"] == MID
    assert message["Date"] == "Sat, 01 Jan 2022 03:00:00 +0000"
    assert message["MIME-Version"] == "1.0"
    assert not message.defects and not any(p.defects for p in message.iter_parts())


def test_both_bodies_round_trip_exactly_with_non_ascii_long_lines_and_trailing_space() -> None:
    message = parse(build(parts()))
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    # Line ends travel as CRLF (RFC 5322); the text is otherwise exactly what was rendered.
    assert text.get_content().replace("\r\n", "\n") == TEXT
    assert html.get_content().replace("\r\n", "\n") == HTML
    assert text["Content-Transfer-Encoding"] == "quoted-printable"


@pytest.mark.parametrize(
    "subject",
    [
        "Ada, you left something in your cart",
        "Ünïcödé " * 20,
        "A fairly long plain ASCII subject line that certainly does not fit on one line " * 2,
        "=?utf-8?q?not_an_encoded_word?= but text",
        'Quotes "and" (comments) <and> angle: brackets; too',
        "日本語の件名、カートに商品が残っています",
    ],
)
def test_subjects_round_trip_and_fold_within_78_characters(subject: str) -> None:
    raw = build(parts(subject=subject))
    assert_wire_format(raw)
    assert parse(raw)["Subject"] == subject.strip()


def test_a_2000_character_first_name_gives_a_short_folded_subject_and_to_header() -> None:
    name = "Ä" * 1000 + "B" * 1000
    raw = build(parts(subject=f"{name}, your cart", to_name=f"{name} Lovelace"))
    assert_wire_format(raw)
    message = parse(raw)
    assert message["Subject"].startswith("ÄÄÄ") and message["Subject"].endswith("…")
    assert len(message["Subject"]) == MAX_HEADER_TEXT_CHARS
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert message["To"].addresses[0].display_name.startswith("ÄÄÄ")


def test_a_long_ascii_name_without_spaces_is_still_folded() -> None:
    raw = build(parts(subject="B" * 150 + ", your cart", to_name="C" * 150))
    assert_wire_format(raw)
    assert parse(raw)["Subject"].startswith("BBB")


@pytest.mark.parametrize("name", ["Ada\r\nBcc: all@example.com", "Ada\nBcc: all@example.com"])
def test_an_encoded_cr_lf_in_a_name_cannot_add_a_header(name: str) -> None:
    raw = build(parts(subject=f"{name}, your cart", to_name=name))
    assert_wire_format(raw)
    message = parse(raw)
    assert message["Bcc"] is None
    assert message["Subject"] == "Ada Bcc: all@example.com, your cart"
    assert [a.addr_spec for a in message["To"].addresses] == ["zoe@example.com"]
    assert message["To"].addresses[0].display_name == "Ada Bcc: all@example.com"


def test_a_name_with_quotes_and_commas_stays_one_display_name() -> None:
    message = parse(build(parts(to_name='Bob "the" O\'Neil, Jr.')))
    [address] = message["To"].addresses
    assert address.display_name == 'Bob "the" O\'Neil, Jr.'
    assert address.addr_spec == "zoe@example.com"


@pytest.mark.parametrize(
    "address",
    ["zoe@example.com\r\nBcc: all@example.com", "zoe", "zoë@example.com", "<zoe@example.com>"],
)
def test_an_address_that_is_not_one_is_refused(address: str) -> None:
    with pytest.raises(UnsendableMessage):
        build(parts(to_address=address))


def test_no_name_gives_a_bare_address() -> None:
    assert parse(build(parts(to_name="")))["To"] == "zoe@example.com"
