"""Kafka's key partitioning (the Java client's murmur2), for many keys at once.

Every producer of this repo must put a key on the partition Apache Kafka's own clients would:
a customer's events then share one partition (and its order) whoever produced them. aiokafka's
`murmur2` is that hash in pure Python, a few microseconds per key: 5 % of the scheduler's CPU
per fired timer. Here the keys of one length are hashed together as numpy arrays, the same
arithmetic on uint32 lanes (overflow is the modulo 2**32 the Java code relies on); a handful
of keys is left to aiokafka.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2

# Fewer keys of one length than this are hashed one by one: numpy's fixed cost per array
# operation is more than aiokafka's loop for a handful of short keys.
_VECTOR_MIN_KEYS = 8
_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)
_POSITIVE = 0x7FFFFFFF


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """aiokafka.partitioner.murmur2 of each key, in order."""
    hashes = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    with np.errstate(over="ignore"):
        for length, where in by_length.items():
            if len(where) < _VECTOR_MIN_KEYS:
                hashes[where] = [murmur2(keys[i]) for i in where]
                continue
            rows = b"".join(keys[i] for i in where)
            octets = np.frombuffer(rows, dtype=np.uint8).reshape(len(where), length)
            hashes[where] = _murmur2_rows(octets, length)
    return hashes.tolist()


def _murmur2_rows(octets: Any, length: int) -> Any:
    """The hash of each row of `octets` (all `length` bytes long)."""
    words, tail = length >> 2, length & 3
    h = np.full(len(octets), _SEED ^ length, dtype=np.uint32)
    if words:
        blocks = np.ascontiguousarray(octets[:, : words * 4]).view("<u4")
        for j in range(words):
            k = blocks[:, j] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    rest = octets[:, words * 4 :].astype(np.uint32)
    if tail == 3:
        h ^= rest[:, 2] << np.uint32(16)
    if tail >= 2:
        h ^= rest[:, 1] << np.uint32(8)
    if tail >= 1:
        h ^= rest[:, 0]
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partitions_of(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """The partition aiokafka's DefaultPartitioner picks for each key (`partitions` sorted)."""
    count = len(partitions)
    return [partitions[(h & _POSITIVE) % count] for h in murmur2_many(keys)]
