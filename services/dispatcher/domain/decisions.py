"""Every choice the dispatcher makes, as plain functions of plain values.

Send or suppress; what to do with a request seen before; whether an SMTP failure may be retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from services.dispatcher.domain.records import MessageRecord
from shared.events import ConsentState

NO_MARKETING_CONSENT = "no_marketing_consent"
UNCERTAIN_REASON = (
    "interrupted between the DATA command and the relay's answer: the relay may have "
    "accepted it, so it is not sent again (a lost reminder is cheaper than a duplicate)"
)


def suppression_reason(consent_required: bool, consent: ConsentState | None) -> str | None:
    """Why a message must not be sent, or None when it may go out."""
    if consent_required and consent != "subscribed":
        return NO_MARKETING_CONSENT
    return None


class Seen(StrEnum):
    REPUBLISH = "republish"  # already decided: publish the recorded result again
    SEND = "send"  # a crash came before DATA: the relay never had it, send it now
    MARK_UNCERTAIN = "mark_uncertain"  # a crash came during DATA: never send again


def on_seen_before(record: MessageRecord) -> Seen:
    if record.is_final:
        return Seen.REPUBLISH
    return Seen.SEND if record.status == "claimed" else Seen.MARK_UNCERTAIN


# --- SMTP failures ------------------------------------------------------------------------

Stage = Literal["connect", "envelope", "recipient", "data"]
"""connect: TCP, greeting, EHLO, TLS, AUTH; envelope: MAIL FROM; recipient: RCPT TO; data."""


@dataclass(frozen=True)
class SmtpFailure:
    stage: Stage
    code: int | None  # the server's reply code, None when the connection broke or timed out
    detail: str

    def describe(self) -> str:
        return f"{self.code} {self.detail}" if self.code is not None else self.detail


class FailureKind(StrEnum):
    UNREACHABLE = "unreachable"  # the message never reached the server: retry, never drop
    DEFERRED = "deferred"  # the server answered 4xx: retry a bounded number of times
    REJECTED = "rejected"  # the server answered 5xx: permanent
    AMBIGUOUS = "ambiguous"  # the line broke during DATA: it may have been accepted
    LOST_CLAIM = "lost_claim"  # another dispatcher took the request over: it sends, not us


def classify(failure: SmtpFailure) -> FailureKind:
    if failure.code is None:
        return FailureKind.AMBIGUOUS if failure.stage == "data" else FailureKind.UNREACHABLE
    if failure.stage == "connect":
        # Greeting, EHLO, TLS or AUTH refused: the relay is not usable right now for any
        # message (often configuration); keep the message until it is.
        return FailureKind.UNREACHABLE
    return FailureKind.DEFERRED if 400 <= failure.code < 500 else FailureKind.REJECTED


class Next(StrEnum):
    RETRY = "retry"  # try again after a backoff, in this batch
    RELEASE = "release"  # give the claim back and let the consumer retry the batch later
    FAIL = "fail"  # record it as failed and publish message.failed
    UNCERTAIN = "uncertain"  # record it as uncertain: maybe delivered, never resent
    DROP = "drop"  # not ours any more: record and publish nothing


def after_failure(kind: FailureKind, attempts: int, max_attempts: int) -> Next:
    """What to do after `attempts` tries (the failed one included) ended in `kind`."""
    if kind is FailureKind.AMBIGUOUS:
        return Next.UNCERTAIN
    if kind is FailureKind.LOST_CLAIM:
        return Next.DROP
    if kind is FailureKind.REJECTED:
        return Next.FAIL
    if attempts < max_attempts:
        return Next.RETRY
    return Next.RELEASE if kind is FailureKind.UNREACHABLE else Next.FAIL


def is_hard_bounce(failure: SmtpFailure) -> bool:
    """The relay refused this address for good: 5xx at RCPT or after DATA."""
    return (
        failure.stage in ("recipient", "data")
        and failure.code is not None
        and (500 <= failure.code < 600)
    )


def failure_reason(kind: FailureKind, failure: SmtpFailure, attempts: int) -> str:
    if kind is FailureKind.DEFERRED:
        return f"smtp deferred {attempts} times: {failure.describe()}"
    if kind is FailureKind.AMBIGUOUS:
        return f"{UNCERTAIN_REASON}; the relay said: {failure.describe()}"
    return f"smtp rejected: {failure.describe()}"
