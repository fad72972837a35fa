"""Mail throughput: smtplib with a new connection per mail vs one dispatcher process.

Both send the same N abandoned-cart reminders (same templates, rendered by the same Jinja2
renderer) to Postfix's smtp-sink on a free loopback port, one after the other in the same run.
The peer is what a Python shop writes first: render, build an `EmailMessage`, open an SMTP
connection, `send_message`, quit; it runs in a process of its own so its CPU is measured the
same way. The dispatcher is `python -m services.dispatcher run` as deployed: the requests are
produced to message.requests and the clock stops when all N results are on
engagement.results. Without smtp-sink (`make smtp-sink` installs Postfix) both go to an
aiosmtpd sink instead, and the report says so. REBOUND_BENCH_PROFILE=1 runs the dispatcher
under cProfile (dispatcher.prof in the bench directory; its CPU figure then includes the
profiler's cost).

`python -m tests.bench.mail peer|sink ...` are the peer and the fallback sink, run by the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import smtplib
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from rebound.dlq import read_to_end
from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.app import MIGRATIONS_DIR
from services.dispatcher.domain.content import message_id, render_context
from services.dispatcher.settings import DispatcherSettings
from shared.db import upgrade
from shared.events import (
    MESSAGE_REQUESTED,
    MessageRequest,
    encode,
    make_event,
    stable_event_id,
)
from shared.kafka import ensure_topics
from shared.topics import ENGAGEMENT_RESULTS, MESSAGE_REQUESTS, Topics

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "mail."
MAIL_FROM = "Bench Shop <hello@shop.example>"
SUBJECT = "{{ recipient.first_name or 'Hello' }}, you left something in your cart"
CART = {
    "cart_id": "cart-1",
    "lines": [
        {"title": "Linen Shirt", "variant_title": "M / Sand", "quantity": 2, "price": "39.00"},
        {"title": "Canvas Tote", "quantity": 1, "price": "18.50"},
    ],
    "currency": "USD",
    "total_price": "96.50",
    "recovery_url": "https://bench.myshopify.com/cart/recover?token=abc",
    "updated_at": "2024-10-01T00:00:00Z",
}
_SINK_COUNT = re.compile(rb"mesg=(\d+)")
DEPLOY_MAILS = 5_000  # per side of the deploy comparison
DEFAULT_STOP_GRACE_S: float = DispatcherSettings.model_fields["stop_grace_s"].default


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def requests(count: int, run: str) -> list[MessageRequest]:
    return [
        reminder_request(
            f"{run}-{n}",
            f"bench:c:{run}-{n}",
            {
                "email": f"customer-{n}@example.com",
                "first_name": "Zoë" if n % 2 else "Ada",
                "last_name": "Lovelace",
            },
            CART,
            datetime(2024, 10, 1, 3, tzinfo=UTC),
        )
        for n in range(count)
    ]


def reminder_request(
    key: str,
    customer_key: str,
    recipient: dict[str, Any],
    cart: dict[str, Any],
    requested_at: datetime,
) -> MessageRequest:
    """The abandoned-cart reminder every mail bench sends, for one recipient and cart."""
    return MessageRequest.model_validate(
        {
            "request_key": key,
            "shop_id": "bench",
            "customer_key": customer_key,
            "journey_id": "abandoned-cart",
            "journey_version": 1,
            "step_id": "reminder",
            "template": "abandoned_cart_reminder",
            "subject": SUBJECT,
            "recipient": recipient,
            "marketing_consent": "subscribed",
            "context": {"cart": cart},
            "requested_at": requested_at,
        }
    )


# --- the sink ----------------------------------------------------------------------------------


class Sink:
    """smtp-sink (or the aiosmtpd fallback) on a loopback port, counting accepted mail.

    With `record`, always the aiosmtpd sink, writing one line per recipient of every mail
    it accepts to that file: `<arrival, epoch seconds> <recipient>` (smtp-sink's dumps carry
    the recipient but only a time stamp to the second).
    """

    def __init__(self, port: int, log_path: Path, record: Path | None = None) -> None:
        self.port = port
        self._log_path = log_path
        self.record = record
        if record is not None:
            self.kind = "aiosmtpd (records arrival time and recipient)"
        elif shutil.which("smtp-sink"):
            self.kind = "postfix smtp-sink"
        else:
            self.kind = "aiosmtpd (fallback)"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        out = self._log_path.open("wb")
        command = [sys.executable, "-m", "tests.bench.mail", "sink", "--port", str(self.port)]
        if self.record is not None:
            self.record.unlink(missing_ok=True)
            command += ["--record", str(self.record)]
        elif shutil.which("smtp-sink"):
            # -c: running counters on stdout; -u: it refuses to keep root privileges.
            command = ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"]
        else:
            log("smtp-sink not found (make smtp-sink installs it): using the aiosmtpd sink")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        _wait_port(self.port)

    def accepted(self) -> int:
        found = _SINK_COUNT.findall(self._log_path.read_bytes())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)


def _wait_port(port: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=1).quit()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no SMTP server on port {port}")


def run_fallback_sink(port: int, record: Path | None = None) -> None:
    from aiosmtpd.controller import Controller

    arrivals = None if record is None else record.open("a", buffering=1)  # a line each

    class Counting:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()  # the whole mail is here; the 250 goes out next
            Counting.count += 1
            if arrivals is not None:
                arrivals.writelines(f"{arrived:.6f} {to}\n" for to in envelope.rcpt_tos)
            print(f"mesg={Counting.count}", end="\r", flush=True)
            return "250 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


# --- the peer: smtplib, a new connection per mail ----------------------------------------------


def send_naively(renderer: TemplateRenderer, request: MessageRequest, port: int) -> None:
    """What the naive peers do per mail: render, build an `EmailMessage`, open an SMTP
    connection, `send_message`, quit."""
    rendered = renderer.render(request.template, request.subject, render_context(request))
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = MAIL_FROM
    name = f"{request.recipient.first_name} {request.recipient.last_name}"
    message["To"] = formataddr((name, request.recipient.email))
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(request.request_key, MAIL_FROM)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as smtp:
        smtp.send_message(message)


def run_peer(port: int, count: int) -> dict[str, Any]:
    renderer = TemplateRenderer()
    batch = requests(count, "peer")
    started = time.perf_counter()
    for request in batch:
        send_naively(renderer, request, port)
    wall_s = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"mails": count, "wall_s": wall_s, "cpu_s": usage.ru_utime + usage.ru_stime}


def bench_peer(sink: Sink, count: int) -> dict[str, Any]:
    before = sink.accepted()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.mail",
            "peer",
            "--port",
            str(sink.port),
            "--n",
            str(count),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    raw = json.loads(out.stdout)
    return _figures(count, raw["wall_s"], raw["cpu_s"], sink.accepted() - before)


def _figures(count: int, wall_s: float, cpu_s: float, accepted: int) -> dict[str, Any]:
    return {
        "mails": count,
        "wall_s": round(wall_s, 2),
        "mails_per_s": round(count / wall_s, 1),
        "cpu_ms_per_mail": round(1000 * cpu_s / count, 3),
        "accepted_by_sink": accepted,
    }


# --- one dispatcher process ---------------------------------------------------------------------


def dispatcher_env(
    database_url: str, bootstrap: str, smtp_port: int, http_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REBOUND_DISPATCHER_DATABASE_URL": database_url,
        "REBOUND_DISPATCHER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REBOUND_DISPATCHER_HTTP_PORT": str(http_port),
        "REBOUND_DISPATCHER_TOPIC_PREFIX": PREFIX,
        "REBOUND_DISPATCHER_SMTP_PORT": str(smtp_port),
        "REBOUND_DISPATCHER_SMTP_LOCAL_HOSTNAME": "localhost",
        "REBOUND_DISPATCHER_MAIL_FROM": MAIL_FROM,
        "REBOUND_DISPATCHER_LOG_LEVEL": os.environ.get("BENCH_DISPATCHER_LOG_LEVEL", "WARNING"),
    }


@contextmanager
def dispatcher(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    profile = ["-m", "tests.bench.profiled", str(log_path.with_suffix(".prof"))]
    wrap = profile if os.environ.get("REBOUND_BENCH_PROFILE") else ["-m"]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *wrap, "services.dispatcher", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dispatcher exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("dispatcher not ready")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def produce(bootstrap: str, batch: list[MessageRequest]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        topic = PREFIX + MESSAGE_REQUESTS
        futures = [
            await producer.send(topic, encode(_request_event(r)), key=r.customer_key.encode())
            for r in batch
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _request_event(request: MessageRequest) -> Any:
    return make_event(
        type=MESSAGE_REQUESTED,
        source="bench",
        id=stable_event_id("request", request.request_key),
        time=request.requested_at,
        subject=request.customer_key,
        shop_id=request.shop_id,
        data=request,
    )


async def results(bootstrap: str) -> list[dict[str, Any]]:
    """Every event on engagement.results, read from the beginning to the end."""
    return [
        orjson.loads(r.value) for r in await read_to_end(bootstrap, PREFIX + ENGAGEMENT_RESULTS)
    ]


async def result_types(bootstrap: str) -> tuple[int, Counter[str]]:
    """(requests with a result on engagement.results, count per type)."""
    events = await results(bootstrap)
    return len({e["data"]["request_key"] for e in events}), Counter(e["type"] for e in events)


async def wait_results(bootstrap: str, run: str, expected: int, timeout_s: float) -> float:
    """Reads engagement.results until `expected` distinct requests of `run` have a result;
    returns when the last one was read. (Counted by reading: the local broker's end offsets
    run behind what a consumer reads.)"""
    topic = PREFIX + ENGAGEMENT_RESULTS
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        seen: set[str] = set()
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                for record in records:
                    key = orjson.loads(record.value)["data"]["request_key"]
                    if key.startswith(f"{run}-"):
                        seen.add(key)
            if len(seen) >= expected:
                return time.perf_counter()
    finally:
        await consumer.stop()
    raise TimeoutError(f"{len(seen)} of {expected} results after {timeout_s} s")


async def produce_and_wait(bootstrap: str, count: int, run: str, expected: int) -> float:
    """Produces `count` requests of `run`; returns when `expected` of them have a result."""
    waiting = asyncio.create_task(wait_results(bootstrap, run, expected, 300))
    await produce(bootstrap, requests(count, run))
    return await waiting


def bench_dispatcher(
    sink: Sink, database_url: str, bootstrap: str, count: int, bench_dir: Path
) -> dict[str, Any]:
    http_port = _free_port()
    env = dispatcher_env(database_url, bootstrap, sink.port, http_port)
    with dispatcher(env, bench_dir / "dispatcher.log") as proc:
        wait_ready(http_port, proc)
        log("mail: dispatcher ready; one warm-up mail (consumer group join)")
        asyncio.run(produce(bootstrap, requests(1, "warmup")))
        asyncio.run(wait_results(bootstrap, "warmup", 1, 60))
        before = sink.accepted()
        log(f"mail: {count} requests to one dispatcher process")
        cpu_before, started = cpu_s(proc.pid), time.perf_counter()
        finished = asyncio.run(produce_and_wait(bootstrap, count, "disp", count))
        cpu = cpu_s(proc.pid) - cpu_before
    figures = _figures(count, finished - started, cpu, sink.accepted() - before)
    distinct, types = asyncio.run(result_types(bootstrap))
    figures["results_distinct_requests"] = distinct - 1
    figures["result_types"] = dict(types)
    return figures


def bench_deploy(
    sink: Sink, database_url: str, bootstrap: str, count: int, bench_dir: Path, grace_s: float
) -> dict[str, Any]:
    """A rolling deploy in the middle of a send: SIGTERM the dispatcher once a fifth of
    `count` requests have a result, start the next one, and count what each became."""
    run = f"deploy{grace_s:g}".replace(".", "_")
    port = _free_port()
    env = dispatcher_env(database_url, bootstrap, sink.port, port) | {
        "REBOUND_DISPATCHER_STOP_GRACE_S": str(grace_s)
    }
    before = sink.accepted()
    log_path = bench_dir / f"dispatcher-{run}.log"
    with dispatcher(env, log_path) as proc:  # the instance the deploy stops
        wait_ready(port, proc)
        # the stop comes while most of the mail is still on its way
        asyncio.run(produce_and_wait(bootstrap, count, run, count // 5))
        stopping = time.perf_counter()
        proc.terminate()  # what the orchestrator sends
        proc.wait(60)
        stop_s = time.perf_counter() - stopping
    env["REBOUND_DISPATCHER_HTTP_PORT"] = str(port := _free_port())
    with dispatcher(env, log_path) as proc:  # the next instance takes the rest
        wait_ready(port, proc)
        asyncio.run(wait_results(bootstrap, run, count, 300))
    types = asyncio.run(run_result_types(bootstrap, run))
    return {
        "stop_grace_s": grace_s,
        "mails": count,
        "sigterm_to_exit_s": round(stop_s, 2),
        "accepted_by_sink": sink.accepted() - before,
        "results_by_type": dict(types),
    }


async def run_result_types(bootstrap: str, run: str) -> Counter[str]:
    """The distinct results of the run's requests, per type (a request answered twice with
    the same result counts once)."""
    seen = {
        (e["data"]["request_key"], e["type"].removeprefix("message.").split(".")[0])
        for e in await results(bootstrap)
        if e["data"]["request_key"].startswith(f"{run}-")
    }
    return Counter(kind for _, kind in seen)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the whole comparison -----------------------------------------------------------------------


def bench_mail(database_url: str, bootstrap: str, count: int, bench_dir: Path) -> dict[str, Any]:
    upgrade(MIGRATIONS_DIR, database_url, "dispatcher")
    asyncio.run(ensure_topics(bootstrap, Topics(PREFIX).all_with_dlq(), 3))
    sink = Sink(_free_port(), bench_dir / "smtp-sink.log")
    sink.start()
    try:
        log(f"mail: peer (smtplib, a new connection per mail), {count} mails to {sink.kind}")
        peer = bench_peer(sink, count)
        rebound = bench_dispatcher(sink, database_url, bootstrap, count, bench_dir)
        log(f"mail: a SIGTERM early in {DEPLOY_MAILS} mails, cut off and with a grace")
        deploys = [
            bench_deploy(sink, database_url, bootstrap, DEPLOY_MAILS, bench_dir, grace_s)
            for grace_s in (0.0, DEFAULT_STOP_GRACE_S)
        ]
    finally:
        sink.stop()
    return {
        "sink": sink.kind,
        "peer_smtplib_connection_per_mail": peer,
        "dispatcher": rebound,
        "ratio_mails_per_s": round(rebound["mails_per_s"] / peer["mails_per_s"], 2),
        "deploy": deploys,
    }


def table_lines(m: dict[str, Any]) -> list[str]:
    peer, rebound = m["peer_smtplib_connection_per_mail"], m["dispatcher"]
    lines = [
        f"(c) mail: {peer['mails']} abandoned-cart reminders to {m['sink']}, same templates",
        f"{'':<44} {'mails/s':>9} {'CPU ms/mail':>12} {'accepted':>9}",
    ]
    for name, r in (
        ("smtplib, a new connection per mail", peer),
        ("one dispatcher process (message.requests in)", rebound),
    ):
        lines.append(
            f"{name:<44} {r['mails_per_s']:>9.0f} {r['cpu_ms_per_mail']:>12.3f} "
            f"{r['accepted_by_sink']:>9}"
        )
    lines.append(f"ratio (dispatcher / peer, mails/s): {m['ratio_mails_per_s']:.1f}x")
    lines.append(f"dispatcher results: {rebound['result_types']}")
    lines.append("a SIGTERM once a fifth of the mail had a result, then the next dispatcher:")
    lines.append(f"{'STOP_GRACE_S':>14} {'mails':>6} {'exit s':>7} {'accepted':>9}  results")
    for d in m.get("deploy", []):
        lines.append(
            f"{d['stop_grace_s']:>14g} {d['mails']:>6} {d['sigterm_to_exit_s']:>7.2f} "
            f"{d['accepted_by_sink']:>9}  {d['results_by_type']}"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.mail")
    sub = parser.add_subparsers(dest="command", required=True)
    peer = sub.add_parser("peer", help="smtplib, a new connection per mail; prints JSON")
    peer.add_argument("--port", type=int, required=True)
    peer.add_argument("--n", type=int, required=True)
    sink = sub.add_parser("sink", help="the aiosmtpd sink used when smtp-sink is absent")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--record", type=Path, help="append '<epoch s> <recipient>' per mail")
    args = parser.parse_args(argv)
    if args.command == "peer":
        print(json.dumps(run_peer(args.port, args.n)))
    else:
        run_fallback_sink(args.port, args.record)


if __name__ == "__main__":
    main()
