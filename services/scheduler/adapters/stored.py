"""Contract JSON that the scheduler wrote itself, read back without a validation.

A profile or cart in scheduler.customers was validated when its activity came in and stored
with the contract's own serialiser, so reading it back for a timer needs only the JSON types
turned back into what the contract holds (times, decimals, floats): `python_dump(model, data)`
gives what `model.model_validate(data).model_dump()` gives, at a fraction of the cost. A row
the plan does not fit (a field added or dropped since it was stored, a value it cannot turn)
takes that slow path, so the result is the same either way.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

Convert = Callable[[Any], Any]


class _Unfit(Exception):
    """This data (or this model) is not for the fast path."""


def python_dump(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`model.model_validate(data).model_dump()`, for JSON this service stored from `model`."""
    try:
        return _dump(_plan(model), data)
    except (_Unfit, ValueError, TypeError, ArithmeticError):
        return model.model_validate(data).model_dump()


def as_stored(model: type[BaseModel], data: dict[str, Any]) -> bool:
    """The data has the model's fields, no more, no fewer: its JSON form is the model's."""
    try:
        return data.keys() == _plan(model)[0]
    except _Unfit:
        return False


Plan = tuple[frozenset[str], tuple[tuple[str, Convert], ...]]


def _dump(plan: Plan, data: Any) -> dict[str, Any]:
    fields, convert = plan
    if not isinstance(data, dict) or data.keys() != fields:
        raise _Unfit  # stored before a field was added (its default) or after one was dropped
    out = dict(data)
    for name, turn in convert:
        value = out[name]
        if value is not None:
            out[name] = turn(value)
    return out


@functools.cache
def _plan(model: type[BaseModel]) -> Plan:
    convert: list[tuple[str, Convert]] = []
    for name, field in model.model_fields.items():
        if field.alias is not None and field.alias != name:
            raise _Unfit  # stored under its alias: not worth a fast path
        turn = _converter(field.annotation)
        if turn is not None:
            convert.append((name, turn))
    return frozenset(model.model_fields), tuple(convert)


def _converter(annotation: Any) -> Convert | None:
    """How a JSON value becomes the field's Python value; None: it already is."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _converter(typing.get_args(annotation)[0])  # validators ran when it was stored
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            if any(_converter(m) is not None for m in members):
                raise _Unfit  # which member a value is would need a validation
            return None
        return _converter(members[0])  # None is skipped by the caller
    if origin is list:
        (item,) = typing.get_args(annotation)
        turn = _converter(item)
        return None if turn is None else functools.partial(_each, turn)
    if origin is not None:
        if origin in (dict, typing.Literal):
            return None  # free-form JSON, or one of the given strings
        raise _Unfit
    if annotation is datetime:
        return _instant
    if annotation is Decimal:
        return _decimal
    if annotation is float:
        return float
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return functools.partial(_dump, _plan(annotation))
    if annotation in (str, int, bool, typing.Any):
        return None
    raise _Unfit


def _each(turn: Convert, values: list[Any]) -> list[Any]:
    return [turn(v) for v in values]


def _instant(value: str) -> datetime:
    """A time as the contract writes it (ISO 8601, UTC as `Z`); naive is UTC (shared.events)."""
    if not isinstance(value, str):
        raise TypeError("not a time")
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _decimal(value: str | int) -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError("not a decimal")  # a float would round differently than pydantic's
    return Decimal(value)
