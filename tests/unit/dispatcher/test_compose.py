"""The e-mail as it goes over the wire: headers and the two alternative parts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.dispatcher.adapters.mailer import compose
from services.dispatcher.domain.content import RenderedMessage, message_id

RENDERED = RenderedMessage(subject="Zoë, your cart", html="<p>Hi Zoë</p>", text="Hi Zoë")


def test_a_mail_has_a_text_and_an_html_alternative_and_stable_headers() -> None:
    mid = message_id("rk-1", "Demo Shop <hi@shop.example>")
    message = compose(
        rendered=RENDERED,
        mail_from="Demo Shop <hi@shop.example>",
        to_email="zoe@example.com",
        to_name="Zoë Ünal",
        message_id=mid,
        date=datetime(2022, 1, 1, 3, tzinfo=UTC),
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Zoë, your cart"
    assert message["To"] == "Zoë Ünal <zoe@example.com>"
    assert message["Message-ID"] == mid
    assert message["Date"] == "Sat, 01 Jan 2022 03:00:00 +0000"


def test_a_header_that_would_inject_lines_is_refused() -> None:
    with pytest.raises(ValueError):
        compose(
            rendered=RENDERED,
            mail_from="hi@shop.example",
            to_email="zoe@example.com\r\nBcc: all@example.com",
            to_name="",
            message_id="<m@x>",
            date=datetime(2022, 1, 1, tzinfo=UTC),
        )
