"""Which events link a guest to an account, and how a batch is re-keyed through the aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.ingest.domain.facts import ShopEventIn
from services.ingest.domain.identity import Alias, Link, links, merged_links, resolve
from shared import events as ev

AT = datetime(2022, 1, 1, tzinfo=UTC)
GUEST = "s:e:ada@example.com"
ACCOUNT = "s:c:7"


def _order(event_id: str, customer: ev.Customer) -> ShopEventIn:
    key = ev.customer_key("s", customer.id, customer.email)
    data = ev.OrderEvent(
        order_id=event_id, customer=customer, lines=[], total_price=Decimal(1), placed_at=AT
    )
    return ShopEventIn(event_id, ev.ORDER_PLACED, "s", AT, key, data)


def test_an_account_event_with_an_email_links_that_emails_guest_key_first_account_wins() -> None:
    found = links(
        [
            _order("1", ev.Customer(email="ada@example.com")),  # a guest: links nothing
            _order("2", ev.Customer(id="7", email=" Ada@Example.COM ")),
            _order("3", ev.Customer(id="8", email="ada@example.com")),
            _order("4", ev.Customer(id="9")),  # no e-mail: links nothing
        ]
    )
    assert found == [Link("s", "ada@example.com", GUEST, ACCOUNT, "2")]


def test_guest_events_are_rekeyed_through_the_aliases_and_others_are_left() -> None:
    guest = _order("1", ev.Customer(email="ada@example.com"))
    other = _order("2", ev.Customer(email="bob@example.com"))
    resolved = resolve([guest, other], {GUEST: Alias(ACCOUNT)})
    assert [e.customer_key for e in resolved] == [ACCOUNT, "s:e:bob@example.com"]


def test_only_the_event_that_merged_announces_the_merge_again() -> None:
    link = Link("s", "ada@example.com", GUEST, ACCOUNT, "2")
    merged = {GUEST: Alias(ACCOUNT, AT, "2")}
    assert merged_links([link], merged) == [link]
    assert merged_links([Link("s", "ada@example.com", GUEST, ACCOUNT, "5")], merged) == []
    assert merged_links([link], {GUEST: Alias(ACCOUNT)}) == []  # nothing stored to merge
