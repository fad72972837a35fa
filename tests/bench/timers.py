"""Timers: Rebound's scheduler beside APScheduler 3.11 + SQLAlchemyJobStore, same PostgreSQL.

Rebound: N customer.activity events (a cart left, all with the same `occurred_at` T0) are
produced first; one `python -m services.scheduler run` process enrols them into a one-wait
journey (`wait 1h from event.occurred_at`, then a send), so every timer is due at T0 + 1h.
The process runs with `REBOUND_SCHEDULER_CLOCK_OFFSET_S` set so that its clock reaches
T0 + 1h, the due moment, a while after it has enrolled everyone (start-up, group join and
enrolment at an assumed floor rate; `enrolled_before_due` says whether that held).
Fire = the message.request on the topic; its lateness = the record's timestamp (set by the
scheduler's producer when it sends) on the scheduler's clock minus the due moment.
CPU per item: the scheduler process's CPU seconds (user + system, from /proc) per 1,000
enrolments (from the first enrolment seen to the last) and per 1,000 timers fired (from the
due moment to the last publish): steadier than rates on a loaded machine.

`--pending N`: the same burst again in a database of its own with N timers due in 30 days
already stored, so fire/s with and without them compare (their ratio is reported).
REBOUND_BENCH_PROFILE=1 runs the scheduler under cProfile (scheduler-<round>.prof).

APScheduler (the naive peer): a BackgroundScheduler with a SQLAlchemyJobStore (sync psycopg)
and the default 10-thread executor, started paused; one `date` job per customer is added
(each add is its own INSERT and commit: enrol/s), then the scheduler is resumed, the moment
all N are due to it. Fire = the job function ran; lateness = its start minus the resume.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.scheduler.__main__ import MIGRATIONS
from services.scheduler.domain.journey import parse_journey
from services.scheduler.journeys.repository import JourneyRepository
from shared import events
from shared.db import make_engine, upgrade
from shared.events import Activity, CartSnapshot, Line, Profile
from shared.kafka import ensure_topics
from shared.topics import CUSTOMER_ACTIVITY, MESSAGE_REQUESTS, Topics

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "tm."
PENDING_PREFIX = "tmp."  # the round with `--pending` timers: its own topics and database
PENDING_DATABASE = "bench_pending"
WAIT = timedelta(hours=1)
# The timers fall due this long after the scheduler starts: start-up and group join, then
# enrolment at no less than ASSUMED_ENROL_PER_S (the table says if enrolment was slower).
LEAD_S = 15.0
ASSUMED_ENROL_PER_S = 500  # a loaded 2-core machine enrols 700-1,000/s
STEADY_PER_S = 2000
JOURNEY = """
id: bench-wait
version: 1
name: Bench one wait
consent: none
trigger: {event: shop.cart.updated.v1}
limits: {reentry: after_exit}
steps:
  - id: wait
    wait: {for: 1h, from: event.occurred_at}
  - id: remind
    send: {template: abandoned_cart_reminder, subject: "You left something in your cart"}
"""


def log(message: str) -> None:
    print(f"[bench] timers: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Where:
    database_url: str  # postgresql+asyncpg://
    bootstrap: str
    bench_dir: Path
    partitions: int
    prefix: str = PREFIX  # topics of one Rebound round

    def fresh(self, database: str, prefix: str) -> Where:
        """Another database on the same server and other topics: a second, separate round."""
        url = self.database_url.rsplit("/", 1)[0] + "/" + database
        return replace(self, database_url=url, prefix=prefix)

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_s": at(0.50), "p99_s": at(0.99), "max_s": round(ordered[-1], 3)}


# --- Rebound -----------------------------------------------------------------------------------


def _key(n: int) -> str:
    return f"bench:c:{900_000_000 + n}"


def _activity(n: int, at: datetime) -> bytes:
    profile = Profile(
        key=_key(n), shop_id="bench", email=f"c{n}@example.com", marketing_consent="subscribed"
    )
    cart = CartSnapshot(
        cart_id=f"cart-{n}",
        updated_at=at,
        lines=[Line(title=f"Product {n % 50}", quantity=1, price=Decimal("19.90"))],
    )
    data = Activity(
        kind=events.CART_UPDATED,
        source_event_id=f"b{n}",
        occurred_at=at,
        profile=profile,
        cart=cart,
    )
    event = events.make_event(
        type=events.CUSTOMER_ACTIVITY,
        source="bench",
        id=events.stable_event_id("bench-activity", str(n)),
        time=at,
        subject=_key(n),
        shop_id="bench",
        data=data,
    )
    return events.encode(event)


async def _prepare(w: Where, count: int, at: datetime) -> None:
    await ensure_topics(w.bootstrap, Topics(w.prefix).all_with_dlq(), w.partitions)
    engine = make_engine(w.database_url, pool_size=1)
    async with engine.begin() as conn:
        await JourneyRepository().add(conn, parse_journey(JOURNEY), at)
    await engine.dispose()
    producer = AIOKafkaProducer(bootstrap_servers=w.bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        topic = w.prefix + CUSTOMER_ACTIVITY
        sent = [
            await producer.send(topic, _activity(n, at), key=_key(n).encode()) for n in range(count)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _scheduler(w: Where, name: str, offset_s: float = 0.0) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REBOUND_SCHEDULER_DATABASE_URL": w.database_url,
        "REBOUND_SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": w.bootstrap,
        "REBOUND_SCHEDULER_TOPIC_PREFIX": w.prefix,
        "REBOUND_SCHEDULER_HTTP_PORT": str(_free_port()),
        # DEBUG: every batch and pass logs where its wall time went (scheduler-<name>.log).
        "REBOUND_SCHEDULER_LOG_LEVEL": os.environ.get("REBOUND_BENCH_SCHEDULER_LOG", "WARNING"),
        "REBOUND_SCHEDULER_CLOCK_OFFSET_S": repr(offset_s),
    }
    # REBOUND_BENCH_PROFILE=1: the scheduler runs under cProfile (scheduler-<name>.prof).
    profile = ["-m", "tests.bench.profiled", str(w.bench_dir / f"scheduler-{name}.prof")]
    wrap = profile if os.environ.get("REBOUND_BENCH_PROFILE") else ["-m"]
    with (w.bench_dir / f"scheduler-{name}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *wrap, "services.scheduler", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _count(w: Where, query: str) -> int:
    conn = await asyncpg.connect(w.dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


# Enrolments of the measured customers (not the `--pending` ones), each with its timer.
_ENROLLED = "SELECT count(*) FROM scheduler.enrollments WHERE customer_key LIKE 'bench:%'"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_1000(cpu_s: float, items: int) -> float:
    return round(cpu_s / max(items, 1) * 1000, 3)


async def _wait_enrolled(
    w: Where, count: int, proc: subprocess.Popen[bytes], timeout_s: float
) -> dict[str, float]:
    started = time.perf_counter()
    first: tuple[float, int, float] | None = None
    while True:
        n = await _count(w, _ENROLLED)
        now = time.perf_counter()
        if n and first is None:
            first = (now, n, _cpu_s(proc.pid))
        if n >= count:
            break
        if proc.poll() is not None or now - started > timeout_s:
            raise RuntimeError(f"enrolled {n} of {count}; see {w.bench_dir}")
        await asyncio.sleep(0.1)
    assert first is not None
    steady_s = max(now - first[0], 1e-3)
    return {
        "enrol_s_from_process_start": round(now - started, 2),
        "enrol_per_s_from_process_start": round(count / (now - started), 1),
        "enrol_per_s": round((count - first[1]) / steady_s, 1),
        "enrol_cpu_s_per_1000": _cpu_per_1000(_cpu_s(proc.pid) - first[2], count - first[1]),
    }


async def _cpu_at(pid: int, moment: float) -> float:
    """The process's CPU seconds at a wall-clock moment (now, if it has passed)."""
    await asyncio.sleep(max(0.0, moment - time.time()))
    return _cpu_s(pid)


async def _published(
    w: Where, count: int, timeout_s: float, keep: Callable[[Any], bool] = lambda _: True
) -> list[Any]:
    """Read message.requests until `count` records that `keep` arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(
        w.prefix + MESSAGE_REQUESTS,
        bootstrap_servers=w.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            records.extend(r for rs in batch.values() for r in rs if keep(r))
    finally:
        await consumer.stop()
    return records


def _enrollment_id(record: Any) -> int:
    """Request keys are journey:enrolment:step."""
    return int(orjson.loads(record.value)["data"]["request_key"].split(":")[1])


def _lateness(records: list[Any], offset_s: float, due: dict[int, float] | float) -> list[float]:
    """Seconds from each request's due moment to its send, on the scheduler's clock."""
    out = []
    for record in records:
        sent = record.timestamp / 1000 + offset_s
        if isinstance(due, dict):
            out.append(sent - due[_enrollment_id(record)])
        else:
            out.append(sent - due)
    return out


async def _add_pending(w: Where, pending: int, far: datetime) -> float:
    """`pending` enrolments with a timer due long after the measured ones (never fired)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(w.dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                """
                WITH e AS (
                    INSERT INTO scheduler.enrollments (journey_id, journey_version, customer_key,
                        partition, status, step_index, holdout, entered_at, updated_at)
                    SELECT 'bench-wait', 1, 'pending:' || g, g % $2, 'active', 0, false, $1, $1
                    FROM generate_series(1, $3) g
                    RETURNING id, partition
                )
                INSERT INTO scheduler.timers (enrollment_id, partition, step_id, due_at)
                SELECT id, partition, 'wait', $1 FROM e
                """,
                far,
                w.partitions,
                pending,
            )
        await conn.execute("ANALYZE scheduler.timers")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _add_steady(w: Where, start: datetime, seconds: float) -> dict[int, float]:
    """Timers falling due at STEADY_PER_S from `start`, for customers already enrolled once."""
    count = int(seconds * STEADY_PER_S)
    conn = await asyncpg.connect(w.dsn)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                """
                WITH c AS (
                    SELECT customer_key, partition,
                        row_number() OVER (ORDER BY customer_key) - 1 AS n
                    FROM scheduler.customers ORDER BY customer_key LIMIT $3
                ), e AS (
                    INSERT INTO scheduler.enrollments (journey_id, journey_version, customer_key,
                        partition, status, step_index, holdout, entered_at, updated_at)
                    SELECT 'bench-wait', 1, customer_key, partition, 'active', 0, false, $1, $1
                    FROM c
                    RETURNING id, customer_key, partition
                )
                INSERT INTO scheduler.timers (enrollment_id, partition, step_id, due_at)
                SELECT e.id, e.partition, 'wait', $1 + make_interval(secs => c.n::float8 / $2)
                FROM e JOIN c USING (customer_key)
                RETURNING enrollment_id, due_at
                """,
                start,
                float(STEADY_PER_S),
                count,
            )
    finally:
        await conn.close()
    return {r[0]: r[1].timestamp() for r in rows}


def bench_rebound(w: Where, args: Any, pending: int = 0, steady_s: float = 0) -> dict[str, Any]:
    count = args.timers
    t0 = datetime.now(UTC).replace(microsecond=0)
    due_at = t0 + WAIT
    upgrade(MIGRATIONS, w.database_url, "scheduler")
    log(f"Rebound: producing {count} customer.activity events (not timed)")
    asyncio.run(_prepare(w, count, t0))
    result: dict[str, Any] = {}
    if pending:
        log(f"Rebound: adding {pending} pending timers due in 30 days (not timed)")
        seconds = asyncio.run(_add_pending(w, pending, due_at + timedelta(days=30)))
        result.update({"pending_timers": pending, "pending_insert_s": round(seconds, 1)})
    due_in_s = LEAD_S + count / ASSUMED_ENROL_PER_S
    offset_s = due_at.timestamp() - (time.time() + due_in_s)
    log(f"Rebound: one scheduler process; {count} timers fall due {due_in_s:.0f} s after start")
    proc = _scheduler(w, "bench", offset_s)
    try:
        result.update(asyncio.run(_wait_enrolled(w, count, proc, args.timers_timeout)))
        result["enrolled_before_due"] = time.time() + offset_s < due_at.timestamp()
        records, cpu_fire_s = asyncio.run(
            _published_cpu(w, count, due_in_s + args.timers_timeout, proc.pid, due_at, offset_s)
        )
        late = _lateness(records, offset_s, due_at.timestamp())
        keys = {orjson.loads(r.value)["data"]["request_key"] for r in records}
        result.update(
            {
                "published": len(records),
                "distinct_requests": len(keys),
                "all_published_within_s": round(max(late), 2),
                "fire_per_s": round(len(records) / max(late), 1),
                "fire_cpu_s_per_1000": _cpu_per_1000(cpu_fire_s, len(records)),
                "lateness": percentiles(late),
            }
        )
        if steady_s:
            result["steady"] = asyncio.run(_steady(w, offset_s, steady_s))
    finally:
        _stop(proc)
    return result


async def _published_cpu(
    w: Where, count: int, timeout_s: float, pid: int, due_at: datetime, offset_s: float
) -> tuple[list[Any], float]:
    """The burst's requests, and the scheduler's CPU seconds from the due moment to the last."""
    at_due = asyncio.create_task(_cpu_at(pid, due_at.timestamp() - offset_s))
    records = await _published(w, count, timeout_s)
    return records, _cpu_s(pid) - await at_due


async def _steady(w: Where, offset_s: float, seconds: float) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(seconds=offset_s + 5)
    log(f"Rebound: {STEADY_PER_S} timers/s falling due for {seconds:.0f} s")
    due = await _add_steady(w, start, seconds)
    mine = await _published(w, len(due), 5 + seconds + 30, lambda r: _enrollment_id(r) in due)
    late = _lateness(mine, offset_s, due)
    return {"timers": len(due), "published": len(mine), "lateness": percentiles(late)}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- APScheduler -------------------------------------------------------------------------------

_fired: list[float] = []
_fired_lock = threading.Lock()


def fired(customer_key: str) -> None:
    """The peer's job: note when it ran (referenced by name, as the job store pickles it)."""
    with _fired_lock:
        _fired.append(time.time())


def bench_apscheduler(w: Where, args: Any) -> dict[str, Any]:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    count = args.timers
    url = w.database_url.replace("postgresql+asyncpg://", "postgresql+psycopg://")
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"misfire_grace_time": None, "coalesce": False},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    _fired.clear()
    log(f"APScheduler: adding {count} date jobs (paused)")
    run_date = datetime.now(UTC) + timedelta(seconds=1)
    started = time.perf_counter()
    for n in range(count):
        scheduler.add_job(
            "tests.bench.timers:fired", "date", run_date=run_date, args=[_key(n)], id=_key(n)
        )
    enrol_s = time.perf_counter() - started
    log("APScheduler: resumed, all due")
    resumed = time.time()
    scheduler.resume()
    deadline = time.monotonic() + args.timers_timeout
    while len(_fired) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    scheduler.shutdown(wait=True)
    late = [t - resumed for t in _fired]
    return {
        "enrol_s": round(enrol_s, 2),
        "enrol_per_s": round(count / enrol_s, 1),
        "fired": len(_fired),
        "all_fired_within_s": round(max(late), 2),
        "fire_per_s": round(len(_fired) / max(late), 1),
        "lateness": percentiles(late),
    }


async def _create_database(w: Where, name: str) -> None:
    conn = await asyncpg.connect(w.dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def bench_pending(w: Where, args: Any) -> dict[str, Any]:
    """The same burst again, in a database of its own, with `--pending` timers not due."""
    loaded = w.fresh(PENDING_DATABASE, PENDING_PREFIX)
    asyncio.run(_create_database(w, PENDING_DATABASE))
    return bench_rebound(loaded, args, pending=args.pending)


def bench_timers(w: Where, args: Any) -> dict[str, Any]:
    rebound = bench_rebound(w, args, steady_s=args.steady_s)
    result: dict[str, Any] = {"timers": args.timers, "rebound": rebound}
    if args.pending:
        loaded = result["with_pending"] = bench_pending(w, args)
        result["ratio_fire_pending"] = round(loaded["fire_per_s"] / rebound["fire_per_s"], 2)
    peer = result["apscheduler"] = bench_apscheduler(w, args)
    result["ratio_enrol"] = round(rebound["enrol_per_s"] / peer["enrol_per_s"], 1)
    result["ratio_fire"] = round(rebound["fire_per_s"] / peer["fire_per_s"], 1)
    return result


def table(r: dict[str, Any]) -> list[str]:
    reb, ap = r["rebound"], r["apscheduler"]
    lines = [
        f"(c) timers: {r['timers']} customers into a one-wait journey, all due at one moment",
        f"{'':28} {'Rebound':>12} {'APScheduler':>12} {'ratio':>8}",
        f"{'enrol/s':28} {reb['enrol_per_s']:>12.0f} {ap['enrol_per_s']:>12.0f} "
        f"{r['ratio_enrol']:>7.1f}x",
        f"{'fire/s':28} {reb['fire_per_s']:>12.0f} {ap['fire_per_s']:>12.0f} "
        f"{r['ratio_fire']:>7.1f}x",
        f"{'CPU s per 1,000 enrolled':28} {reb['enrol_cpu_s_per_1000']:>12.3f}",
        f"{'CPU s per 1,000 fired':28} {reb['fire_cpu_s_per_1000']:>12.3f}",
    ]
    for name in ("p50_s", "p99_s", "max_s"):
        lines.append(
            f"{'lateness ' + name.replace('_s', ' s'):28} {reb['lateness'][name]:>12.2f} "
            f"{ap['lateness'][name]:>12.2f}"
        )
    lines.append(
        f"{'published / fired':28} {reb['published']:>12} {ap['fired']:>12}"
        f"   ({reb['distinct_requests']} distinct request keys)"
    )
    if "with_pending" in r:
        pend = r["with_pending"]
        lines.append(
            f"  same burst with {pend['pending_timers']} timers pending, not due (Rebound): "
            f"fire/s {pend['fire_per_s']:.0f} vs {reb['fire_per_s']:.0f} without "
            f"({r['ratio_fire_pending']:.2f}x), lateness p99 {pend['lateness']['p99_s']:.2f} s, "
            f"published {pend['published']}"
        )
    if "steady" in reb:
        st = reb["steady"]
        lines.append(
            f"  steady {STEADY_PER_S}/s due for {st['timers']} timers (Rebound): lateness "
            f"p50 {st['lateness']['p50_s']:.3f} s, p99 {st['lateness']['p99_s']:.3f} s, "
            f"max {st['lateness']['max_s']:.3f} s, published {st['published']}"
        )
    lines.append("")
    return lines
