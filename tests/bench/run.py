"""Orchestrates `make bench`: its own PostgreSQL and broker, one ingest process per part.

PostgreSQL runs durable (fsync on, synchronous_commit on, full_page_writes on) in
.local/bench/; the broker is a fresh Tansu (in-memory storage) per run. Results go to stdout
as a table and to .local/bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.ingest.adapters.tables import SCHEMA
from services.ingest.app import MIGRATIONS_DIR
from shared.db import upgrade
from shared.kafka import ensure_topics
from shared.topics import CUSTOMER_ACTIVITY, EMAIL_EVENTS, SHOP_EVENTS, Topics, dlq
from tests.bench import consumer as cbench
from tests.bench import e2e as ebench
from tests.bench import importer as ibench
from tests.bench import mail as mbench
from tests.bench import predictions as pbench
from tests.bench import segments as sbench
from tests.bench import timers as tbench
from tests.bench.tracking import TRACKING_KEYS_JSON
from tests.bench.webhooks import SHOPS_JSON

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
# A script, not a package (as in tests/conftest.py); `make lint` type-checks it as `devstack`.
import devstack  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

BENCH_DIR = devstack.LOCAL / "bench"
DATABASE = "bench"
NAIVE_DATABASE = "bench_naive"  # the ORM peer's tables, so both start from empty ones
PARTITIONS = 3
WEBHOOK_PREFIX = "wh."
NAIVE_WEBHOOK_PREFIX = "whnaive."
CONSUMER_PREFIX = "cons."
TRACKING_PREFIX = "trk."
NAIVE_TRACKING_PREFIX = "trknaive."
NAIVE_CONSUMER_GROUP = "naive-orm"


@dataclass(frozen=True)
class Stack:
    pg: devstack.Postgres
    bootstrap: str
    tansu_pid: int

    @property
    def database_url(self) -> str:
        return self.url_of(DATABASE)

    def url_of(self, database: str) -> str:
        base: str = self.pg.url.rsplit("/", 1)[0]
        return f"{base}/{database}"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def stack() -> Iterator[Stack]:
    """Durable PostgreSQL with a fresh `bench` database and the ingest schema; a fresh broker."""
    pg = devstack.Postgres(BENCH_DIR / "pg" / "data", devstack.free_port(), durable=True)
    pg.stop()  # a cluster left over from an interrupted run listens on an old port
    pg.start()
    broker_port = devstack.free_port()
    tansu = devstack.start_tansu(broker_port, BENCH_DIR / "tansu.log")
    try:
        result = Stack(pg, f"127.0.0.1:{broker_port}", tansu.pid)
        for database in (DATABASE, NAIVE_DATABASE):
            pg.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            pg.psql(f'CREATE DATABASE "{database}"')
            upgrade(MIGRATIONS_DIR, result.url_of(database), SCHEMA)
        prefixes = (WEBHOOK_PREFIX, NAIVE_WEBHOOK_PREFIX, CONSUMER_PREFIX)
        for prefix in (*prefixes, TRACKING_PREFIX, NAIVE_TRACKING_PREFIX):
            asyncio.run(ensure_topics(result.bootstrap, Topics(prefix).all_with_dlq(), PARTITIONS))
        yield result
    finally:
        devstack.stop_process(tansu)
        pg.stop()


def ingest_env(s: Stack, role: str, port: int, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REBOUND_INGEST_DATABASE_URL": s.database_url,
        "REBOUND_INGEST_KAFKA_BOOTSTRAP_SERVERS": s.bootstrap,
        "REBOUND_INGEST_HTTP_PORT": str(port),
        "REBOUND_INGEST_TOPIC_PREFIX": prefix,
        "REBOUND_INGEST_ROLE": role,
        "REBOUND_INGEST_SHOPS": SHOPS_JSON,
        "REBOUND_INGEST_TRACKING_KEYS": TRACKING_KEYS_JSON,
        "REBOUND_INGEST_LOG_LEVEL": "WARNING",
        "REBOUND_INGEST_WORKERS": "1",  # figures are per process
    }


@contextmanager
def process(
    args: list[str], env: dict[str, str], log_name: str
) -> Iterator[subprocess.Popen[bytes]]:
    with (BENCH_DIR / log_name).open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        devstack.stop_process(proc)


@contextmanager
def ingest(
    s: Stack, role: str, prefix: str, profile: str | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One ingest process; with `profile`, under cProfile writing its statistics there."""
    port = devstack.free_port()
    args = ["-m", "services.ingest", "run", "--role", role]
    if profile:
        args = ["-m", "tests.bench.profiled", profile, *args[1:]]
    with process(args, ingest_env(s, role, port, prefix), f"ingest-{role}.log") as proc:
        yield proc, port


def peer_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def wait_ready(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {BENCH_DIR}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("ingest not ready")


def count_rows(s: Stack, table: str) -> int:
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(s.pg.port),
            "-U",
            devstack.PG_USER,
            "-d",
            DATABASE,
            "-tAc",
            f"SELECT count(*) FROM {SCHEMA}.{table}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu_s(s: Stack) -> float:
    """CPU seconds of the bench's PostgreSQL so far: the postmaster and its live children
    (backends, WAL writer, checkpointer); a backend that exited is no longer counted."""
    postmaster = int((s.pg.datadir / "postmaster.pid").read_text().split()[0])
    total = cpu_s(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# --- (a) webhooks ------------------------------------------------------------------------------


def bench_webhooks(s: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """The naive FastAPI peer and Rebound's api process, in alternating rounds per level.

    Both servers are up at once (the idle one costs nothing); alternating short rounds
    spreads the machine's changing load (other work on the same cores) over both sides, and
    the median round is reported.
    """
    port = devstack.free_port()
    naive_args = ["-m", "tests.bench.naive_webhooks", "--port", str(port)]
    naive_args += ["--bootstrap", s.bootstrap, "--topic", NAIVE_WEBHOOK_PREFIX + SHOP_EVENTS]
    naive: list[dict[str, Any]] = []
    rebound: list[dict[str, Any]] = []
    with (
        process(naive_args, peer_env(), "naive-webhooks.log") as naive_proc,
        ingest(s, "api", WEBHOOK_PREFIX) as (rebound_proc, rebound_port),
    ):
        wait_ready(port, naive_proc, path="/healthz")
        wait_ready(rebound_port, rebound_proc)
        for conns in args.connections:
            rounds: dict[str, list[dict[str, Any]]] = {"naive": [], "rebound": []}
            for n in range(args.rounds):
                log(f"webhooks: {conns} connections, round {n + 1} of {args.rounds}")
                rounds["naive"].append(load(naive_proc, port, conns, args))
                rounds["rebound"].append(load(rebound_proc, rebound_port, conns, args))
            naive.append(median_round(rounds["naive"]))
            rebound.append(median_round(rounds["rebound"]))
    produced = asyncio.run(cbench.end_offsets(s.bootstrap, WEBHOOK_PREFIX + SHOP_EVENTS))
    return {"naive": naive, "rebound": rebound, "rebound_events_on_topic": produced}


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median req/s, with every round's req/s and p99 beside it."""
    ranked = sorted(rounds, key=lambda r: float(r["requests_per_s"]))
    chosen = dict(ranked[len(ranked) // 2])
    chosen["rounds_requests_per_s"] = [r["requests_per_s"] for r in rounds]
    chosen["rounds_p99_ms"] = [r["p99_ms"] for r in rounds]
    chosen["errors"] = sum(int(r["errors"]) for r in rounds)
    return chosen


WEBHOOK_LOAD = ("-m", "tests.bench.webhooks")


def load(
    proc: subprocess.Popen[bytes],
    port: int,
    connections: int,
    args: argparse.Namespace,
    generator: tuple[str, ...] = WEBHOOK_LOAD,
) -> dict[str, Any]:
    """One round of the load generator (its own process) against `port`; the server's CPU."""
    cpu_before, wall_before = cpu_s(proc.pid), time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            *generator,
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
        ],
        cwd=ROOT,
        env=peer_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    if not result["requests"]:
        raise RuntimeError(f"the load generator completed no request: {out.stderr}")
    wall = time.perf_counter() - wall_before
    result["server_cpu_pct"] = round(100 * (cpu_s(proc.pid) - cpu_before) / wall, 1)
    return result


# --- (f) tracking ------------------------------------------------------------------------------

TRACKING_PATHS = ("webhook", "naive open", "open", "naive click", "click")
TRACKING_LOAD = ("-m", "tests.bench.tracking", "--kind")


def bench_tracking(s: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """Pixel and click on one ingest api process beside the naive peer, and the same process's
    webhook figures in the same alternating rounds (the issue's yardstick)."""
    port = devstack.free_port()
    naive_args = ["-m", "tests.bench.naive_tracking", "--port", str(port)]
    naive_args += ["--bootstrap", s.bootstrap, "--topic", NAIVE_TRACKING_PREFIX + EMAIL_EVENTS]
    levels: list[dict[str, Any]] = []
    with (
        process(naive_args, peer_env(), "naive-tracking.log") as naive_proc,
        ingest(s, "api", TRACKING_PREFIX) as (rebound_proc, rebound_port),
    ):
        wait_ready(port, naive_proc, path="/healthz")
        wait_ready(rebound_port, rebound_proc)
        servers = {"naive": (naive_proc, port), "rebound": (rebound_proc, rebound_port)}
        for conns in args.connections:
            rounds: dict[str, list[dict[str, Any]]] = {path: [] for path in TRACKING_PATHS}
            for n in range(args.rounds):
                log(f"tracking: {conns} connections, round {n + 1} of {args.rounds}")
                for path in TRACKING_PATHS:
                    proc, at = servers["naive" if path.startswith("naive") else "rebound"]
                    kind = path.removeprefix("naive ")
                    generator = WEBHOOK_LOAD if kind == "webhook" else (*TRACKING_LOAD, kind)
                    rounds[path].append(load(proc, at, conns, args, generator))
            levels.append({path: median_round(r) for path, r in rounds.items()})
    produced = asyncio.run(cbench.end_offsets(s.bootstrap, TRACKING_PREFIX + EMAIL_EVENTS))
    return {"levels": levels, "rebound_email_events_on_topic": produced}


# --- (b) consumer ------------------------------------------------------------------------------


def bench_consumer(s: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """The same events, consumed by the naive ORM loop, then by one ingest consumer process."""
    topic = CONSUMER_PREFIX + SHOP_EVENTS
    log(f"consumer: generating and producing {args.events} events")
    events = cbench.make_events(args.events)
    produce_s = asyncio.run(cbench.produce(s.bootstrap, topic, events))
    log(f"consumer: produced in {produce_s:.1f}s")
    naive = bench_naive_consumer(s, args, topic, len(events))
    log("consumer: starting one --role consumer process")
    statements = PgStatements(s) if args.pg_statements else None
    with ingest(s, "consumer", CONSUMER_PREFIX, args.profile_consumer) as (proc, _):
        started = time.perf_counter()
        cpu_before = cpu_s(proc.pid)
        progress = asyncio.run(
            cbench.wait_committed(
                s.bootstrap,
                CONSUMER_PREFIX + "ingest",
                topic,
                len(events),
                started,
                args.consumer_timeout,
                lambda: proc.poll() is None,
                lambda: (cpu_s(proc.pid), pg_cpu_s(s)),
            )
        )
        cpu = cpu_s(proc.pid) - cpu_before
    assert progress.done_at is not None
    activity, distinct = asyncio.run(
        cbench.distinct_sources(s.bootstrap, CONSUMER_PREFIX + CUSTOMER_ACTIVITY)
    )
    dead = asyncio.run(cbench.end_offsets(s.bootstrap, CONSUMER_PREFIX + dlq(SHOP_EVENTS)))
    total_s = progress.done_at - started
    rebound: dict[str, Any] = {
        "events": len(events),
        "produce_s": round(produce_s, 1),
        "wall_s_from_process_start": round(total_s, 2),
        "events_per_s_from_process_start": round(len(events) / total_s, 1),
        "events_per_s_steady": round(progress.steady_events_per_s(), 1),
        "processed_events_rows": count_rows(s, "processed_events"),
        "customers_rows": count_rows(s, "customers"),
        "customer_activity_events": activity,
        "customer_activity_distinct_sources": distinct,
        "dead_lettered": dead,
        "consumer_cpu_pct": round(100 * cpu / total_s, 1),
        **steady_cpu(progress),
    }
    if statements:
        rebound["pg_top_statements"] = statements.top()
    return {"naive": naive, "rebound": rebound}


def steady_cpu(progress: cbench.Progress) -> dict[str, float]:
    """CPU ms per event between the first and the last commit: the process, PostgreSQL."""
    per_event = progress.steady_cpu_ms_per_event()
    if not per_event:
        return {}
    return {
        "cpu_ms_per_event_steady": round(per_event[0], 4),
        "postgres_cpu_ms_per_event_steady": round(per_event[1], 4),
    }


class PgStatements:
    """pg_stat_statements for one part (`--pg-statements`): PostgreSQL restarted with the
    extension preloaded, its counters reset now; `top()` reads them and switches it off
    again (the bench's cluster is kept between runs)."""

    def __init__(self, s: Stack) -> None:
        self._s = s
        s.pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        s.pg.stop()
        s.pg.start()
        s.pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)
        s.pg.psql("SELECT pg_stat_statements_reset()", DATABASE)

    def top(self, limit: int = 12) -> list[str]:
        out = self._s.pg.psql(
            "SELECT round(total_exec_time)::text || ' ms | ' || calls || ' calls | ' || rows"
            " || ' rows | ' || regexp_replace(left(query, 160), '\\s+', ' ', 'g')"
            " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
            f" WHERE datname = '{DATABASE}') ORDER BY total_exec_time DESC LIMIT {limit}",
            DATABASE,
        )
        self._s.pg.psql("ALTER SYSTEM RESET shared_preload_libraries")
        return str(out).splitlines()


def bench_naive_consumer(
    s: Stack, args: argparse.Namespace, topic: str, target: int
) -> dict[str, Any]:
    """The per-event ORM loop on the same topic (its own group and database), for at most
    --naive-seconds: at its pace all events would take long; the rate is what is compared."""
    log(f"consumer (naive ORM loop): at most {args.naive_seconds:.0f}s")
    peer = ["-m", "tests.bench.naive_consumer", "--bootstrap", s.bootstrap, "--topic", topic]
    peer += ["--database-url", s.url_of(NAIVE_DATABASE), "--group", NAIVE_CONSUMER_GROUP]
    with process(peer, peer_env(), "naive-consumer.log") as proc:
        started, cpu_before = time.perf_counter(), cpu_s(proc.pid)
        progress = asyncio.run(
            cbench.committed_for(
                s.bootstrap,
                NAIVE_CONSUMER_GROUP,
                topic,
                target,
                started,
                args.naive_seconds,
                lambda: proc.poll() is None,
                lambda: (cpu_s(proc.pid), pg_cpu_s(s)),
            )
        )
        cpu = cpu_s(proc.pid) - cpu_before
        wall_s = time.perf_counter() - started
    return {
        "events_committed": progress.count,
        "of_events": target,
        "measured_s": round(wall_s, 1),
        "events_per_s_steady": round(progress.steady_events_per_s(), 1),
        "consumer_cpu_pct": round(100 * cpu / wall_s, 1),
        **steady_cpu(progress),
    }


# --- report --------------------------------------------------------------------------------


def ratio(rebound: float, naive: float) -> str:
    return f"{rebound / naive:.1f}x" if naive else "n/a"


def webhook_table(w: dict[str, Any]) -> list[str]:
    lines = [
        "(a) signed Shopify checkouts/create, 2xx after the broker's ack (acks=all), one process",
        "    naive: plain FastAPI endpoint, HMAC check + one aiokafka send_and_wait per request",
        f"{'conns':>6} | {'naive req/s':>11} {'p50':>6} {'p99':>6} {'cpu%':>5} | "
        f"{'Rebound req/s':>13} {'p50':>6} {'p99':>6} {'cpu%':>5} {'errors':>6} | {'ratio':>6}",
    ]
    for n, r in zip(w["naive"], w["rebound"], strict=True):
        lines.append(
            f"{r['connections']:>6} | {n['requests_per_s']:>11.0f} {n['p50_ms']:>6.1f} "
            f"{n['p99_ms']:>6.1f} {n['server_cpu_pct']:>5.0f} | {r['requests_per_s']:>13.0f} "
            f"{r['p50_ms']:>6.1f} {r['p99_ms']:>6.1f} {r['server_cpu_pct']:>5.0f} "
            f"{r['errors'] + n['errors']:>6} | "
            f"{ratio(r['requests_per_s'], n['requests_per_s']):>6}"
        )
    lines.append(
        "    median of alternating rounds; latencies in ms, measured by the client; errors:"
        " non-2xx or broken connections, all rounds"
    )
    return [*lines, ""]


def tracking_table(t: dict[str, Any]) -> list[str]:
    lines = [
        "(f) tracking: pixel GET /t/o/{token}, click GET /t/c/{token} (302), one ingest process",
        "    naive: plain FastAPI routes, the same token check, one send_and_wait per request",
        "    Rebound answers once the event is handed to the producer (an open may be lost,",
        "    a reader is never kept waiting); /webhook: tracking req/s over the same process's",
        "    webhook req/s (the issue's target: at least 1.0x)",
        f"{'conns':>6} {'path':>7} | {'naive req/s':>11} {'p50':>6} {'p99':>6} {'cpu%':>5} | "
        f"{'Rebound req/s':>13} {'p50':>6} {'p99':>6} {'cpu%':>5} {'errors':>6} | "
        f"{'ratio':>6} {'/webhook':>8}",
    ]
    for level in t["levels"]:
        hook = level["webhook"]
        lines.append(
            f"{hook['connections']:>6} {'webhook':>7} | {'':>11} {'':>6} {'':>6} {'':>5} | "
            f"{hook['requests_per_s']:>13.0f} {hook['p50_ms']:>6.1f} {hook['p99_ms']:>6.1f} "
            f"{hook['server_cpu_pct']:>5.0f} {hook['errors']:>6} |"
        )
        for kind, name in (("open", "pixel"), ("click", "click")):
            n, r = level[f"naive {kind}"], level[kind]
            lines.append(
                f"{r['connections']:>6} {name:>7} | {n['requests_per_s']:>11.0f} "
                f"{n['p50_ms']:>6.1f} {n['p99_ms']:>6.1f} {n['server_cpu_pct']:>5.0f} | "
                f"{r['requests_per_s']:>13.0f} {r['p50_ms']:>6.1f} {r['p99_ms']:>6.1f} "
                f"{r['server_cpu_pct']:>5.0f} {r['errors'] + n['errors']:>6} | "
                f"{ratio(r['requests_per_s'], n['requests_per_s']):>6} "
                f"{ratio(r['requests_per_s'], hook['requests_per_s']):>8}"
            )
    lines.append(
        f"    median of alternating rounds; latencies in ms, measured by the client; "
        f"email.events produced by Rebound: {t['rebound_email_events_on_topic']}"
    )
    return [*lines, ""]


def consumer_table(c: dict[str, Any]) -> list[str]:
    n, r = c["naive"], c["rebound"]
    return [
        "(b) shop.events -> PostgreSQL, one process each, the same events",
        f"  naive ORM loop (read, update, commit per event)  {n['events_per_s_steady']:>8.0f} "
        f"events/s  ({n['events_committed']} of {n['of_events']} in {n['measured_s']} s, "
        f"cpu {n['consumer_cpu_pct']:.0f}%)",
        f"  Rebound ingest consumer (+ customer.activity)   {r['events_per_s_steady']:>8.0f} "
        f"events/s  (all {r['events']}, cpu {r['consumer_cpu_pct']:.0f}%)",
        f"  ratio                                            "
        f"{ratio(r['events_per_s_steady'], n['events_per_s_steady']):>8}",
        f"  Rebound from start-up: {r['events_per_s_from_process_start']:.0f} events/s "
        f"({r['wall_s_from_process_start']} s); processed_events {r['processed_events_rows']}, "
        f"customers {r['customers_rows']}, customer.activity {r['customer_activity_events']} "
        f"({r['customer_activity_distinct_sources']} distinct), dead-lettered "
        f"{r['dead_lettered']}",
        f"  CPU ms per event, steady: naive {_ms(n, 'cpu')} "
        f"(its PostgreSQL {_ms(n, 'postgres_cpu')}); Rebound {_ms(r, 'cpu')} "
        f"(its PostgreSQL {_ms(r, 'postgres_cpu')})",
        *(f"    pg: {line}" for line in r.get("pg_top_statements", ())),
        "",
    ]


def _ms(result: dict[str, Any], what: str) -> str:
    value = result.get(f"{what}_ms_per_event_steady")
    return "n/a" if value is None else f"{value:.3f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "",
        "Rebound ingest benchmark (make bench): each path beside its naive peer, same run",
        f"machine: {os.cpu_count()} cores, "
        "PostgreSQL durable (fsync on), Tansu in-memory broker, acks=all",
        "",
    ]
    if "webhooks" in results:
        lines += webhook_table(results["webhooks"])
    if "tracking" in results:
        lines += tracking_table(results["tracking"])
    if "consumer" in results:
        lines += consumer_table(results["consumer"])
    if "mail" in results:
        lines += mbench.table_lines(results["mail"])
    if "timers" in results:
        lines.extend(tbench.table(results["timers"]))
    if "import" in results:
        lines += ibench.table_lines(results["import"])
    if "predictions" in results:
        lines += pbench.table_lines(results["predictions"])
    if "segments" in results:
        lines += sbench.table_lines(results["segments"])
    if "segment_timers" in results:
        lines += sbench.pending_lines(results["segment_timers"])
    if "e2e" in results:
        lines += ebench.table_lines(results["e2e"])
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench BENCH_ARGS=...", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per level")
    parser.add_argument(
        "--connections",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[16, 64],
        help="comma-separated concurrency levels",
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--consumer-timeout", type=float, default=180.0)
    parser.add_argument(
        "--profile-consumer", metavar="FILE", help="run the consumer under cProfile (FILE.prof)"
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="report PostgreSQL's top statements of the consumer part (pg_stat_statements)",
    )
    parser.add_argument(
        "--naive-seconds", type=float, default=45.0, help="at most this long for the ORM loop"
    )
    parser.add_argument("--mails", type=int, default=5_000, help="mails per side (mail bench)")
    parser.add_argument("--timers", type=int, default=50_000, help="customers, all due at once")
    parser.add_argument(
        "--pending", type=int, default=0, help="timers not due, present while firing (Rebound)"
    )
    parser.add_argument(
        "--steady-s", type=float, default=20.0, help="seconds of 2,000 timers/s due (0: skip)"
    )
    parser.add_argument("--timers-timeout", type=float, default=600.0)
    parser.add_argument(
        "--import-orders", type=int, default=1_000_000, help="orders in the generated file"
    )
    parser.add_argument(
        "--prediction-customers", type=int, default=1_000_000, help="synthetic shop's customers"
    )
    parser.add_argument(
        "--segment-customers", type=int, default=1_000_000, help="customers (segments bench)"
    )
    parser.add_argument(
        "--naive-segment-customers",
        type=int,
        default=100_000,
        help="at most this many customers for the Python loop (reported per customer)",
    )
    parser.add_argument(
        "--segment-due", type=int, default=20_000, help="due segment timers fired (segments)"
    )
    parser.add_argument(
        "--segment-pending",
        type=int,
        default=1_000_000,
        help="segment timers not due, in the table while those fire (segments bench)",
    )
    parser.add_argument(
        "--e2e-rate", type=float, default=200.0, help="checkouts posted per second (e2e)"
    )
    parser.add_argument(
        "--e2e-seconds", type=float, default=20.0, help="seconds of posting at that rate (e2e)"
    )
    parser.add_argument(
        "--only",
        choices=[
            "webhooks",
            "tracking",
            "consumer",
            "mail",
            "timers",
            "import",
            "predictions",
            "segments",
            "e2e",
        ],
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "postgres_durable": True,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with stack() as s:
        if args.only in (None, "webhooks"):
            results["webhooks"] = bench_webhooks(s, args)
        if args.only in (None, "tracking"):
            results["tracking"] = bench_tracking(s, args)
        if args.only in (None, "consumer"):
            results["consumer"] = bench_consumer(s, args)
        if args.only in (None, "mail"):
            results["mail"] = mbench.bench_mail(s.database_url, s.bootstrap, args.mails, BENCH_DIR)
        if args.only in (None, "timers"):
            where = tbench.Where(s.database_url, s.bootstrap, BENCH_DIR, PARTITIONS)
            results["timers"] = tbench.bench_timers(where, args)
        if args.only in (None, "import"):
            results["import"] = ibench.bench_import(s.database_url, args.import_orders, BENCH_DIR)
        if args.only in (None, "predictions"):
            results["predictions"] = pbench.bench_predictions(args.prediction_customers)
        if args.only in (None, "segments"):
            results["segments"] = sbench.bench_segments(
                s.database_url, args.segment_customers, args.naive_segment_customers
            )
            results["segment_timers"] = sbench.bench_pending_timers(
                s.database_url, args.segment_due, args.segment_pending, args.naive_segment_customers
            )
        if args.only in (None, "e2e"):
            whole = ebench.Where(
                s.pg, s.bootstrap, BENCH_DIR, PARTITIONS, lambda: pg_cpu_s(s), s.tansu_pid
            )
            results["e2e"] = ebench.bench_e2e(whole, args.e2e_rate, args.e2e_seconds)
    (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results), flush=True)
    log(f"written to {BENCH_DIR / 'results.json'}")
