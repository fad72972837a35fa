"""Every sent mail is tracked and unsubscribable: links, pixel, footer, headers, DKIM."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from pydantic import SecretStr

from services.dispatcher.adapters.dkim import DkimKey, DkimSigningFailed, dkim_sign
from services.dispatcher.domain.content import RenderedMessage
from services.dispatcher.domain.tracking import ShopMail, prepare
from shared.tracking import MessageRef, TokenSigner, TrackingKey

SIGNER = TokenSigner([TrackingKey(kid="k1", secret=SecretStr("y" * 40))])
MESSAGE = MessageRef(
    "s1", "s1:c:1", "cart:1:reminder", "cart", "reminder", datetime(2026, 1, 1, tzinfo=UTC)
)
SHOP = ShopMail(
    "s1",
    "Demo Shop",
    "hello@shop.example",
    "Demo Shop, 1 Main St, Springfield",
    "https://t.shop.example/",
)
PAGE = (
    '<html><body><p>Hi</p><a href="https://shop.example/cart?a=1&amp;b=2">Cart</a>'
    '<a class="x" href=\'https://shop.example/p/7\'>P</a> <a href="mailto:help@shop.example">m</a>'
    '<a href="https://shop.example/cart?a=1&amp;b=2">Again</a></body></html>'
)
TEXT = "Hi\nYour cart: https://shop.example/cart?a=1&b=2.\nNew: https://shop.example/new\n"


def prepared(tracking: bool = True) -> tuple[str, str, list[tuple[str, str]], list[str]]:
    shop = SHOP if tracking else ShopMail(**{**SHOP.__dict__, "tracking": False})
    mail = prepare(RenderedMessage("Subject", PAGE, TEXT), shop, MESSAGE, SIGNER.sign)
    return mail.rendered.html, mail.rendered.text, mail.headers, mail.links


def tokens(text: str, kind: str) -> list[str]:
    found = re.findall(rf"https://t\.shop\.example/{kind}/([A-Za-z0-9_.-]+)", text)
    return [token.rstrip(".") for token in found]  # a sentence's full stop is not the token's


def test_every_web_link_goes_through_the_click_redirect_to_its_exact_target() -> None:
    page, text, _, links = prepared()
    assert links == [
        "https://shop.example/cart?a=1&b=2",
        "https://shop.example/p/7",
        "https://shop.example/new",
    ]
    assert "https://shop.example/cart" not in page and "https://shop.example/p/7" not in page
    assert 'href="mailto:help@shop.example"' in page
    targets = [SIGNER.verify(t, "click").link for t in tokens(page, "t/c")]
    assert [(t.index, t.count, t.url) for t in targets if t] == [
        (0, 3, links[0]),
        (1, 3, links[1]),
        (0, 3, links[0]),
    ]
    text_targets = [SIGNER.verify(t, "click").link for t in tokens(text, "t/c")]
    assert [t.url for t in text_targets if t] == [links[0], links[2]]
    assert "cart?a=1&b=2" not in text and "/t/c/" in text


def test_the_pixel_comes_before_the_end_of_the_body() -> None:
    page, _, _, _ = prepared()
    [pixel] = tokens(page, "t/o")
    assert SIGNER.verify(pixel, "open").message == MESSAGE
    assert page.index("/t/o/") < page.index("</body>")


def test_both_parts_carry_the_address_and_an_unsubscribe_link_that_is_never_rewritten() -> None:
    page, text, headers, _ = prepared()
    [html_unsub] = tokens(page, "u")
    [text_unsub] = tokens(text, "u")
    assert html_unsub == text_unsub
    assert SIGNER.verify(html_unsub, "unsubscribe").message == MESSAGE
    assert (
        "Demo Shop, 1 Main St, Springfield" in page and "Demo Shop, 1 Main St, Springfield" in text
    )
    assert dict(headers) == {
        "List-Unsubscribe": f"<https://t.shop.example/u/{html_unsub}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_tracking_off_keeps_links_and_still_offers_the_unsubscribe() -> None:
    page, text, headers, links = prepared(tracking=False)
    assert links == [] and "/t/" not in page + text
    assert "https://shop.example/p/7" in page and "List-Unsubscribe" in dict(headers)


DKIM_FIXTURES = Path(__file__).parents[2] / "fixtures" / "dkim"


def dns_for(selector: bytes, domain: bytes) -> Callable[..., bytes]:
    """dkimpy's dnsfunc answering the test key's TXT record, and nothing else."""
    record = b"v=DKIM1; k=rsa; p=" + (DKIM_FIXTURES / "test-only-public.b64").read_bytes().strip()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == selector + b"._domainkey." + domain + b"." else b""

    return dns


def a_mail() -> bytes:
    message = EmailMessage()
    message["From"] = "Demo Shop <hello@shop.example>"
    message["To"] = "ada@example.com"
    message["Subject"] = "Your cart"
    message["List-Unsubscribe"] = "<https://t.shop.example/u/abc>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("Hello")
    return message.as_bytes(policy=policy.SMTP)


def test_the_dkim_signature_verifies_and_covers_the_unsubscribe_headers() -> None:
    private = (DKIM_FIXTURES / "test-only-private.pem").read_bytes()
    signed = dkim_sign(a_mail(), DkimKey("rb1", "shop.example", private))
    dns = dns_for(b"rb1", b"shop.example")
    assert dkim.verify(signed, dnsfunc=dns)
    header = str(message_from_bytes(signed)["DKIM-Signature"]).replace("\r\n", "").replace(" ", "")
    signed_names = re.search(r"h=([^;]+)", header).group(1).lower().split(":")  # type: ignore[union-attr]
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names)
    tampered = signed.replace(b"Subject: Your cart", b"Subject: Your card")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_a_broken_dkim_key_is_a_clear_error() -> None:
    with pytest.raises(DkimSigningFailed):
        dkim_sign(a_mail(), DkimKey("rb1", "shop.example", b"not a key"))
