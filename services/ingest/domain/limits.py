"""What no shop can mean, refused at the edge (400 with the reason) before anything is produced.

A payload can be well-formed and still poison everything after it: a checkout last updated in
year 1, a name with a NUL character PostgreSQL cannot store, a 2,000-character first name no
mail subject can carry. Each is refused here, with the field that is wrong, so the platform
(or the developer posting to /events) sees why, and nothing downstream ever meets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from shared.events import InvalidEvent

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
# Platform clocks drift and time zones confuse; a day ahead is still a real event.
FUTURE_TOLERANCE = timedelta(days=1)
MAX_EMAIL_CHARS = 254  # RFC 5321's limit on a forward path
MAX_URL_CHARS = 2048
MAX_TEXT_CHARS = 1000  # names, titles, ids: far past any real one
MAX_ITEMS = 1000  # lines in one cart or order


def check(data: BaseModel, now: datetime) -> None:
    """Raises InvalidEvent naming the first field no shop can mean."""
    for where, value in _leaves(data, ""):
        reason = _refusal(where, value, now)
        if reason is not None:
            raise InvalidEvent(f"{where}: {reason}")


def _leaves(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            yield where, value
            return
        for index, item in enumerate(value):
            yield from _leaves(item, f"{where}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(key, f"{where} key")
            yield from _leaves(item, f"{where}.{key}")
    else:
        yield where, value


def _refusal(where: str, value: Any, now: datetime) -> str | None:
    if isinstance(value, str):
        return _text_refusal(where, value)
    if isinstance(value, datetime):
        return _time_refusal(value, now)
    if isinstance(value, list | tuple) and len(value) > MAX_ITEMS:
        return f"{len(value)} items; at most {MAX_ITEMS} are accepted"
    return None


def _text_refusal(where: str, text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    limit = _limit(where.rsplit(".", 1)[-1])
    if len(text) > limit:
        return f"{len(text)} characters; at most {limit} are accepted"
    return None


def _limit(field: str) -> int:
    if field == "email":
        return MAX_EMAIL_CHARS
    if field.endswith("_url"):
        return MAX_URL_CHARS
    return MAX_TEXT_CHARS


def _time_refusal(moment: datetime, now: datetime) -> str | None:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if aware < EARLIEST:
        return f"{moment.isoformat()} is before 1970"
    if aware > now + FUTURE_TOLERANCE:
        return f"{moment.isoformat()} is more than a day in the future"
    return None
