"""The end-to-end bench's matching of mail to deliveries: what it reports as latency, duplicate,
missing (the figures the bench prints; no speed is asserted here)."""

from __future__ import annotations

import pytest

from tests.bench.e2e import latency_ms, match

SENT = {"a@example.com": 100.0, "b@example.com": 100.5, "c@example.com": 101.0}


def test_latency_is_the_first_mail_of_each_recipient_minus_its_post() -> None:
    matched = match(SENT, [(100.2, "a@example.com"), (100.9, "B@example.com")])

    assert matched.latencies_s == pytest.approx([0.2, 0.4])
    assert matched.last_arrival == pytest.approx(100.9)


def test_a_second_mail_to_a_recipient_is_a_duplicate_not_a_latency() -> None:
    arrived = [(100.3, "a@example.com"), (100.1, "a@example.com"), (102.0, "a@example.com")]

    matched = match(SENT, arrived)

    assert matched.duplicates == 2
    assert matched.latencies_s == pytest.approx([0.1])


def test_recipients_never_mailed_are_missing_and_other_mail_is_a_stray() -> None:
    matched = match(SENT, [(100.2, "a@example.com"), (99.0, "warm-up@example.com")])

    assert matched.missing == ["b@example.com", "c@example.com"]
    assert matched.strays == 1
    assert matched.duplicates == 0


def test_nothing_mailed_reports_every_recipient_missing_and_no_latency() -> None:
    matched = match(SENT, [])

    assert matched.missing == sorted(SENT)
    assert matched.last_arrival is None
    assert all(v != v for v in latency_ms(matched.latencies_s).values())  # NaN: no figure


def test_percentiles_in_milliseconds() -> None:
    latencies = [n / 1000 for n in range(1, 101)]  # 1 .. 100 ms

    assert latency_ms(latencies) == {"p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
