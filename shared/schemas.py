"""Publishes the event contracts in shared.events as JSON Schema for services in other languages.

`python -m shared.schemas` writes shared/schemas/*.json; `--check` exits 1 when the committed
files differ from what the pydantic models generate (the unit tests run it, so CI catches drift).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared import events, topics

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE = "cloudevent"

ENVELOPE_DESCRIPTION = (
    "A CloudEvents 1.0 event in structured JSON mode: the whole Kafka record value, "
    f"content-type {events.CONTENT_TYPE}. The record key is the customer key, which is "
    "also the `subject`. `shopid` is an extension attribute."
)

# File stem -> the model it documents. The envelope first, then every payload.
MODELS: dict[str, type[BaseModel]] = {
    ENVELOPE: events.CloudEvent,
    "cart_updated": events.CartUpdated,
    "order_event": events.OrderEvent,
    "customer_changed": events.CustomerChanged,
    "consent_changed": events.ConsentChanged,
    "product_updated": events.ProductUpdated,
    "product_deleted": events.ProductDeleted,
    "activity": events.Activity,
    "customer_merged": events.CustomerMerged,
    "message_request": events.MessageRequest,
    "message_result": events.MessageResult,
    "message_converted": events.MessageConverted,
    "coupon_issued": events.CouponIssued,
    "journey_decision": events.JourneyDecision,
    "customer_sunset": events.CustomerSunset,
    "email_opened": events.EmailOpened,
    "email_clicked": events.EmailClicked,
    "email_unsubscribed": events.EmailUnsubscribed,
    "email_bounced": events.EmailBounced,
    "privacy_request": events.PrivacyRequest,
    "privacy_confirmed": events.PrivacyConfirmed,
    "export_part": events.ExportPart,
}

# Event type -> (topic it travels on, file stem of its `data` schema).
EVENT_TYPES: dict[str, tuple[str, str]] = {
    events.CART_UPDATED: (topics.SHOP_EVENTS, "cart_updated"),
    events.ORDER_PLACED: (topics.SHOP_EVENTS, "order_event"),
    events.ORDER_PAID: (topics.SHOP_EVENTS, "order_event"),
    events.ORDER_CANCELLED: (topics.SHOP_EVENTS, "order_event"),
    events.CUSTOMER_REGISTERED: (topics.SHOP_EVENTS, "customer_changed"),
    events.CUSTOMER_UPDATED: (topics.SHOP_EVENTS, "customer_changed"),
    events.CONSENT_CHANGED: (topics.SHOP_EVENTS, "consent_changed"),
    events.PRODUCT_UPDATED: (topics.SHOP_EVENTS, "product_updated"),
    events.PRODUCT_DELETED: (topics.SHOP_EVENTS, "product_deleted"),
    events.CUSTOMER_ACTIVITY: (topics.CUSTOMER_ACTIVITY, "activity"),
    events.MESSAGE_REQUESTED: (topics.MESSAGE_REQUESTS, "message_request"),
    events.MESSAGE_SENT: (topics.ENGAGEMENT_RESULTS, "message_result"),
    events.MESSAGE_FAILED: (topics.ENGAGEMENT_RESULTS, "message_result"),
    events.MESSAGE_SUPPRESSED: (topics.ENGAGEMENT_RESULTS, "message_result"),
    events.MESSAGE_CONVERTED: (topics.ENGAGEMENT_RESULTS, "message_converted"),
    events.COUPON_ISSUED: (topics.ENGAGEMENT_RESULTS, "coupon_issued"),
    events.JOURNEY_DECISION: (topics.ENGAGEMENT_RESULTS, "journey_decision"),
    events.CUSTOMER_SUNSET: (topics.ENGAGEMENT_RESULTS, "customer_sunset"),
    events.EMAIL_OPENED: (topics.EMAIL_EVENTS, "email_opened"),
    events.EMAIL_CLICKED: (topics.EMAIL_EVENTS, "email_clicked"),
    events.EMAIL_UNSUBSCRIBED: (topics.EMAIL_EVENTS, "email_unsubscribed"),
    events.EMAIL_BOUNCED: (topics.EMAIL_EVENTS, "email_bounced"),
    events.MESSAGE_UNCERTAIN: (topics.ENGAGEMENT_RESULTS, "message_result"),
    events.CUSTOMER_REDACT_REQUESTED: (topics.PRIVACY_REQUESTS, "privacy_request"),
    events.SHOP_REDACT_REQUESTED: (topics.PRIVACY_REQUESTS, "privacy_request"),
    events.CUSTOMER_EXPORT_REQUESTED: (topics.PRIVACY_REQUESTS, "privacy_request"),
    events.CUSTOMER_REDACTED: (topics.PRIVACY_RESULTS, "privacy_confirmed"),
    events.CUSTOMER_EXPORT_PART: (topics.PRIVACY_RESULTS, "export_part"),
}


def model_schema(stem: str, model: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": DIALECT, "$id": f"{stem}.json"}
    schema.update(model.model_json_schema())
    if stem == ENVELOPE:
        schema["description"] = ENVELOPE_DESCRIPTION
    return schema


def _key_of(topic: str) -> str:
    privacy = (topics.PRIVACY_REQUESTS, topics.PRIVACY_RESULTS)
    return "shop id" if topic in privacy else "customer key"


def event_schema(event_type: str, topic: str, data_stem: str) -> dict[str, Any]:
    """The envelope narrowed to one type, with its payload: validate a whole record value."""
    return {
        "$schema": DIALECT,
        "$id": f"{event_type}.json",
        "title": event_type,
        "description": f"Topic {topic}, keyed by the {_key_of(topic)}; data is {data_stem}.json.",
        "x-rebound-topic": topic,
        "allOf": [{"$ref": f"{ENVELOPE}.json"}],
        "properties": {
            "type": {"const": event_type},
            "data": {"$ref": f"{data_stem}.json"},
        },
        "required": ["type", "data"],
    }


def render_all() -> dict[str, str]:
    """File name -> exact file content, for every schema Rebound publishes."""
    documents = {f"{stem}.json": model_schema(stem, model) for stem, model in MODELS.items()}
    for event_type, (topic, data_stem) in EVENT_TYPES.items():
        documents[f"{event_type}.json"] = event_schema(event_type, topic, data_stem)
    return {
        name: json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        for name, doc in documents.items()
    }


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing, different, or no longer generated."""
    expected = render_all()
    present = {path.name for path in directory.glob("*.json")}
    differing = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(differing + list(present - expected.keys()))


def write_all(directory: Path = SCHEMA_DIR) -> list[str]:
    """Bring the directory up to date; returns the names it changed or removed."""
    changed = stale_files(directory) if directory.exists() else sorted(render_all())
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_all()
    for name in changed:
        if name in expected:
            (directory / name).write_text(expected[name], encoding="utf-8")
        else:
            (directory / name).unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.schemas", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the committed schemas are out of date",
    )
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="where the schemas live")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"out of date: {args.dir / name}", file=sys.stderr)
        if stale:
            print("run `python -m shared.schemas` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for name in write_all(args.dir):
        print(f"updated {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
