"""The dispatcher's decisions, as plain functions: consent, redelivery, SMTP failures."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.dispatcher.domain.content import format_money, message_id
from services.dispatcher.domain.decisions import (
    NO_MARKETING_CONSENT,
    FailureKind,
    Next,
    Seen,
    SmtpFailure,
    after_failure,
    classify,
    on_seen_before,
    suppression_reason,
)
from services.dispatcher.domain.records import MessageRecord
from shared.events import ConsentState

NOW = datetime(2022, 1, 1, tzinfo=UTC)
RECORD = MessageRecord(
    request_key="rk",
    shop_id="s",
    customer_key="s:c:1",
    journey_id="j",
    step_id="st",
    email="a@example.com",
    subject="hi",
    status="sent",
    reason=None,
    smtp_message_id="<m@x>",
    attempts=1,
    created_at=NOW,
    updated_at=NOW,
)


@pytest.mark.parametrize("consent", [None, "not_subscribed", "unsubscribed", "pending", "redacted"])
def test_marketing_mail_without_consent_is_suppressed(consent: ConsentState | None) -> None:
    assert suppression_reason(True, consent) == NO_MARKETING_CONSENT


def test_subscribed_customers_get_marketing_mail() -> None:
    assert suppression_reason(True, "subscribed") is None


def test_a_journey_that_needs_no_consent_sends_anyway() -> None:
    assert suppression_reason(False, "unsubscribed") is None
    assert suppression_reason(False, None) is None


@pytest.mark.parametrize("status", ["sent", "failed", "suppressed"])
def test_a_decided_request_is_only_republished(status: str) -> None:
    assert on_seen_before(replace(RECORD, status=status)) is Seen.REPUBLISH  # type: ignore[arg-type]


def test_a_request_a_crash_left_before_data_is_sent() -> None:
    assert on_seen_before(replace(RECORD, status="claimed")) is Seen.SEND


def test_a_request_a_crash_left_during_data_is_uncertain_and_never_sent_again() -> None:
    assert on_seen_before(replace(RECORD, status="data")) is Seen.MARK_UNCERTAIN


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (SmtpFailure("connect", None, "ConnectionRefusedError"), FailureKind.UNREACHABLE),
        (SmtpFailure("connect", None, "timed out"), FailureKind.UNREACHABLE),
        (SmtpFailure("connect", 535, "authentication failed"), FailureKind.UNREACHABLE),
        (SmtpFailure("envelope", None, "server disconnected"), FailureKind.UNREACHABLE),
        (SmtpFailure("envelope", 450, "mailbox busy"), FailureKind.DEFERRED),
        (SmtpFailure("envelope", 550, "5.1.1 mailbox unavailable"), FailureKind.REJECTED),
        (SmtpFailure("data", 451, "local error"), FailureKind.DEFERRED),
        (SmtpFailure("data", 554, "spam"), FailureKind.REJECTED),
        (SmtpFailure("data", None, "server disconnected"), FailureKind.AMBIGUOUS),
    ],
)
def test_smtp_failures_are_classified_by_how_far_the_message_got(
    failure: SmtpFailure, kind: FailureKind
) -> None:
    assert classify(failure) is kind


def test_permanent_failures_fail_and_are_never_retried() -> None:
    assert after_failure(FailureKind.REJECTED, 1, 5) is Next.FAIL


def test_a_line_lost_during_data_is_uncertain_never_failed_nor_retried() -> None:
    assert after_failure(FailureKind.AMBIGUOUS, 1, 5) is Next.UNCERTAIN


def test_transient_failures_are_retried_up_to_the_limit() -> None:
    assert after_failure(FailureKind.UNREACHABLE, 1, 3) is Next.RETRY
    assert after_failure(FailureKind.DEFERRED, 2, 3) is Next.RETRY


def test_an_unreachable_relay_past_the_limit_releases_the_request_for_later() -> None:
    assert after_failure(FailureKind.UNREACHABLE, 3, 3) is Next.RELEASE


def test_a_server_that_keeps_deferring_past_the_limit_fails_the_message() -> None:
    assert after_failure(FailureKind.DEFERRED, 3, 3) is Next.FAIL


def test_message_id_is_stable_per_request_and_uses_the_sender_domain() -> None:
    first = message_id("rk-1", "Shop <hello@shop.example>")
    assert first == message_id("rk-1", "Shop <hello@shop.example>")
    assert first != message_id("rk-2", "Shop <hello@shop.example>")
    assert first.startswith("<") and first.endswith("@shop.example>")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("19.9", "USD", "$19.90"),
        ("1234.5", "EUR", "€1,234.50"),
        ("1500", "JPY", "¥1,500"),
        ("12", "CHF", "12.00 CHF"),
        ("12", None, "12.00"),
    ],
)
def test_money_is_formatted_for_people(amount: str, currency: str | None, text: str) -> None:
    assert format_money(Decimal(amount), currency) == text
