"""The batch hash must put every key where aiokafka's (and the Java client's) murmur2 does:
otherwise a customer's events published in a batch and those sent one by one would split over
two partitions and lose their order."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from shared.partitioning import murmur2_many, partitions_of


def test_every_length_and_byte_hashes_as_aiokafka_does() -> None:
    rng = random.Random(5)
    keys = [rng.randbytes(rng.randint(0, 90)) for _ in range(3_000)]
    keys += [b"", b"a", b"ab", b"abc", b"\xff" * 7, "köln:kunde-ü".encode()]
    assert murmur2_many(keys) == [murmur2(k) for k in keys]


def test_a_few_keys_hash_as_many_do() -> None:
    keys = [f"shop-1:customer-{i:04d}".encode() for i in range(40)]  # one length: the arrays
    together = murmur2_many(keys)
    assert [murmur2_many([k])[0] for k in keys] == together == [murmur2(k) for k in keys]


def test_the_java_clients_known_values() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as signed ints there)
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert murmur2_many(list(cases)) == [v & 0xFFFFFFFF for v in cases.values()]


def test_partitions_are_the_default_partitioners() -> None:
    keys = [f"shop-1:customer-{i}".encode() for i in range(2_000)]
    for partitions in ([0], [0, 1, 2], list(range(12)), [1, 4, 9]):
        expected = [DefaultPartitioner()(k, partitions, partitions) for k in keys]
        assert partitions_of(keys, partitions) == expected
    assert partitions_of([], [0, 1]) == []
