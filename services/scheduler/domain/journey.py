"""The journey format: a trigger, steps (wait, send, branch, publish, end) and exit rules, as data.

Definitions are YAML files validated by these models and stored per version in the database.
Every scenario in SCENARIOS.md is shipped in this format (journeys/*.yaml); what runs is decided
by the engine in engine.py.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.scheduler.domain.conditions import Condition
from services.scheduler.domain.facts import PREDICTION_FACTS
from services.scheduler.domain.segment_facts import check_segment, reads_predictions
from shared.clock import parse_duration
from shared.events import EMAIL_CLICKED, EMAIL_OPENED, HISTORY_IMPORTED_KIND


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Duration = Annotated[str, Field(pattern=r"^(\d+[smhdw])+$", examples=["3h", "48h", "90d"])]


class EventTrigger(Model):
    """Enrol when an activity of this kind arrives and the condition holds."""

    event: str  # `on` would read as a boolean in YAML 1.1
    if_: Condition | None = Field(default=None, alias="if")
    max_age: Duration | None = None  # ignore events older than this (replays, stale carts)
    max_age_from: str = "event.occurred_at"

    @field_validator("event")
    @classmethod
    def _not_history(cls, kind: str) -> str:
        if kind == HISTORY_IMPORTED_KIND:
            raise ValueError(f"{kind}: imported history starts no event-triggered journey")
        return kind


class Backfill(Model):
    """On activation, enrol those already in the segment: only those `if` admits, at most
    `max` of them (the most recent last order first, a tie by customer key). A preview shows
    who before anyone is mailed."""

    if_: Condition | None = Field(default=None, alias="if")
    max: int | None = Field(default=None, gt=0)

    @field_validator("if_")
    @classmethod
    def _computable(cls, bound: Condition | None) -> Condition | None:
        if bound is not None:
            check_segment(bound)
        return bound


class SegmentTrigger(Model):
    """Enrol a customer at the moment they enter the segment: when an activity changes their
    facts, or when time alone moves them in (a durable timer at the computed moment, see
    domain/segment_time.py). Nobody is evaluated on a schedule to find entries."""

    segment: Condition
    # The safety net: how often the owner of a partition recomputes its customers' segment
    # timers from the stored facts (it restores timers, it enrols nobody by itself).
    evaluate_every: Duration = "1d"
    backfill: bool | Backfill = False  # on activation, also enrol those already in it

    @field_validator("segment")
    @classmethod
    def _computable(cls, segment: Condition) -> Condition:
        check_segment(segment)
        return segment

    @property
    def backfill_rule(self) -> Backfill | None:
        if isinstance(self.backfill, Backfill):
            return self.backfill
        return Backfill() if self.backfill else None


class Exit(Model):
    event: str  # `on` would read as a boolean in YAML 1.1
    if_: Condition | None = Field(default=None, alias="if")
    reason: str


# Engagement with the enrolment's last message that can end a wait early (a human open counts
# as opened; a privacy proxy's fetch does not).
UNTIL_EVENTS = (EMAIL_OPENED, EMAIL_CLICKED)
_VERSIONED = re.compile(r"\.v\d+$")


class Wait(Model):
    for_: Duration = Field(alias="for")
    from_: str | None = Field(default=None, alias="from")  # a datetime fact; default: now
    restart_on: list[str] = Field(default_factory=list)  # e.g. a cart change restarts the wait
    until: list[str] = Field(default_factory=list)  # e.g. email.clicked: ends the wait early

    @field_validator("until", mode="before")
    @classmethod
    def _known_engagement(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            return value
        versioned = [
            f"{n}.v1" if isinstance(n, str) and not _VERSIONED.search(n) else n for n in names
        ]
        unknown = [n for n in versioned if n not in UNTIL_EVENTS]
        if unknown:
            raise ValueError(f"until: {unknown} is not one of {', '.join(UNTIL_EVENTS)}")
        return versioned

    @property
    def delay(self) -> timedelta:
        return _duration(self.for_)


# A wait's delay is asked for every timer it schedules: parsed once per distinct text.
_duration = functools.lru_cache(maxsize=1024)(parse_duration)


_DISCOUNT_VALUE = r"^(\d{1,2}(\.\d{1,2})?%|100%|\d{1,7}(\.\d{1,2})?)$"


class Collections(Model):
    """A discount limited to these shop collections; `label` names them in the mail."""

    collections: list[str] = Field(min_length=1)
    label: str = Field(min_length=1)


PERKS = ("free_shipping", "gift", "early_access")


class Offer(Model):
    """What a send step offers; every offer has a time limit (`valid_for`) and clear terms.

    A discount_code gets a code unique to the customer and the step from the dispatcher
    (generated or from the shop's pool). The perks (free shipping, a gift, early access) are
    shown with their terms and end date; `code` is the shop's code that unlocks one, if any.
    """

    kind: Literal["discount_code", "free_shipping", "gift", "early_access"]
    code: str | None = None  # a fixed code shared by everyone (not unique: not attributable)
    valid_for: Duration | None = None
    value: str | None = Field(default=None, pattern=_DISCOUNT_VALUE)  # 10% off, or 15 off
    applies_to: Literal["order"] | Collections | None = None
    minimum_order: Decimal | None = Field(default=None, gt=0)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    gift: str | None = Field(default=None, min_length=1, max_length=200)  # e.g. a hand cream
    access_to: str | None = Field(default=None, min_length=1, max_length=200)  # what opens early

    @model_validator(mode="after")
    def _terms(self) -> Offer:
        if self.valid_for is None:
            raise ValueError(
                f"{self.kind} needs valid_for (e.g. 7d)"
                + (" and value (10% or 15)" if self.kind == "discount_code" else "")
            )
        refused = {
            "value": self.kind != "discount_code",
            "applies_to": self.kind != "discount_code",
            "minimum_order": self.kind == "early_access",
            "currency": self.kind == "early_access",
            "gift": self.kind != "gift",
            "access_to": self.kind != "early_access",
        }
        wrong = [name for name, no in refused.items() if no and getattr(self, name) is not None]
        if wrong:
            raise ValueError(f"{self.kind}: {', '.join(wrong)} are not terms of this offer")
        missing = {"discount_code": "value", "gift": "gift", "early_access": "access_to"}
        needed = missing.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"{self.kind} needs {needed}")
        return self


class Variant(Model):
    id: str
    weight: int = Field(default=1, ge=0)
    subject: str | None = None
    template: str | None = None
    offer: Offer | None = None


class Send(Model):
    channel: Literal["email"] = "email"
    template: str
    subject: str
    offer: Offer | None = None
    variants: list[Variant] = Field(default_factory=list)  # A/B: split at random by weight
    # The A/B metric the reports judge the variants by (reports/statistics.py: mSPRT).
    winner_by: Literal["click", "conversion", "revenue"] | None = None
    # Once the scheduler records a winner (reports/winners.py, by the same test), every
    # enrolment that reaches this step afterwards gets the winning variant.
    send_winner: bool = False
    # Values the template shows that the journey sets (the loyalty threshold, a survey link):
    # passed to it as `params`.
    params: dict[str, str | int | Decimal] = Field(default_factory=dict)
    # due: as soon as the shop's contact policy allows; best_hour: at the hour this customer
    # usually opens mail (else the shop's), within the allowed window
    send_at: Literal["due", "best_hour"] = "due"
    # A message the contact policy deferred longer than this after it fell due is no longer
    # relevant: recorded suppressed / frequency_cap_expired instead of sent.
    expires_after: Duration | None = None

    @model_validator(mode="after")
    def _ab_test_runs(self) -> Send:
        if self.winner_by is not None and len(self.variants) < 2:
            raise ValueError("winner_by needs at least two variants to compare")
        if self.send_winner and self.winner_by is None:
            raise ValueError("send_winner needs winner_by (the metric that declares a winner)")
        return self

    @property
    def expiry(self) -> timedelta | None:
        return None if self.expires_after is None else parse_duration(self.expires_after)


class Branch(Model):
    if_: Condition = Field(alias="if")
    goto: str


class Step(Model):
    """Exactly one of wait / send / branch / publish / end; `goto` jumps after it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    wait: Wait | None = None
    send: Send | None = None
    branch: list[Branch] | None = None
    else_: str | None = Field(default=None, alias="else")
    publish: str | None = None  # a decision other channels act on, e.g. customer.sunset
    end: bool = False
    goto: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        actions = [self.wait, self.send, self.branch, self.publish, self.end or None]
        if sum(a is not None for a in actions) != 1:
            raise ValueError(f"step {self.id!r} needs exactly one of wait/send/branch/publish/end")
        if self.branch is None and self.else_ is not None:
            raise ValueError(f"step {self.id!r}: `else` belongs to a branch step")
        return self

    @property
    def kind(self) -> str:
        for name in ("wait", "send", "branch", "publish"):
            if getattr(self, name) is not None:
                return name
        return "end"


class Limits(Model):
    holdout_percent: float = Field(default=0, ge=0, le=100)  # gets nothing; the report's baseline
    reentry: Literal["never", "after_exit"] = "after_exit"
    max_enrolments: int | None = None


class Journey(Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int = Field(ge=1)
    name: str
    description: str = ""
    active: bool = True
    test_mode: bool = False  # messages go to test_recipients only
    test_recipients: list[str] = Field(default_factory=list)
    consent: Literal["marketing", "none"] = "marketing"
    # When several messages of one customer wait for one slot of the shop's contact limits,
    # the higher priority goes first (e.g. cart reminders 100 before win-back 10).
    priority: int = Field(default=0, ge=0, le=1000)
    trigger: EventTrigger | SegmentTrigger
    exit: list[Exit] = Field(default_factory=list)
    limits: Limits = Limits()
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_ids(cls, steps: list[Step]) -> list[Step]:
        ids = [s.id for s in steps]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"step ids must be unique: {sorted(duplicates)}")
        return steps

    @model_validator(mode="after")
    def _targets_exist(self) -> Journey:
        ids = {s.id for s in self.steps}
        for step in self.steps:
            targets = [step.goto, step.else_, *(b.goto for b in step.branch or [])]
            for target in filter(None, targets):
                if target not in ids:
                    raise ValueError(f"step {step.id!r} jumps to unknown step {target!r}")
        return self

    @model_validator(mode="after")
    def _no_loop_without_wait(self) -> Journey:
        """A goto cycle through no wait would run forever within one moment: refused here,
        not found at run time on a partition."""
        cycle = _cycle_without_wait(self)
        if cycle:
            raise ValueError(f"steps {' -> '.join(cycle)} loop without a wait")
        return self

    def index_of(self, step_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == step_id)


def _successors(journey: Journey, index: int) -> list[int]:
    step = journey.steps[index]
    if step.end or step.wait is not None:
        return []  # a wait lets time pass: a loop through one is a rhythm, not a hang
    if step.branch is not None:
        targets = [b.goto for b in step.branch]
        following = [journey.index_of(t) for t in targets]
        fallback = journey.index_of(step.else_) if step.else_ else index + 1
        return [*following, fallback]
    return [journey.index_of(step.goto) if step.goto else index + 1]


def _cycle_without_wait(journey: Journey) -> list[str]:
    """Step ids of a cycle that passes no wait, closed (first id repeated); [] when none."""
    done: set[int] = set()

    def visit(index: int, path: list[int]) -> list[int]:
        if index >= len(journey.steps) or index in done:
            return []
        if index in path:
            return [*path[path.index(index) :], index]
        for target in _successors(journey, index):
            found = visit(target, [*path, index])
            if found:
                return found
        done.add(index)
        return []

    for start in range(len(journey.steps)):
        cycle = visit(start, [])
        if cycle:
            return [journey.steps[i].id for i in cycle]
    return []


def conditions_of(journey: Journey) -> list[Condition]:
    """Every condition the journey evaluates: trigger, backfill bound, exits, branches."""
    found: list[Condition | None] = [e.if_ for e in journey.exit]
    trigger = journey.trigger
    if isinstance(trigger, EventTrigger):
        found.append(trigger.if_)
    else:
        rule = trigger.backfill_rule
        found += [trigger.segment, None if rule is None else rule.if_]
    for step in journey.steps:
        found += [b.if_ for b in step.branch or []]
    return [c for c in found if c is not None]


def journey_reads_predictions(journey: Journey) -> bool:
    """Whether any of its conditions looks at a purchase prediction (the facts then carry
    them: one read per batch, made only when some journey needs it)."""
    if any(reads_predictions(c) for c in conditions_of(journey)):
        return True
    paths = [s.wait.from_ for s in journey.steps if s.wait is not None]
    if isinstance(journey.trigger, EventTrigger):
        paths.append(journey.trigger.max_age_from)
    return any(p in PREDICTION_FACTS for p in paths)


def parse_journey(text: str) -> Journey:
    data: Any = yaml.safe_load(text)
    return Journey.model_validate(data)
