"""What a tracking request means: a human or a machine open, and the e-mail event it becomes.

Machine opens. Apple Mail Privacy Protection fetches every remote image of every message when
it arrives, from Apple's own network (17.0.0.0/8, which Apple owns outright) with the bare
user agent `Mozilla/5.0`; security gateways and link scanners fetch on delivery with their
own user agents. Both happen whether or not a person ever reads the mail, so such an open is
recorded as a machine open, and so is any open within a few seconds of the send (no person
reads that fast, a delivery-time scanner does). Gmail's and Yahoo's image proxies fetch when
the person opens the mail, so they count as human.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from shared import events as ev
from shared.tracking import Claims

SOURCE_TRACKING = "rebound/ingest/tracking"
MACHINE_OPEN_WINDOW = timedelta(seconds=5)
PRIVACY_PROXY_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("17.0.0.0/8",))
PRIVACY_PROXY_USER_AGENTS = frozenset({"mozilla/5.0"})  # Apple MPP sends exactly this
SCANNER_USER_AGENT_MARKERS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "forcepoint",
    "trendmicro",
    "bingpreview",
    "headlesschrome",
    "python-requests",
    "go-http-client",
    "curl/",
    "wget/",
    "bot",
    "spider",
    "crawler",
)
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


@dataclass(frozen=True)
class Fetch:
    """What the endpoint knows about who is asking."""

    at: datetime
    user_agent: str
    client_ip: str | None


def machine_reason(claims: Claims, fetch: Fetch) -> str | None:
    """Why this open is a machine's, or None for a human open."""
    agent = fetch.user_agent.strip().lower()
    if agent in PRIVACY_PROXY_USER_AGENTS or _in_proxy_network(fetch.client_ip):
        return "privacy_proxy"
    if _SCANNER.search(agent):
        return "scanner"
    if fetch.at - claims.message.sent_at < MACHINE_OPEN_WINDOW:
        return "right_after_send"
    return None


# One pass over the user agent instead of one `in` per marker: the pixel's hot path.
_SCANNER = re.compile("|".join(re.escape(marker) for marker in SCANNER_USER_AGENT_MARKERS))


def _in_proxy_network(ip: str | None) -> bool:
    if not ip:
        return False
    if ":" not in ip and not ip.startswith(_PROXY_IPV4_PREFIXES):
        return False  # a dotted IPv4 address outside every proxy /8: no parsing needed
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in PRIVACY_PROXY_NETWORKS)


# The first octets (as "17.") the IPv4 proxy networks span.
_PROXY_IPV4_PREFIXES = tuple(
    f"{octet}."
    for network in PRIVACY_PROXY_NETWORKS
    if network.version == 4
    for octet in range(network.network_address.packed[0], network.broadcast_address.packed[0] + 1)
)


def is_one_click(body: bytes) -> bool:
    """RFC 8058: the POST body carries List-Unsubscribe=One-Click (form-encoded or multipart)."""
    text = body.decode("utf-8", "replace")
    if ONE_CLICK_VALUE in parse_qs(text).get(ONE_CLICK_FIELD, []):
        return True
    # multipart/form-data: a part named List-Unsubscribe whose value is One-Click
    marker = f'name="{ONE_CLICK_FIELD}"'
    if marker not in text:
        return False
    after = text.split(marker, 1)[1].split("\r\n\r\n", 1)
    return len(after) == 2 and after[1].split("\r\n", 1)[0].strip() == ONE_CLICK_VALUE


def _ref(claims: Claims) -> dict[str, object]:
    m = claims.message
    return {
        "request_key": m.request_key,
        "shop_id": m.shop_id,
        "customer_key": m.customer_key,
        "journey_id": m.journey_id,
        "step_id": m.step_id,
        "sent_at": m.sent_at,
    }


def opened(claims: Claims, fetch: Fetch, event_id: str) -> bytes:
    """The email.opened event, encoded (the bytes `ev.encode` gives, built without the
    CloudEvent model: this runs for every pixel fetched)."""
    reason = machine_reason(claims, fetch)
    data = ev.EmailOpened.model_validate(
        {**_ref(claims), "opened_at": fetch.at, "machine": reason is not None}
        | {"machine_reason": reason}
    )
    return _encoded(ev.EMAIL_OPENED, claims, fetch.at, event_id, data)


def clicked(claims: Claims, at: datetime, event_id: str) -> bytes:
    """The email.clicked event, encoded like `opened`."""
    assert claims.link is not None
    data = ev.EmailClicked.model_validate(
        {**_ref(claims), "clicked_at": at, "link_index": claims.link.index, "url": claims.link.url}
    )
    return _encoded(ev.EMAIL_CLICKED, claims, at, event_id, data)


def _encoded(type_: str, claims: Claims, at: datetime, event_id: str, data: ev.Contract) -> bytes:
    return ev.encode_parts(
        id=event_id,
        source=SOURCE_TRACKING,
        type=type_,
        subject=claims.message.customer_key,
        time=at,
        shop_id=claims.message.shop_id,
        data_json=data.__pydantic_serializer__.to_json(data),
    )


def unsubscribed(claims: Claims, at: datetime, one_click: bool) -> ev.CloudEvent:
    """One id per message: pressing the button twice is one unsubscribe."""
    method = "one_click" if one_click else "confirm_page"
    data = ev.EmailUnsubscribed.model_validate(
        {**_ref(claims), "unsubscribed_at": at, "method": method}
    )
    event_id = ev.stable_event_id("unsubscribe", claims.message.request_key)
    return _event(ev.EMAIL_UNSUBSCRIBED, claims, at, event_id, data)


def _event(
    type_: str, claims: Claims, at: datetime, event_id: str, data: ev.Contract
) -> ev.CloudEvent:
    return ev.make_event(
        type=type_,
        source=SOURCE_TRACKING,
        id=event_id,
        time=at,
        subject=claims.message.customer_key,
        shop_id=claims.message.shop_id,
        data=data,
    )
