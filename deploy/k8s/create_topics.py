"""Creates Rebound's topics and their dead-letter topics on a production cluster (the topics Job).

Names come from shared.topics. Partitions, replication and retention come from the environment.
Existing topics are left as they are and never repartitioned: a customer's timers belong to the
partition of the customer's key, so a changed partition count needs a planned migration.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.topics import ALL_TOPICS, PRIVACY_REQUESTS, PRIVACY_RESULTS, Topics, dlq

DLQ_RETENTION_MS_DEFAULT = 30 * 24 * 3600 * 1000
# Privacy requests name the customer and export parts carry their data (docs/privacy.md).
PRIVACY_RETENTION_MS_DEFAULT = 7 * 24 * 3600 * 1000


def wanted_topics() -> list[NewTopic]:
    topics = Topics(os.environ.get("TOPIC_PREFIX", ""))
    partitions = int(os.environ.get("PARTITIONS", "12"))
    replication = int(os.environ.get("REPLICATION_FACTOR", "3"))
    common = {"min.insync.replicas": os.environ.get("MIN_INSYNC_REPLICAS", "2")}
    dead = {
        **common,
        "retention.ms": os.environ.get("DLQ_RETENTION_MS", str(DLQ_RETENTION_MS_DEFAULT)),
    }
    private = {
        **common,
        "retention.ms": os.environ.get("PRIVACY_RETENTION_MS", str(PRIVACY_RETENTION_MS_DEFAULT)),
    }
    return [
        NewTopic(
            topics.name(t),
            partitions,
            replication,
            topic_configs=private if t in (PRIVACY_REQUESTS, PRIVACY_RESULTS) else common,
        )
        for t in ALL_TOPICS
    ] + [
        NewTopic(topics.name(dlq(t)), partitions, replication, topic_configs=dead)
        for t in ALL_TOPICS
    ]


async def main() -> int:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], client_id="rebound-topics"
    )
    await admin.start()  # fails while the cluster is unreachable; the Job retries the pod
    try:
        existing = set(await admin.list_topics())
        wanted = wanted_topics()
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            await admin.create_topics(missing)
        for topic in wanted:
            print(f"{topic.name}: {'created' if topic in missing else 'exists, unchanged'}")
        return await _report_partition_mismatch(admin, wanted)
    finally:
        await admin.close()


async def _report_partition_mismatch(admin: AIOKafkaAdminClient, wanted: list[NewTopic]) -> int:
    described = await admin.describe_topics([topic.name for topic in wanted])
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    mismatched = {
        t.name: counts.get(t.name) for t in wanted if counts.get(t.name) != t.num_partitions
    }
    for name, count in mismatched.items():
        print(
            f"WARNING {name} has {count} partitions, not {wanted[0].num_partitions}",
            file=sys.stderr,
        )
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
