"""The published JSON Schemas match the pydantic contracts and accept what Rebound really sends.

No JSON Schema library is locked, so a small validator for the keywords pydantic emits lives
here; a test makes sure the schemas use no keyword it would silently skip.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared import events
from shared.schemas import EVENT_TYPES, MODELS, SCHEMA_DIR, main, stale_files

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DOC = ROOT / "docs" / "events.md"
SHOPIFY_ID = "7321847104983451234"  # > 2**53: must stay a string end to end

VALIDATED = {"$ref", "allOf", "anyOf", "type", "const", "enum", "properties", "required"}
VALIDATED |= {"items", "additionalProperties", "format", "pattern"}
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default", "x-rebound-topic"}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


# --- a validator for the subset of JSON Schema 2020-12 that pydantic generates -------------


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return schema


def resolve(ref: str, root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    document, _, pointer = ref.partition("#")
    if document:
        root = load(document)
    node = root
    for part in filter(None, pointer.split("/")):
        node = node[part]
    return node, root


def errors(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$") -> list[str]:
    found: list[str] = []
    if "$ref" in schema:
        target, target_root = resolve(schema["$ref"], root)
        found += errors(value, target, target_root, at)
    for sub in schema.get("allOf", []):
        found += errors(value, sub, root, at)
    if "anyOf" in schema and all(errors(value, sub, root, at) for sub in schema["anyOf"]):
        found.append(f"{at}: matches none of anyOf")
    found += _scalar_errors(value, schema, at)
    if isinstance(value, dict):
        found += _object_errors(value, schema, root, at)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += errors(item, schema["items"], root, f"{at}[{index}]")
    return found


def _scalar_errors(value: Any, schema: dict[str, Any], at: str) -> list[str]:
    found: list[str] = []
    expected = schema.get("type")
    is_bool = isinstance(value, bool)
    if expected and (
        not isinstance(value, JSON_TYPES[expected]) or (is_bool and expected != "boolean")
    ):
        found.append(f"{at}: {value!r} is not {expected}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, str) and schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            found.append(f"{at}: {value!r} is not a date-time")
    return found


def _object_errors(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], at: str
) -> list[str]:
    found = [
        f"{at}: {name} is required" for name in schema.get("required", []) if name not in value
    ]
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            found += errors(item, properties[name], root, f"{at}.{name}")
        elif extra is False:
            found.append(f"{at}: unexpected property {name}")
        elif isinstance(extra, dict):
            found += errors(item, extra, root, f"{at}.{name}")
    return found


def validate(record_value: dict[str, Any]) -> list[str]:
    """Validate a whole Kafka record value against the schema for its event type."""
    schema = load(f"{record_value['type']}.json")
    return errors(record_value, schema, schema)


def keywords(node: Any, inside_properties: bool = False) -> set[str]:
    if isinstance(node, list):
        return set().union(*(keywords(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    used = set() if inside_properties else set(node)
    for key, child in node.items():
        if key in ("default", "const", "enum"):
            continue
        used |= keywords(child, inside_properties=key in ("properties", "$defs"))
    return used


# --- samples ------------------------------------------------------------------------------


def cart_event() -> events.CloudEvent:
    customer = events.Customer(
        id=SHOPIFY_ID, email="Ada@Example.com", first_name="Ada", marketing_consent="subscribed"
    )
    cart = events.CartUpdated(
        cart_id="c1a8f3",
        customer=customer,
        currency="EUR",
        total_price=Decimal("59.80"),
        lines=[
            events.Line(
                product_id=SHOPIFY_ID, title="Wool socks", quantity=2, price=Decimal("19.90")
            ),
            events.Line(title="Scarf", quantity=1, price=Decimal("20.00")),
        ],
        updated_at=datetime(2024, 10, 7, 9, 30, tzinfo=UTC),
    )
    key = events.customer_key("demo-shop", customer.id, customer.email)
    return events.make_event(
        type=events.CART_UPDATED,
        source="rebound/ingest/shopify",
        subject=key,
        id=events.stable_event_id("demo-shop", "webhook-1"),
        shop_id="demo-shop",
        time=datetime(2024, 10, 7, 9, 30, 1, tzinfo=UTC),
        data=cart,
    )


def documented_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", EVENTS_DOC.read_text(encoding="utf-8"), re.S)
    parsed = [json.loads(block) for block in blocks]
    return [doc for doc in parsed if isinstance(doc, dict) and "specversion" in doc]


# --- tests --------------------------------------------------------------------------------


def test_committed_schemas_are_up_to_date() -> None:
    assert stale_files() == []
    assert main(["--check"]) == 0


def test_check_fails_on_drift_and_regenerating_fixes_it(tmp_path: Path) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "cart_updated.json").write_text("{}\n")
    (tmp_path / "shop.retired.v0.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "shop.retired.v0.json").exists()


def test_every_event_type_and_payload_is_published() -> None:
    declared = {
        value
        for name, value in vars(events).items()
        if name.isupper()
        and not name.endswith("_KIND")  # an Activity.kind, not a CloudEvent type
        and isinstance(value, str)
        and re.fullmatch(r"[a-z.]+\.v\d+", value)
    }
    assert set(EVENT_TYPES) == declared
    payloads = {model for model in MODELS.values() if model is not events.CloudEvent}
    assert set(events.SHOP_PAYLOADS.values()) <= payloads


def test_schemas_use_only_keywords_the_validator_checks() -> None:
    used = set().union(*(keywords(load(path.name)) for path in SCHEMA_DIR.glob("*.json")))
    assert used <= VALIDATED | ANNOTATIONS


def test_an_encoded_event_validates_and_keeps_big_ids_as_strings() -> None:
    record_value = json.loads(events.encode(cart_event()))
    assert validate(record_value) == []
    assert record_value["data"]["customer"]["id"] == SHOPIFY_ID
    assert record_value["subject"] == f"demo-shop:c:{SHOPIFY_ID}"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda v: v.update(type="shop.order.placed.v1"), "order_id is required"),
        (lambda v: v.pop("data"), "data is required"),
        (lambda v: v["data"]["lines"][0].update(quantity="two"), "is not integer"),
        (lambda v: v["data"]["customer"].update(marketing_consent="yes"), "matches none"),
        (lambda v: v.update(specversion="0.3"), "is not '1.0'"),
    ],
)
def test_the_schema_rejects_what_rebound_would_reject(change: Any, complaint: str) -> None:
    record_value = json.loads(events.encode(cart_event()))
    change(record_value)
    assert any(complaint in error for error in validate(record_value))


def test_documented_examples_are_valid_events() -> None:
    examples = documented_examples()
    assert {example["type"] for example in examples} == set(EVENT_TYPES)
    for example in examples:
        assert validate(example) == [], example["type"]
        event = events.decode(json.dumps(example).encode())
        model = MODELS[EVENT_TYPES[event.type][1]]
        assert issubclass(model, events.Contract)
        events.payload(event, model)
