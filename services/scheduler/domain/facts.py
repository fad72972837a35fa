"""What conditions can see: the customer's profile and open cart, the event, derived figures."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.scheduler.domain.period_facts import figures
from shared.events import CartSnapshot, MessageEngagement, Profile

SECONDS_PER_DAY = 86_400
# Before a shop's first fit (or for a customer it did not cover) a condition on these is false.
NO_PREDICTIONS: Mapping[str, Any] = {
    "p_alive": None,
    "expected_orders_30d": None,
    "expected_orders_90d": None,
    "predicted_next_order_at": None,
    "expected_order_value": None,
    "predictions_as_of": None,
}
# Every fact a fit provides on `profile` (with the days until the predicted order, derived).
PREDICTION_FACTS = frozenset(
    f"profile.{name}" for name in (*NO_PREDICTIONS, "days_until_predicted_order")
)


def build_facts(
    kind: str,
    occurred_at: datetime,
    profile: Profile,
    cart: CartSnapshot | None,
    now: datetime,
    about_message: str | None = None,
    predictions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`about_message` is the request key an e-mail event or a conversion concerns;
    `predictions` the customer's purchase predictions (PredictionRepository.facts_for)."""
    cart_facts = None if cart is None else cart.model_dump()
    return facts_of(
        kind, occurred_at, profile.model_dump(), cart_facts, now, about_message, predictions
    )


def facts_of(
    kind: str,
    occurred_at: datetime,
    profile_facts: dict[str, Any],
    cart_facts: dict[str, Any] | None,
    now: datetime,
    about_message: str | None = None,
    predictions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`build_facts` from `profile.model_dump()` and `cart.model_dump()` (dicts this changes
    and keeps): a timer's customer comes as stored JSON, without the models."""
    return {
        "event": _event_facts(kind, occurred_at, about_message),
        "profile": _profile_part(profile_facts, now, predictions),
        "cart": _cart_part(cart_facts),
    }


def lazy_facts(
    kind: str,
    occurred_at: datetime,
    profile_facts: Callable[[], dict[str, Any]],
    cart_facts: Callable[[], dict[str, Any] | None],
    now: datetime,
    about_message: str | None = None,
    predictions: Mapping[str, Any] | None = None,
) -> Mapping[str, Any]:
    """What `facts_of` gives, with the profile and the cart built when a condition first reads
    them: a timer whose step only sends, or an activity no journey's condition is about,
    reads neither, and building them was most of a fired timer's facts."""
    return LazyFacts(
        {"event": _event_facts(kind, occurred_at, about_message)},
        {
            "profile": lambda: _profile_part(profile_facts(), now, predictions),
            "cart": lambda: _cart_part(cart_facts()),
        },
    )


def _event_facts(kind: str, occurred_at: datetime, about_message: str | None) -> dict[str, Any]:
    return {"kind": kind, "occurred_at": occurred_at, "request_key": about_message}


def _profile_part(
    profile_facts: dict[str, Any], now: datetime, predictions: Mapping[str, Any] | None
) -> dict[str, Any]:
    last_order_at = profile_facts["last_order_at"]
    registered_at = profile_facts["registered_at"]
    first_order_at = profile_facts["first_order_at"]
    expected = profile_facts["expected_next_order_at"]
    profile_facts.update(predictions or NO_PREDICTIONS)
    recent = profile_facts["recent_orders"]
    if recent is not None:  # the period figures as of now, not as of as_of
        orders = ((o["at"], o["total"]) for o in recent)
        profile_facts.update(figures(orders, profile_facts["period_days"], now))
    profile_facts["days_since_last_order"] = _days_since(last_order_at, now)
    profile_facts["days_since_registration"] = _days_since(registered_at, now)
    profile_facts["days_since_first_order"] = _days_since(first_order_at, now)
    profile_facts["days_until_expected_order"] = None if expected is None else -_days(expected, now)
    predicted = profile_facts.get("predicted_next_order_at")
    profile_facts["days_until_predicted_order"] = (
        None if predicted is None else -_days(predicted, now)
    )
    profile_facts["categories"] = _categories(profile_facts["categories"], now)
    return profile_facts


def _cart_part(cart_facts: dict[str, Any] | None) -> dict[str, Any]:
    if cart_facts is None:
        return {"item_count": 0}
    cart_facts["item_count"] = sum(line["quantity"] for line in cart_facts["lines"])
    return cart_facts


class FactsUnreadable(RuntimeError):
    """A lazy part of the facts could not be built."""


class LazyFacts(Mapping[str, Any]):
    """A mapping whose named parts are computed on their first read, then kept."""

    __slots__ = ("_known", "_later")

    def __init__(
        self, known: dict[str, Any], later: dict[str, Callable[[], Any]] | None = None
    ) -> None:
        self._known = known
        self._later = later or {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._known[key]
        except KeyError:
            build = self._later.pop(key)  # neither: the KeyError a mapping raises
            try:
                value = self._known[key] = build()
            except Exception as exc:
                # Not a definition error (those end the enrolment): the customer's stored
                # facts are unreadable, which fails the pass as it did before they were lazy.
                raise FactsUnreadable(f"the customer's {key} facts: {exc!r}") from exc
            return value

    def __contains__(self, key: object) -> bool:
        return key in self._known or key in self._later

    def __iter__(self) -> Iterator[str]:
        return iter([*self._known, *self._later])

    def __len__(self) -> int:
        return len(self._known) + len(self._later)


class _Scoped(Mapping[str, Any]):
    """One enrolment's view: its own parts over the customer's shared (lazy) facts."""

    __slots__ = ("_own", "_shared")

    def __init__(self, shared: Mapping[str, Any], own: dict[str, Any]) -> None:
        self._shared, self._own = shared, own

    def __getitem__(self, key: str) -> Any:
        own = self._own
        return own[key] if key in own else self._shared[key]

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._shared

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._shared), **dict.fromkeys(self._own)})

    def __len__(self) -> int:
        return len({*self._shared, *self._own})


def _days_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else _days(moment, now)


def _days(moment: datetime, now: datetime) -> float:
    return (now - moment).total_seconds() / SECONDS_PER_DAY


def _categories(categories: list[dict[str, Any]], now: datetime) -> dict[str, dict[str, Any]]:
    """Per category by name, so a condition can say profile.categories.<name>.<fact>."""
    out: dict[str, dict[str, Any]] = {}
    for facts in categories:
        facts["days_since_last_order"] = _days(facts["last_order_at"], now)
        out[facts["category"]] = facts
    return out


@dataclass(frozen=True)
class LastMessage:
    """The enrolment's most recent message and what the recipient did with it so far."""

    request_key: str
    step_id: str
    sent_at: datetime
    human_opened_at: datetime | None = None
    machine_opened_at: datetime | None = None
    clicked_at: datetime | None = None
    converted_at: datetime | None = None
    revenue: Decimal | None = None

    def as_facts(self) -> dict[str, Any]:
        # `opened` is a human open: privacy proxies fetch every image of every mail.
        return {
            "request_key": self.request_key,
            "step_id": self.step_id,
            "sent_at": self.sent_at,
            "opened": self.human_opened_at is not None,
            "human_opened": self.human_opened_at is not None,
            "machine_opened": self.machine_opened_at is not None,
            "opened_at": self.human_opened_at,
            "clicked": self.clicked_at is not None,
            "clicked_at": self.clicked_at,
            "converted": self.converted_at is not None,
            "converted_at": self.converted_at,
            "revenue": self.revenue,
        }


@dataclass(frozen=True)
class EnrollmentView:
    journey_id: str
    step_id: str
    entered_at: datetime
    holdout: bool
    messages_sent: int = 0


def for_enrollment(
    facts: Mapping[str, Any], enrollment: EnrollmentView, last_message: LastMessage | None
) -> Mapping[str, Any]:
    """The shared facts plus what belongs to one enrolment (its last message, its progress);
    the shared ones are read through, not copied (a lazy part stays lazy, and is built once
    for all of the customer's enrolments)."""
    scoped: dict[str, Any] = {}
    scoped["enrollment"] = {
        "journey_id": enrollment.journey_id,
        "step_id": enrollment.step_id,
        "entered_at": enrollment.entered_at,
        "holdout": enrollment.holdout,
        "messages_sent": enrollment.messages_sent,
    }
    if last_message is not None:
        scoped["last_message"] = last_message.as_facts()
    return _Scoped(facts, scoped)


def engagement_of(message: MessageEngagement) -> LastMessage:
    return LastMessage(
        request_key=message.request_key,
        step_id=message.step_id,
        sent_at=message.sent_at,
        human_opened_at=message.first_human_open_at,
        machine_opened_at=message.first_machine_open_at,
        clicked_at=message.first_click_at,
        converted_at=message.converted_at,
        revenue=message.revenue,
    )
