"""What makes a rendered mail trackable and unsubscribable, as pure text transformations.

Every web link of the HTML and text parts goes through the click redirect (the unsubscribe
link is added after, so it never does), the HTML gets the open pixel, both parts get the
footer with the shop's postal address and the unsubscribe link, and the headers carry RFC 8058
one-click unsubscribe. Tokens are signed by the caller's `sign`, so nothing here holds a key.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from services.dispatcher.domain.content import RenderedMessage
from shared.tracking import Claims, Link, MessageRef

ONE_CLICK = "List-Unsubscribe=One-Click"
_ANCHOR_HREF = re.compile(r"(<a\b[^>]*?\bhref\s*=\s*)([\"'])(.*?)\2", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"https?://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)

Sign = Callable[[Claims], str]


@dataclass(frozen=True)
class ShopMail:
    """A shop's mail identity: who sends, the footer address, where tracking URLs point."""

    shop_id: str
    sender_name: str
    sender_address: str
    footer_address: str
    public_base_url: str  # e.g. https://t.shop.example (the ingest service, public)
    tracking: bool = True


@dataclass(frozen=True)
class PreparedMail:
    """The parts and headers to send; `links` are the original targets, by link index."""

    rendered: RenderedMessage
    headers: list[tuple[str, str]]
    links: list[str]


def prepare(
    rendered: RenderedMessage, shop: ShopMail, message: MessageRef, sign: Sign
) -> PreparedMail:
    base = shop.public_base_url.rstrip("/")
    unsubscribe_url = f"{base}/u/{sign(Claims('unsubscribe', message))}"
    page, text, links = rendered.html, rendered.text, []
    if shop.tracking:
        links = collect_links(page, text)

        def click(url: str) -> str:
            link = Link(links.index(url), len(links), url)
            return f"{base}/t/c/{sign(Claims('click', message, link))}"

        page, text = rewrite_html_links(page, click), rewrite_text_links(text, click)
        page = add_pixel(page, f"{base}/t/o/{sign(Claims('open', message))}")
    page = add_html_footer(page, shop.footer_address, unsubscribe_url)
    text = add_text_footer(text, shop.footer_address, unsubscribe_url)
    headers = list_unsubscribe_headers(unsubscribe_url)
    return PreparedMail(RenderedMessage(rendered.subject, page, text), headers, links)


def collect_links(page: str, text: str) -> list[str]:
    """Every distinct web link, HTML first then text, in order of appearance."""
    found = [html.unescape(m.group(3)).strip() for m in _ANCHOR_HREF.finditer(page)]
    found += [m.group(0) for m in _TEXT_URL.finditer(text)]
    return list(dict.fromkeys(url for url in found if _is_web(url)))


def rewrite_html_links(page: str, click: Callable[[str], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        if not _is_web(url):
            return match.group(0)  # mailto:, tel:, anchors stay as they are
        quote = match.group(2)
        return f"{match.group(1)}{quote}{html.escape(click(url), quote=True)}{quote}"

    return _ANCHOR_HREF.sub(replace, page)


def rewrite_text_links(text: str, click: Callable[[str], str]) -> str:
    return _TEXT_URL.sub(lambda m: click(m.group(0)), text)


def add_pixel(page: str, pixel_url: str) -> str:
    pixel = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    return _before_body_end(page, pixel)


def add_html_footer(page: str, address: str, unsubscribe_url: str) -> str:
    footer = (
        '<p style="font-size:12px;color:#666666">'
        f"{html.escape(address)}<br>"
        f'<a href="{html.escape(unsubscribe_url, quote=True)}">Unsubscribe</a></p>'
    )
    return _before_body_end(page, footer)


def add_text_footer(text: str, address: str, unsubscribe_url: str) -> str:
    return f"{text.rstrip()}\n\n--\n{address}\nUnsubscribe: {unsubscribe_url}\n"


def list_unsubscribe_headers(unsubscribe_url: str) -> list[tuple[str, str]]:
    """RFC 8058: an HTTPS URI and the one-click marker; both must be DKIM-signed."""
    return [("List-Unsubscribe", f"<{unsubscribe_url}>"), ("List-Unsubscribe-Post", ONE_CLICK)]


def _before_body_end(page: str, fragment: str) -> str:
    ends = list(_BODY_END.finditer(page))
    if not ends:
        return page + fragment
    at = ends[-1].start()
    return page[:at] + fragment + page[at:]


def _is_web(url: str) -> bool:
    return url.lower().startswith(("https://", "http://"))
