"""What a segment may look at: the customer's facts, each of one kind, and which of them move
with time. A segment the engine cannot turn into entry times (or into one SQL predicate for
counts and backfills) is refused here, naming the leaf, when the journey is loaded."""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from services.scheduler.domain.conditions import All, Any_, Condition, Leaf
from services.scheduler.domain.facts import NO_PREDICTIONS, PREDICTION_FACTS
from services.scheduler.domain.period_facts import PERIOD_PATHS
from shared.events import CartSnapshot, CategoryFacts, Profile

Kind = Literal["number", "decimal", "days", "text", "bool", "time", "list"]
# Numeric facts that move with time: fact -> (the datetime it counts from, +1 since / -1 until)
DAYS_FACTS: dict[str, tuple[str, int]] = {
    "profile.days_since_last_order": ("profile.last_order_at", 1),
    "profile.days_since_first_order": ("profile.first_order_at", 1),
    "profile.days_since_registration": ("profile.registered_at", 1),
    "profile.days_until_expected_order": ("profile.expected_next_order_at", -1),
    "profile.days_until_predicted_order": ("profile.predicted_next_order_at", -1),
}
_CATEGORY_DAYS = re.compile(r"^(profile\.categories\.[^.]+)\.days_since_last_order$")
# Figures counted over a window before the customer's last activity that time alone changes
# in a way the engine cannot compute (the events counted are not on the profile): a segment
# on them would silently never see them fall, so it is refused.
UNTIMED_FACTS = {
    "profile.opens_90d": "human opens in the 90 days before the last activity",
    "profile.clicks_90d": "clicks in the 90 days before the last activity",
}
ORDERING_OPS = ("gt", "gte", "lt", "lte")
AGE_OPS = ("older_than", "within")
PRESENCE_OPS = ("exists", "not_exists")
# The ops each kind of fact can be compared with (anything else never holds, or raises).
KIND_OPS: dict[str, tuple[str, ...]] = {
    "number": ("eq", "ne", *ORDERING_OPS, "in", "not_in"),
    "decimal": ("eq", "ne", *ORDERING_OPS, "in", "not_in"),
    "days": ORDERING_OPS,  # an exact day is an instant, never a stay
    "text": ("eq", "ne", *ORDERING_OPS, "in", "not_in", "contains"),
    "bool": ("eq", "ne"),
    "time": AGE_OPS,
    "list": ("contains",),
}
NUMERIC_KINDS = ("number", "decimal", "days")
# The purchase predictions on `profile` (domain/facts.py NO_PREDICTIONS; none before a fit).
PREDICTION_KINDS: dict[str, Kind] = {
    "p_alive": "number",
    "expected_orders_30d": "number",
    "expected_orders_90d": "number",
    "predicted_next_order_at": "time",
    "expected_order_value": "number",
    "predictions_as_of": "time",
}
assert set(PREDICTION_KINDS) == set(NO_PREDICTIONS)


class SegmentError(ValueError):
    """A segment condition the engine cannot run (the message names the leaf)."""


def days_fact(path: str) -> tuple[str, int] | None:
    """The datetime a days-fact counts from and its direction; None for any other fact."""
    if path in DAYS_FACTS:
        return DAYS_FACTS[path]
    category = _CATEGORY_DAYS.match(path)
    return (f"{category.group(1)}.last_order_at", 1) if category else None


def fact_kind(path: str) -> Kind:
    """The kind of a segment fact; SegmentError when it is none the facts have."""
    if days_fact(path) is not None:
        return "days"
    root, _, rest = path.partition(".")
    parts = rest.split(".")
    if root == "cart":
        if parts == ["item_count"]:
            return "number"
        return _field_kind(CartSnapshot, parts, path, "cart")
    if root != "profile":
        raise SegmentError(f"{path}: a segment is about the customer (profile.*, cart.*)")
    if parts[0] in PREDICTION_KINDS and len(parts) == 1:
        return PREDICTION_KINDS[parts[0]]
    if parts[0] == "categories":
        if len(parts) != 3:
            raise SegmentError(f"{path} is not a fact; use profile.categories.<name>.<fact>")
        return _field_kind(CategoryFacts, parts[2:], path, "profile.categories.<name>")
    return _field_kind(Profile, parts, path, "profile")


def _field_kind(model: type[BaseModel], parts: list[str], path: str, where: str) -> Kind:
    field = model.model_fields.get(parts[0])
    kind = None if field is None or len(parts) != 1 else _kind_of(field.annotation)
    if kind is None:
        known = sorted(n for n, f in model.model_fields.items() if _kind_of(f.annotation))
        raise SegmentError(f"{path} is not a fact; {where} has {', '.join(known)}")
    return kind


def _kind_of(annotation: Any) -> Kind | None:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _kind_of(inner[0]) if len(inner) == 1 else None
    if origin is Annotated:
        return _kind_of(get_args(annotation)[0])
    if origin is Literal:
        return "text"
    if origin is list:
        return "list" if get_args(annotation) == (str,) else None
    simple: dict[Any, Kind] = {
        bool: "bool",
        int: "number",
        float: "number",
        Decimal: "decimal",
        str: "text",
        datetime: "time",
    }
    return simple.get(annotation)


# --- validation ---------------------------------------------------------------------------


def check_segment(condition: Condition) -> None:
    """Raises SegmentError naming the first leaf the engine cannot run as a segment."""
    for leaf in leaves(condition):
        _check_leaf(leaf)


def leaves(condition: Condition) -> Iterable[Leaf]:
    if isinstance(condition, Leaf):
        yield condition
    elif isinstance(condition, All):
        for part in condition.all:
            yield from leaves(part)
    elif isinstance(condition, Any_):
        for part in condition.any:
            yield from leaves(part)
    else:
        yield from leaves(condition.not_)


def reads_predictions(condition: Condition) -> bool:
    """Whether the condition looks at a purchase prediction (it moves at each refresh)."""
    return any(
        leaf.field in PREDICTION_FACTS or leaf.ref in PREDICTION_FACTS for leaf in leaves(condition)
    )


def _check_leaf(leaf: Leaf) -> None:
    name = f"{leaf.field} {leaf.op}"
    for path in (leaf.field, leaf.ref):
        if path in UNTIMED_FACTS:
            raise SegmentError(
                f"{name}: {path} ({UNTIMED_FACTS[path]}) changes with time in a way the "
                "engine cannot compute, so a segment cannot use it (a branch can)"
            )
    kind = fact_kind(leaf.field)
    if leaf.op in PRESENCE_OPS:
        return
    if leaf.op not in KIND_OPS[kind]:
        hint = " (it changes with time)" if kind == "days" else ""
        raise SegmentError(f"{name}: a {kind} fact{hint} takes {', '.join(KIND_OPS[kind])}")
    if leaf.ref is not None:
        _check_ref(leaf, kind, name)
    elif kind in NUMERIC_KINDS and leaf.op in ("in", "not_in"):
        if not isinstance(leaf.value, list) or not all(_is_number(v) for v in leaf.value):
            raise SegmentError(f"{name}: {leaf.value!r} is not a list of numbers")
    elif kind in NUMERIC_KINDS and not _is_number(leaf.value):
        raise SegmentError(f"{name}: {leaf.value!r} is not a number")
    elif kind == "bool" and not isinstance(leaf.value, bool):
        raise SegmentError(f"{name}: {leaf.value!r} is not true or false")
    elif kind in ("text", "list") and leaf.op in ("in", "not_in"):
        if not isinstance(leaf.value, list):
            raise SegmentError(f"{name}: {leaf.value!r} is not a list")
    elif kind in ("text", "list") and leaf.op not in AGE_OPS and not isinstance(leaf.value, str):
        raise SegmentError(f"{name}: {leaf.value!r} is not text")


def _check_ref(leaf: Leaf, kind: Kind, name: str) -> None:
    ref_kind = fact_kind(leaf.ref or "")
    if ref_kind == "days":
        raise SegmentError(f"{name} ref {leaf.ref}: a time fact cannot be the reference")
    if kind == "days" and leaf.ref in PERIOD_PATHS:
        raise SegmentError(f"{name} ref {leaf.ref}: a period figure cannot bound a time fact")
    if kind not in NUMERIC_KINDS or ref_kind not in NUMERIC_KINDS or leaf.op in ("in", "not_in"):
        raise SegmentError(f"{name} ref {leaf.ref}: a ref compares two numbers")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        return True
    try:
        return isinstance(value, str) and Decimal(value).is_finite()
    except ArithmeticError:
        return False
