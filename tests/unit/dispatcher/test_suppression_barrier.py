"""When the suppressions consumer counts as caught up with email.events."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.dispatcher.adapters.suppression_barrier import behind

P0, P1 = TopicPartition("email.events", 0), TopicPartition("email.events", 1)


def test_caught_up_when_every_partition_with_records_is_committed_to_its_end() -> None:
    assert not behind({P0: 5, P1: 0}, {P0: 5})
    assert not behind({P0: 5}, {P0: 7})  # committed past: records arrived since the ends


def test_behind_while_a_partition_has_uncommitted_or_never_committed_records() -> None:
    assert behind({P0: 5, P1: 3}, {P0: 5, P1: 2})
    assert behind({P0: 5}, {P0: None})
    assert behind({P0: 5}, {})
