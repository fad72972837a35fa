"""Load generator for the tracking endpoints: GET /t/o/{token} (pixel) or /t/c/{token} (click).

The same closed loop as the webhook bench (tests/bench/webhooks.py): raw HTTP/1.1 keep-alive,
one request in flight per connection. The tokens are signed with the bench key the ingest
process is given, for MESSAGES distinct messages (so customers, hence partitions, vary), sent
a day ago by a desktop browser: each pixel is a human open, each click a 302 to its link.

    python -m tests.bench.tracking --port 8001 --kind open --connections 64 --duration 5
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import uvloop
from pydantic import SecretStr

from shared.tracking import Claims, Link, MessageRef, TokenSigner, TrackingKey
from tests.bench.webhooks import load, report

BENCH_KEY = TrackingKey(kid="bench", secret=SecretStr("bench-tracking-secret-" + "x" * 20))
TRACKING_KEYS_JSON = json.dumps(
    [{"kid": BENCH_KEY.kid, "secret": BENCH_KEY.secret.get_secret_value()}]
)
MESSAGES = 1_000
LINKS = 3
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"
Kind = Literal["open", "click"]
PATHS: dict[Kind, str] = {"open": "/t/o/", "click": "/t/c/"}


def tokens(kind: Kind, count: int = MESSAGES) -> list[str]:
    signer = TokenSigner([BENCH_KEY])
    sent_at = datetime.now(UTC) - timedelta(days=1)
    out = []
    for n in range(count):
        ref = MessageRef("bench", f"bench:{n}", f"bench-request-{n}", "win-back", "first", sent_at)
        link = Link(n % LINKS, LINKS, f"https://shop.example/products/{n}?utm_source=rebound")
        out.append(signer.sign(Claims(kind, ref, link if kind == "click" else None)))
    return out


@dataclass(frozen=True)
class TrackingRequests:
    """Pre-built GET requests, one per token, taken in turn."""

    requests: tuple[bytes, ...]

    def render(self, n: int) -> bytes:
        return self.requests[n % len(self.requests)]


def tracking_requests(kind: Kind, port: int) -> TrackingRequests:
    return TrackingRequests(
        tuple(
            (
                f"GET {PATHS[kind]}{token} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                f"user-agent: {BROWSER}\r\naccept: image/*\r\n\r\n"
            ).encode()
            for token in tokens(kind)
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=list(PATHS), required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    requests = tracking_requests(args.kind, args.port)
    report(uvloop.run(load(requests, args.port, args.connections, args.duration, args.warmup)))


if __name__ == "__main__":
    main()
