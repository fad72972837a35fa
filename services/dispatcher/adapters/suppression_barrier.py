"""Read-your-writes for suppressions: every unsubscribe on email.events is in the table first.

The suppressions consumer (email.events -> dispatcher.suppressions) and the message-request
consumer run apart. Without a barrier a request queued before an unsubscribe, and handled
after the customer was told "Unsubscribed" (the answer comes once email.events acknowledged
the event), could be checked while the suppressions consumer still lags, and be sent.

So before marketing requests are checked against the table, the barrier reads the end
offsets of email.events and waits until the suppressions consumer group has committed up to
them. That group commits only after its database commit, so then every unsubscribe
acknowledged before the check began is in the table, whichever dispatcher instance consumed
it. A lag longer than `timeout_s` raises `Unavailable`: the batch is retried later, never
sent unchecked.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from shared.errors import Unavailable
from shared.logging import get_logger

log = get_logger(__name__)
FIRST_POLL_S = 0.02
MAX_POLL_S = 0.5
WAITS = Counter(
    "rebound_dispatcher_suppression_waits_total",
    "Batches of marketing requests that waited for the suppressions consumer to catch up "
    "with email.events",
)


def behind(ends: dict[TopicPartition, int], committed: dict[TopicPartition, int | None]) -> bool:
    """Whether the group has not yet committed past some record that was on the topic."""
    return any((committed.get(tp) or 0) < end for tp, end in ends.items() if end > 0)


class SuppressionBarrier:
    """Waits until the group `group` has committed every record now on `topic`."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._topic = topic
        self._timeout_s = timeout_s
        self._probe: AIOKafkaConsumer | None = None

    async def wait(self) -> None:
        probe = await self._started()
        partitions = await self._partitions(probe)
        if not partitions:
            return  # no such topic yet: nothing was ever unsubscribed through it
        ends = await probe.end_offsets(partitions)
        loop = asyncio.get_running_loop()
        deadline, poll_s, waited = loop.time() + self._timeout_s, FIRST_POLL_S, False
        while behind(ends, await self._committed(probe, ends)):
            if not waited:
                WAITS.inc()
                waited = True
            if loop.time() >= deadline:
                raise Unavailable(
                    f"the suppressions consumer has not caught up with {self._topic} "
                    f"within {self._timeout_s}s; marketing requests wait"
                )
            await asyncio.sleep(poll_s)  # polling the broker, not a domain delay
            poll_s = min(2 * poll_s, MAX_POLL_S)

    async def _started(self) -> AIOKafkaConsumer:
        """A member of the group that never joins it: it only reads offsets."""
        if self._probe is None:
            probe = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group,
                client_id=f"{self._group}-barrier",
                enable_auto_commit=False,
            )
            try:
                await probe.start()
            except BaseException:
                await probe.stop()
                raise
            self._probe = probe
        return self._probe

    async def _partitions(self, probe: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = probe.partitions_for_topic(self._topic)
        if not partitions:
            await probe.topics()  # refreshes the metadata
            partitions = probe.partitions_for_topic(self._topic) or set()
        return [TopicPartition(self._topic, p) for p in sorted(partitions)]

    async def _committed(
        self, probe: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        asked = [tp for tp, end in ends.items() if end > 0]
        found = await asyncio.gather(*(probe.committed(tp) for tp in asked))
        return dict(zip(asked, found, strict=True))

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
