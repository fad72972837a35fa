"""End to end: a signed Shopify checkout to the mail at the SMTP server, at a fixed rate.

Rebound as deployed, one process of each service (ingest with the api and the facts
consumer, scheduler, dispatcher), on the bench's durable PostgreSQL (a fresh `bench_e2e`
database, each service migrating its schema) and Tansu (topics under `e2e.`), with one
journey whose first step sends at once: a checkout (shop.cart.updated.v1) mails the
abandoned-cart reminder, no wait. The services are started with the drill's own code
(deploy/local/drill.py: environment, start, readiness) and take the drill's checkouts
(distinct customers, signed with the dev shop's secret).

The naive peer (tests/bench/naive_e2e.py) is one uvicorn process: a plain FastAPI endpoint
that checks the HMAC, renders the same template and sends it with smtplib on a new
connection before answering.

The load is open loop: delivery n is posted at start + n / rate whatever happened to the
earlier ones (raw HTTP/1.1 on keep-alive connections, as many as answers are outstanding). Each side
mails to an aiosmtpd sink of its own that writes the arrival time and the recipient of every
mail (smtp-sink cannot: its dumps time-stamp to the second). Latency of a delivery = first
arrival of its mail minus the moment its POST was sent (both on this machine's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

from shared.kafka import ensure_topics
from shared.topics import Topics
from tests.bench import mail as mbench
from tests.bench.webhooks import take_response

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
# Scripts, not a package (as in run.py); `make lint` type-checks them as `devstack`, `drill`.
import devstack  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
import drill  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

PREFIX = "e2e."
DATABASE = "bench_e2e"
SERVICES = ("ingest", "scheduler", "dispatcher")
SHOP_SECRET: bytes = drill.SECRET
PEER_FIRST = 500_000  # the peer's customers: none of them is one of Rebound's
WARMUP = 5  # deliveries, mailed before the clock starts (consumer groups joined, code warm)
QUIET_S = 30.0  # no new mail this long: stop waiting for the rest
SETTLE_S = 2.0  # after the last expected mail: this long more for late duplicates
JOURNEY = """
id: bench-e2e-at-once
version: 1
name: "Bench: the cart reminder at once"
consent: none
trigger:
  event: shop.cart.updated.v1
  if:
    all:
      - {field: cart.item_count, op: gt, value: 0}
      - {field: profile.email, op: exists}
limits: {reentry: never}
steps:
  - id: at-once
    send:
      template: abandoned_cart_reminder
      subject: "__SUBJECT__"
""".replace("__SUBJECT__", mbench.SUBJECT)


def log(message: str) -> None:
    print(f"[bench] e2e: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Where:
    pg: devstack.Postgres
    bootstrap: str
    bench_dir: Path
    partitions: int
    pg_cpu_s: Callable[[], float]  # CPU seconds of the whole cluster so far
    tansu_pid: int


# --- what is measured (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Matched:
    """Mail arrivals matched to the deliveries that asked for them."""

    latencies_s: list[float]  # sorted; per recipient mailed: first arrival minus POST sent
    duplicates: int  # mails beyond the first to a recipient
    missing: list[str]  # recipients never mailed
    strays: int  # mails to nobody in this batch (the warm-up)
    last_arrival: float | None


def match(sent: dict[str, float], arrived: Iterable[tuple[float, str]]) -> Matched:
    """`sent`: recipient -> when its POST was sent; `arrived`: (when, recipient) per mail."""
    first: dict[str, float] = {}
    mails: Counter[str] = Counter()
    strays = 0
    for at, to in arrived:
        to = to.lower()
        if to not in sent:
            strays += 1
            continue
        mails[to] += 1
        first[to] = min(at, first.get(to, at))
    return Matched(
        latencies_s=sorted(first[to] - sent[to] for to in first),
        duplicates=sum(n - 1 for n in mails.values()),
        missing=sorted(set(sent) - set(first)),
        strays=strays,
        last_arrival=max(first.values(), default=None),
    )


def latency_ms(latencies_s: list[float]) -> dict[str, float]:
    return {
        name: round(1000 * drill.percentile(latencies_s, q), 1)
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    }


# --- the load: open loop -----------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    email: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Posted:
    email: str
    scheduled: float  # epoch seconds
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0  # 0: no answer (see error)
    error: str = ""


def deliveries(first: int, count: int) -> list[Delivery]:
    """The drill's signed checkouts for customers first .. first + count - 1."""
    template = json.loads(drill.TEMPLATE.read_text())["body"]
    made = (drill.make_checkout(template, n) for n in range(first, first + count))
    return [Delivery(c.email, c.body, drill.signed_headers(c)) for c in made]


def request_bytes(port: int, delivery: Delivery) -> bytes:
    lines = [
        "POST /webhooks/shopify HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        f"content-length: {len(delivery.body)}",
        *(f"{name}: {value}" for name, value in delivery.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + delivery.body


async def post_at_rate(port: int, batch: list[Delivery], rate: float) -> list[Posted]:
    """Delivery n is posted at start + n / rate, whether or not earlier ones were answered:
    on an idle keep-alive connection, else on a new one."""
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    requests = [request_bytes(port, delivery) for delivery in batch]
    posted: list[Posted] = []
    tasks = []
    start = time.time() + 0.1
    for n, (delivery, request) in enumerate(zip(batch, requests, strict=True)):
        pause = start + n / rate - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        posted.append(Posted(delivery.email, start + n / rate))
        tasks.append(asyncio.create_task(_post(loop, port, idle, request, posted[-1])))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return posted


async def _post(
    loop: asyncio.AbstractEventLoop,
    port: int,
    idle: list[_Connection],
    request: bytes,
    posted: Posted,
) -> None:
    posted.sent = time.time()
    while idle and not idle[-1].open:
        idle.pop()
    if idle:
        conn = idle.pop()
    else:
        try:
            _, conn = await loop.create_connection(lambda: _Connection(idle), "127.0.0.1", port)
        except OSError as exc:
            posted.error, posted.answered = repr(exc), time.time()
            return
    answered: asyncio.Future[None] = loop.create_future()
    conn.send(request, posted, answered)
    await answered


class _Connection(asyncio.Protocol):
    """A keep-alive connection with at most one request in flight; back to `idle` when its
    answer is in. (Raw HTTP/1.1: an HTTP client library's pool costs more CPU per request
    than the peer's whole endpoint once hundreds of connections are open.)"""

    def __init__(self, idle: list[_Connection]) -> None:
        self._idle = idle
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._posted: Posted | None = None
        self._answered: asyncio.Future[None] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def send(self, request: bytes, posted: Posted, answered: asyncio.Future[None]) -> None:
        assert self._transport is not None
        self._posted, self._answered = posted, answered
        self._transport.write(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        status = take_response(self._buffer)
        if status is not None and self._posted is not None:
            self._finish(status, "")
            self._idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._posted is not None:
            self._finish(0, repr(exc) if exc else "closed by server")

    def _finish(self, status: int, error: str) -> None:
        assert self._posted is not None and self._answered is not None
        self._posted.status, self._posted.error = status, error
        self._posted.answered = time.time()
        self._posted = None
        self._answered.set_result(None)


def arrivals(record: Path) -> list[tuple[float, str]]:
    """(arrival, recipient) per mail the recording sink accepted so far."""
    if not record.exists():
        return []
    lines = record.read_text().split("\n")[:-1]  # a line still being written is left out
    return [(float(at), to) for at, _, to in (line.partition(" ") for line in lines)]


def until_arrived(record: Path, expected: set[str], quiet_s: float, cap_s: float) -> bool:
    """Until every expected recipient has a mail (True), or nothing new for quiet_s (False)."""
    deadline, seen, changed_at = time.monotonic() + cap_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        got = arrivals(record)
        if len(got) != seen:
            seen, changed_at = len(got), time.monotonic()
        if expected <= {to.lower() for _, to in got}:
            return True
        if time.monotonic() - changed_at >= quiet_s:
            return False
        time.sleep(0.2)
    return False


def warm_up(port: int, sink: mbench.Sink, first: int) -> None:
    batch = deliveries(first, WARMUP)
    uvloop.run(post_at_rate(port, batch, 10.0))
    assert sink.record is not None
    if not until_arrived(sink.record, {d.email for d in batch}, quiet_s=90, cap_s=120):
        raise RuntimeError(f"the warm-up mail never arrived; see the logs in {sink.record.parent}")


def measure(
    port: int,
    batch: list[Delivery],
    rate: float,
    sink: mbench.Sink,
    cpus: dict[str, Callable[[], float]],
) -> dict[str, Any]:
    """Posts the batch at `rate`, waits for its mail; latencies, counts, CPU per process
    (from the first POST until the last mail arrived)."""
    assert sink.record is not None
    cpus = {**cpus, "smtp sink": lambda: mbench.cpu_s(sink.pid), "load generator": _own_cpu_s}
    before = {name: cpu() for name, cpu in cpus.items()}
    started = time.perf_counter()
    posted = uvloop.run(post_at_rate(port, batch, rate))
    until_arrived(sink.record, {d.email for d in batch}, QUIET_S, cap_s=600)
    wall_s = time.perf_counter() - started
    cpu_pct = {name: round(100 * (cpu() - before[name]) / wall_s, 1) for name, cpu in cpus.items()}
    time.sleep(SETTLE_S)
    matched = match({p.email: p.sent for p in posted}, arrivals(sink.record))
    return figures(posted, matched, cpu_pct)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def figures(posted: list[Posted], matched: Matched, cpu_pct: dict[str, float]) -> dict[str, Any]:
    first_sent = min(p.sent for p in posted)
    last = matched.last_arrival
    delivered = len(matched.latencies_s)
    answers = sorted(p.answered - p.sent for p in posted if p.status)
    return {
        "deliveries": len(posted),
        "http_2xx": sum(200 <= p.status < 300 for p in posted),
        "http_errors": dict(
            Counter(p.error or str(p.status) for p in posted if p.status // 100 != 2)
        ),
        "http_answer_ms": latency_ms(answers),
        "generator_lag_max_ms": round(1000 * max(p.sent - p.scheduled for p in posted), 1),
        "delivered": delivered,
        "duplicates": matched.duplicates,
        "missing": len(matched.missing),
        "missing_first": matched.missing[:10],
        "latency_ms": latency_ms(matched.latencies_s),
        "mails_per_s_sustained": round(delivered / (last - first_sent), 1) if last else 0.0,
        "cpu_pct": cpu_pct,
    }


# --- Rebound: the whole system, one process of each service -----------------------------------


@contextmanager
def rebound(w: Where, smtp_port: int) -> Iterator[dict[str, drill.Member]]:
    """The three services on a fresh database and fresh topics, ready, mailing to smtp_port."""
    w.pg.psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    w.pg.psql(f'CREATE DATABASE "{DATABASE}"')
    asyncio.run(ensure_topics(w.bootstrap, Topics(PREFIX).all_with_dlq(), w.partitions))
    journeys = w.bench_dir / "e2e-journeys"
    journeys.mkdir(exist_ok=True)
    (journeys / "at-once.yaml").write_text(JOURNEY)
    stack = drill.Stack(w.pg, w.bootstrap, smtp_port, {"TOPIC_PREFIX": PREFIX})
    database_url = w.pg.url.rsplit("/", 1)[0] + "/" + DATABASE

    def env(service: str, port: int) -> dict[str, str]:
        prefix = f"REBOUND_{service.upper()}_"
        return {
            **drill.member_env(service, stack, port, 1),
            prefix + "DATABASE_URL": database_url,
            prefix + "JOURNEYS_DIR": str(journeys),
            prefix + "KAFKA_CLIENT_ID": f"e2e-{service}",
            prefix + "LOG_LEVEL": "WARNING",
            prefix + "WORKERS": "1",  # ingest: one process, api and facts consumer
            prefix + "SMTP_LOCAL_HOSTNAME": "localhost",
        }

    for service in SERVICES:
        drill.run_cli(service, "migrate", env(service, 0))
    drill.run_cli("scheduler", "load-journeys", env("scheduler", 0))
    members: dict[str, drill.Member] = {}
    try:
        for service in SERVICES:
            port = devstack.free_port()
            log_path = w.bench_dir / f"e2e-{service}.log"
            members[service] = drill.Member(service, 1, port, env(service, port), log_path)
            members[service].start()
        asyncio.run(_ready(list(members.values())))
        yield members
    finally:
        for member in members.values():
            member.stop()
            _end_session(member)


def _end_session(member: drill.Member) -> None:
    """SIGTERM to what the stopped service left in its session: the scheduler's predictions
    worker (a spawned process) outlives it."""
    if member.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(member.proc.pid, signal.SIGTERM)


async def _ready(members: list[drill.Member]) -> None:
    await asyncio.gather(*(drill.until_ready(m) for m in members))


def bench_rebound(w: Where, count: int, rate: float) -> dict[str, Any]:
    sink = mbench.Sink(devstack.free_port(), *_sink_files(w, "rebound"))
    sink.start()
    try:
        with rebound(w, sink.port) as members:
            port = members["ingest"].port
            log("Rebound up; warm-up mail")
            warm_up(port, sink, first=count)
            log(f"Rebound: {count} checkouts at {rate:.0f}/s")
            cpus: dict[str, Callable[[], float]] = {
                name: _cpu_of(member) for name, member in members.items()
            }
            cpus["postgres"] = w.pg_cpu_s
            cpus["tansu"] = lambda: mbench.cpu_s(w.tansu_pid)
            return {"sink": sink.kind, **measure(port, deliveries(0, count), rate, sink, cpus)}
    finally:
        sink.stop()


def _cpu_of(member: drill.Member) -> Callable[[], float]:
    assert member.proc is not None
    pid = member.proc.pid
    return lambda: mbench.cpu_s(pid)


def _sink_files(w: Where, side: str) -> tuple[Path, Path]:
    return w.bench_dir / f"e2e-{side}-sink.log", w.bench_dir / f"e2e-{side}-arrivals.txt"


# --- the naive peer ----------------------------------------------------------------------------


def bench_peer(w: Where, count: int, rate: float) -> dict[str, Any]:
    sink = mbench.Sink(devstack.free_port(), *_sink_files(w, "peer"))
    sink.start()
    port = devstack.free_port()
    command = [sys.executable, "-m", "tests.bench.naive_e2e", "--port", str(port)]
    with (w.bench_dir / "e2e-peer.log").open("ab") as out:
        proc = subprocess.Popen(
            [*command, "--smtp-port", str(sink.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        devstack.wait_for_port(port, proc=proc)
        warm_up(port, sink, first=PEER_FIRST + count)
        log(f"naive peer: {count} checkouts at {rate:.0f}/s")
        cpus = {"peer (uvicorn)": lambda: mbench.cpu_s(proc.pid)}
        batch = deliveries(PEER_FIRST, count)
        return {"sink": sink.kind, **measure(port, batch, rate, sink, cpus)}
    finally:
        devstack.stop_process(proc)
        sink.stop()


# --- both, and the report ----------------------------------------------------------------------


def bench_e2e(w: Where, rate: float, seconds: float) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    rebound_figures = bench_rebound(w, count, rate)
    peer_figures = bench_peer(w, count, rate)
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "deliveries": count,
        "naive": peer_figures,
        "rebound": rebound_figures,
        "ratio_p99_peer_over_rebound": _ratio(
            peer_figures["latency_ms"]["p99"], rebound_figures["latency_ms"]["p99"]
        ),
        "ratio_rate_rebound_over_peer": _ratio(
            rebound_figures["mails_per_s_sustained"], peer_figures["mails_per_s_sustained"]
        ),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b and a == a and b == b else None  # a == a: not NaN


def table_lines(e: dict[str, Any]) -> list[str]:
    n, r = e["naive"], e["rebound"]
    lines = [
        f"(g) end to end: {e['deliveries']} signed Shopify checkouts/create posted at "
        f"{e['rate_per_s']:.0f}/s (open loop, distinct customers) -> the mail at the SMTP "
        f"server ({r['sink']})",
        "    Rebound: ingest (api + consumer), scheduler, dispatcher, one process each; a journey",
        "    whose first step sends at once. naive: FastAPI endpoint, HMAC check, same template,",
        "    smtplib on a new connection per request before answering (thread pool)",
        "    latency: mail accepted by the SMTP server minus POST sent",
        f"{'':<34} {'naive peer':>14} {'Rebound':>14} {'ratio':>8}",
    ]

    def row(name: str, naive: object, rebound: object, ratio: str = "") -> None:
        lines.append(f"{name:<34} {naive!s:>14} {rebound!s:>14} {ratio:>8}")

    for q in ("p50", "p95", "p99", "max"):
        ratio = e["ratio_p99_peer_over_rebound"] if q == "p99" else None
        row(f"latency {q} ms", n["latency_ms"][q], r["latency_ms"][q], _x(ratio))
    row(
        "mails/s sustained",
        n["mails_per_s_sustained"],
        r["mails_per_s_sustained"],
        _x(e["ratio_rate_rebound_over_peer"]),
    )
    for key in ("delivered", "duplicates", "missing", "http_2xx"):
        row(key.replace("_", " "), n[key], r[key])
    row("POST answered p99 ms", n["http_answer_ms"]["p99"], r["http_answer_ms"]["p99"])
    row("load generator lag max ms", n["generator_lag_max_ms"], r["generator_lag_max_ms"])
    for name in (*n["cpu_pct"], *(k for k in r["cpu_pct"] if k not in n["cpu_pct"])):
        row(f"CPU % {name}", n["cpu_pct"].get(name, ""), r["cpu_pct"].get(name, ""))
    lines.append(
        "    ratios: latency p99 peer / Rebound; mails/s Rebound / peer. CPU % of one core, "
        "from the first POST to the last mail"
    )
    for side, figures in (("naive", n), ("Rebound", r)):
        if figures["http_errors"]:
            lines.append(f"    {side} non-2xx answers: {dict(figures['http_errors'])}")
    return [*lines, ""]


def _x(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"
