"""Load generator for signed Shopify deliveries: a separate process, raw HTTP/1.1 keep-alive.

Closed loop: each connection sends one request, waits for the whole response, sends the next.
Every request carries a distinct X-Shopify-Webhook-Id (the signature covers the body only).
Prints one JSON object with counts, errors and latency percentiles.

    python -m tests.bench.webhooks --port 8001 --connections 64 --duration 15 --warmup 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import uvloop

from services.ingest.domain.shops import shopify_signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shopify-2024-10"
FIXTURE = FIXTURES / "checkouts.create.json"
SHOP_DOMAIN = "bench.myshopify.com"
SHOP_SECRET = "bench-shopify-secret"
SHOPS_JSON = json.dumps(
    [{"shop_id": "bench", "shopify_domain": SHOP_DOMAIN, "shopify_secret": SHOP_SECRET}]
)
_ID_PREFIX = f"{os.getpid() & 0xFFFFFFFF:08x}-0000-4000-8000-"


class Requests(Protocol):
    """The bytes of request number n (a keep-alive HTTP/1.1 request)."""

    def render(self, n: int) -> bytes: ...


@dataclass(frozen=True)
class RequestTemplate:
    """The request as bytes around the webhook id, so each request costs one concatenation."""

    head: bytes
    tail: bytes

    def render(self, n: int) -> bytes:
        return self.head + f"{_ID_PREFIX}{n:012x}".encode() + self.tail


def checkout_request(port: int) -> RequestTemplate:
    captured = json.loads(FIXTURE.read_text())
    body = json.dumps(captured["body"]).encode()
    headers = {k: v for k, v in captured["headers"].items() if k.startswith("x-shopify-")}
    headers.pop("x-shopify-webhook-id", None)
    # The captured time is months old: a delivery that old is stale and produces nothing.
    headers["x-shopify-triggered-at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    headers["x-shopify-shop-domain"] = SHOP_DOMAIN
    headers["x-shopify-hmac-sha256"] = shopify_signature(body, SHOP_SECRET.encode())
    lines = [
        "POST /webhooks/shopify HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    head = ("\r\n".join(lines) + "\r\nx-shopify-webhook-id: ").encode()
    return RequestTemplate(head, b"\r\n\r\n" + body)


@dataclass
class Tally:
    recording: bool = False
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


class Connection(asyncio.Protocol):
    """One keep-alive connection that always has exactly one request in flight."""

    def __init__(self, template: Requests, ids: itertools.count[int], tally: Tally) -> None:
        self._template = template
        self._ids = ids
        self._tally = tally
        self._buffer = bytearray()
        self._sent_at = 0.0
        self._transport: asyncio.Transport | None = None
        self.stopping = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._template.render(next(self._ids)))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        status = take_response(self._buffer)
        if status is None:
            return
        if self._tally.recording:
            self._tally.latencies_s.append(time.perf_counter() - self._sent_at)
            self._tally.statuses[status] += 1
        if self.stopping:
            assert self._transport is not None
            self._transport.close()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping:
            self._tally.failures[repr(exc) if exc else "closed by server"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


def take_response(buffer: bytearray) -> int | None:
    """The status of the whole HTTP/1.1 response at the start of `buffer`, removed from it;
    None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower() + b"\r\n"  # every header line ends in CRLF
    marker = head.find(b"content-length:")
    length = int(head[marker + 15 : head.find(b"\r\n", marker)]) if marker >= 0 else 0
    if len(buffer) < end + 4 + length:
        return None
    del buffer[: end + 4 + length]
    return int(head[9:12])


def percentile_ms(sorted_s: list[float], p: float) -> float:
    if not sorted_s:
        return float("nan")
    index = min(len(sorted_s) - 1, round(p / 100 * (len(sorted_s) - 1)))
    return round(sorted_s[index] * 1000, 2)


async def load(
    template: Requests, port: int, connections: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Closed-loop load; a 2xx or 3xx answer counts as done (a click redirect is a 302)."""
    loop = asyncio.get_running_loop()
    ids, tally = itertools.count(), Tally()
    conns: list[Connection] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: Connection(template, ids, tally), "127.0.0.1", port
        )
        conns.append(proto)
    await asyncio.sleep(warmup_s)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    tally.recording, started = True, time.perf_counter()
    await asyncio.sleep(duration_s)
    tally.recording, elapsed_s = False, time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        conn.stopping = True
    await asyncio.wait([c.closed for c in conns], timeout=10)
    latencies = sorted(tally.latencies_s)
    ok = sum(n for status, n in tally.statuses.items() if 200 <= status < 400)
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "connections": connections,
        "duration_s": round(elapsed_s, 2),
        "requests": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok + sum(tally.failures.values()),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "connection_failures": dict(tally.failures),
        "requests_per_s": round(ok / elapsed_s, 1),
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": percentile_ms(latencies, 100),
        "loadgen_cpu_pct": round(100 * cpu_s / elapsed_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    template = checkout_request(args.port)
    report(uvloop.run(load(template, args.port, args.connections, args.duration, args.warmup)))


def report(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
