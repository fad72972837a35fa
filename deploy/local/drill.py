"""make drill: the whole system, two of each service, under chaos; then count what arrived.

Starts PostgreSQL, Tansu, the mail catcher and two instances of every service as real
processes under .local/drill/ (ports of its own, so it never meets `make run`), loads a
one-reminder journey, posts N signed Shopify checkouts for N distinct customers (retrying
every non-2xx as Shopify does), and while they flow kills -9 a random service process every
few seconds and restarts it, and once stops PostgreSQL as a power cut would. When the system
is quiet it prints what the customers received and exits non-zero on any loss or duplicate.

With `--sigterm` the processes are stopped as a rolling deploy stops them instead: SIGTERM,
then SIGKILL only if the process has not exited after TERM_GRACE_S (Kubernetes' default).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import devstack
import drill_lateness
import httpx

from rebound.dlq import read_to_end
from shared.events import stable_event_id
from shared.kafka import ensure_topics
from shared.topics import ALL_TOPICS, ENGAGEMENT_RESULTS, Topics, dlq

ROOT = devstack.ROOT
DRILL = devstack.LOCAL / "drill"
JOURNEYS = ROOT / "deploy" / "local" / "drill-journeys"
TEMPLATE = ROOT / "tests" / "fixtures" / "shopify-2024-10" / "checkouts.create.json"
SERVICES = ("ingest", "scheduler", "dispatcher")
INSTANCES = 2
PARTITIONS = 6  # three per instance: a kill moves several partitions, and their timers
REMINDER_DELAY_S = 5.0  # the drill journey's wait, from the cart's updated_at
SHOP_ID = "demo"
SHOP_DOMAIN = "shop.myshopify.com"
SECRET = b"dev-shopify-secret"
CUSTOMER_ID_BASE = 7_100_000_000
PG_OUTAGE_S = 10.0
RESTART_AFTER_S = 0.5
TERM_GRACE_S = 30.0  # Kubernetes' terminationGracePeriodSeconds, as in deploy/k8s
SETTLE_S = 5.0  # everything accounted for: wait this long more for late duplicates
LATENESS_TARGET_P99_S = 30.0
# The local broker has no minimum session (Apache Kafka's is 6 s): a kill -9'd instance's
# partitions move about 3 s + a heartbeat after it died, instead of 6 s + 2 s.
SESSION_TIMEOUT_MS = 3_000


def log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the stack ---------------------------------------------------------------------------


@dataclass
class Member:
    """One instance of one service: a real process that can be killed and started again."""

    service: str
    index: int
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    terms: int = 0  # stopped by SIGTERM
    forced: int = 0  # of those, still running after TERM_GRACE_S and killed
    exits_s: list[float] = field(default_factory=list)  # SIGTERM to the process's exit
    up: bool = False  # answered /readyz since it was last started

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}", "run"],
            env=self.env,
            cwd=ROOT,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, no LeaveGroup, no commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1
        self.up = False

    def terminate(self) -> None:
        """SIGTERM, as a rolling deploy sends it; SIGKILL after TERM_GRACE_S."""
        if self.proc is not None and self.proc.poll() is None:
            sent = time.monotonic()
            self.proc.terminate()
            try:
                self.proc.wait(TERM_GRACE_S)
                self.exits_s.append(time.monotonic() - sent)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.forced += 1
            self.terms += 1
        self.up = False

    def stop(self) -> None:
        if self.proc is not None:
            devstack.stop_process(self.proc)


@dataclass
class Stack:
    pg: devstack.Postgres
    bootstrap: str
    smtp_port: int
    settings: dict[str, str]  # REBOUND_<SERVICE>_<name> for every service
    members: list[Member] = field(default_factory=list)
    infra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def mail_dir(self) -> Path:
        return DRILL / "mail"

    def ingest_urls(self) -> list[str]:
        return [
            f"http://127.0.0.1:{m.port}/webhooks/shopify"
            for m in self.members
            if m.service == "ingest"
        ]

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        for proc in reversed(self.infra):
            devstack.stop_process(proc)
        self.pg.stop()


def member_env(service: str, stack: Stack, port: int, index: int) -> dict[str, str]:
    prefix = f"REBOUND_{service.upper()}_"
    env = {
        **devstack.local_broker_env(prefix),
        **{prefix + name: value for name, value in stack.settings.items()},
        prefix + "DATABASE_URL": stack.pg.url,
        prefix + "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        prefix + "KAFKA_CLIENT_ID": f"drill-{service}-{index}",
        prefix + "HTTP_PORT": str(port),
    }
    if service == "ingest":
        env[prefix + "SHOPS"] = devstack.DEV_SHOPS
        env[prefix + "ROLE"] = "all"
    if service == "scheduler":
        env[prefix + "JOURNEYS_DIR"] = str(JOURNEYS)
    if service == "dispatcher":
        env[prefix + "SMTP_HOST"] = "127.0.0.1"
        env[prefix + "SMTP_PORT"] = str(stack.smtp_port)
    return {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def fresh_folder() -> None:
    """Every drill starts from nothing: a new database, no mail, no logs."""
    old = devstack.Postgres(DRILL / "pg" / "data", 0)
    if (old.datadir / "PG_VERSION").exists():
        old.stop()
    shutil.rmtree(DRILL, ignore_errors=True)
    (DRILL / "logs").mkdir(parents=True)


async def start_stack(settings: dict[str, str]) -> Stack:
    fresh_folder()
    logs = DRILL / "logs"
    pg = devstack.Postgres(DRILL / "pg" / "data", devstack.free_port())
    pg.start()
    broker_port, smtp_port = devstack.free_port(), devstack.free_port()
    stack = Stack(pg, f"127.0.0.1:{broker_port}", smtp_port, settings)
    try:
        stack.infra.append(devstack.start_tansu(broker_port, logs / "tansu.log"))
        stack.infra.append(start_mailcatcher(smtp_port, stack.mail_dir, logs))
        await prepare(stack)
        for index in range(1, INSTANCES + 1):
            for service in SERVICES:
                port = devstack.free_port()
                env = member_env(service, stack, port, index)
                member = Member(service, index, port, env, logs / f"{service}-{index}.log")
                stack.members.append(member)
                member.start()
        await asyncio.gather(*(until_ready(m) for m in stack.members))
        for member in stack.members:
            member.up = True
    except BaseException:
        stack.stop()
        raise
    return stack


def start_mailcatcher(port: int, directory: Path, logs: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "deploy" / "local" / "mailcatcher.py"),
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        stdout=(logs / "mailcatcher.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    devstack.wait_for_port(port, proc=proc)
    return proc


async def prepare(stack: Stack) -> None:
    await ensure_topics(stack.bootstrap, Topics().all_with_dlq(), PARTITIONS)
    for service in SERVICES:
        run_cli(service, "migrate", member_env(service, stack, 0, 0))
    run_cli("scheduler", "load-journeys", member_env("scheduler", stack, 0, 0))


def run_cli(service: str, command: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", f"services.{service}", command],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def until_ready(member: Member, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if member.proc is not None and member.proc.poll() is not None:
                raise SystemExit(f"{member.name} exited; see {member.log_path}")
            try:
                answer = await client.get(f"http://127.0.0.1:{member.port}/readyz")
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise SystemExit(f"{member.name} not ready after {timeout_s}s; see {member.log_path}")


# --- the shop: signed checkouts, retried like Shopify retries ----------------------------


@dataclass
class Checkout:
    email: str
    customer_key: str
    webhook_id: str
    body: bytes
    updated_at: datetime
    acknowledged_at: datetime | None = None
    attempts: int = 0

    @property
    def due_at(self) -> datetime:
        return self.updated_at + timedelta(seconds=REMINDER_DELAY_S)


def make_checkout(template: dict[str, Any], n: int) -> Checkout:
    """The fixture checkout for customer n, created now: its reminder is due 5 s from now."""
    body = copy.deepcopy(template)
    now = datetime.now(UTC)
    customer_id = CUSTOMER_ID_BASE + n
    email = f"drill-{n:05d}@example.com"
    body["id"] = customer_id
    body["token"] = body["cart_token"] = f"drill-cart-{n}"
    body["email"] = body["customer"]["email"] = email
    body["customer"]["id"] = customer_id
    body["customer"]["first_name"] = f"Shopper{n}"
    body["created_at"] = body["updated_at"] = now.isoformat()
    return Checkout(
        email=email,
        customer_key=f"{SHOP_ID}:c:{customer_id}",
        webhook_id=f"drill-checkout-{n}",
        body=json.dumps(body).encode(),
        updated_at=now,
    )


def signed_headers(checkout: Checkout) -> dict[str, str]:
    digest = hmac.new(SECRET, checkout.body, hashlib.sha256).digest()
    return {
        "X-Shopify-Topic": "checkouts/create",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": SHOP_DOMAIN,
        "X-Shopify-Webhook-Id": checkout.webhook_id,
        "Content-Type": "application/json",
    }


async def deliver(
    client: httpx.AsyncClient, urls: list[str], checkout: Checkout, give_up_s: float
) -> None:
    """Post until a 2xx, to either ingest instance, backing off as Shopify does (same body)."""
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        url = urls[checkout.attempts % len(urls)]
        checkout.attempts += 1
        try:
            answer = await client.post(url, content=checkout.body, headers=signed_headers(checkout))
            if 200 <= answer.status_code < 300:
                checkout.acknowledged_at = datetime.now(UTC)
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(min(5.0, 0.25 * 2 ** min(checkout.attempts, 5)))


async def send_checkouts(urls: list[str], total: int, send_s: float) -> list[Checkout]:
    """Spread the checkouts evenly over `send_s` seconds; each is created when it is posted."""
    template = json.loads(TEMPLATE.read_text())["body"]
    started = time.monotonic()
    checkouts: list[Checkout] = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        deliveries = []
        for n in range(total):
            await asyncio.sleep(max(0.0, started + send_s * n / total - time.monotonic()))
            checkouts.append(make_checkout(template, n))
            deliveries.append(asyncio.create_task(deliver(client, urls, checkouts[-1], 300.0)))
        await asyncio.gather(*deliveries)
    acknowledged = sum(c.acknowledged_at is not None for c in checkouts)
    log(f"{acknowledged}/{total} checkouts acknowledged")
    return checkouts


# --- chaos -------------------------------------------------------------------------------


@dataclass
class Chaos:
    """kill -9 a random service process every few seconds, and once cut PostgreSQL off.

    Two of each means one of each survives: unless `kill_any`, a process is killed only while
    the other instance of its service is up (started and answered /readyz), so a kill tests
    the takeover, not a whole service down until a restart under load.
    """

    stack: Stack
    rng: random.Random
    kill_every_s: float
    pg_outage_after_s: float
    kill_any: bool = False
    sigterm: bool = False  # stop as a deploy does (SIGTERM) instead of kill -9
    incidents: list[drill_lateness.Incident] = field(default_factory=list)
    restarts_s: list[float] = field(default_factory=list)  # kill -9 to /readyz again
    pg_outage_s: float | None = None  # stop to accepting connections again
    _waits: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        outage = asyncio.create_task(self._pg_outage())
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.kill_every_s)
            except TimeoutError:
                await self._kill_one()
        await outage  # PostgreSQL is back before anyone counts
        await asyncio.gather(*self._waits, return_exceptions=True)

    def _victims(self) -> list[Member]:
        members = self.stack.members
        if self.kill_any:
            return members
        return [
            m
            for m in members
            if all(o.up for o in members if o.service == m.service and o is not m)
        ]

    async def _kill_one(self) -> None:
        victims = self._victims()
        if not victims:
            log("no kill: every service is down to its last instance")
            return
        member = self.rng.choice(victims)
        how = "SIGTERM" if self.sigterm else "kill -9"
        log(f"{how} {member.name}")
        killed_at = time.monotonic()
        if self.sigterm:
            await asyncio.to_thread(member.terminate)
        else:
            member.kill()
        self._incident(member.service, f"{how} {member.name}")
        await asyncio.sleep(RESTART_AFTER_S)
        member.start()
        self._waits.append(asyncio.create_task(self._time_restart(member, killed_at)))

    async def _time_restart(self, member: Member, killed_at: float) -> None:
        """How long from kill -9 to /readyz again (not counted if killed again first)."""
        proc = member.proc
        async with httpx.AsyncClient(timeout=2.0) as client:
            while member.proc is proc and proc is not None and proc.poll() is None:
                try:
                    answer = await client.get(f"http://127.0.0.1:{member.port}/readyz")
                    if answer.status_code == 200:
                        self.restarts_s.append(time.monotonic() - killed_at)
                        member.up = True
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)

    def _incident(self, kind: str, what: str) -> None:
        self.incidents.append(drill_lateness.Incident(datetime.now(UTC), kind, what))

    async def _pg_outage(self) -> None:
        await asyncio.sleep(self.pg_outage_after_s)
        log(f"PostgreSQL: immediate stop for {PG_OUTAGE_S:.0f} s")
        await asyncio.to_thread(devstack.crash_postgres, self.stack.pg)
        down_at = time.monotonic()
        self._incident("postgres", f"PostgreSQL down {PG_OUTAGE_S:.0f} s")
        await asyncio.sleep(PG_OUTAGE_S)
        await asyncio.to_thread(self.stack.pg.start)  # crash recovery: until it accepts again
        self.pg_outage_s = time.monotonic() - down_at
        self._incident("postgres", "PostgreSQL up again")
        log(f"PostgreSQL: up again, {self.pg_outage_s:.1f} s after the stop (with crash recovery)")


# --- counting ----------------------------------------------------------------------------


def caught_mail(directory: Path) -> list[tuple[str, datetime]]:
    """(recipient, received at) for every mail the catcher accepted."""
    index = directory / "index.jsonl"
    if not index.exists():
        return []
    caught: list[tuple[str, datetime]] = []
    for line in index.read_text().splitlines():
        summary = json.loads(line)
        received = datetime.fromisoformat(summary["received_at"])
        caught.extend((to.lower(), received) for to in summary["to"])
    return caught


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record on the topic, from the beginning to the end it has now."""
    return [record.value for record in await read_to_end(bootstrap, topic)]


async def results_by_status(bootstrap: str) -> dict[str, set[str]]:
    """engagement.results: which recipients were reported sent, failed, uncertain, ..."""
    by_status: dict[str, set[str]] = {}
    for value in await read_topic(bootstrap, ENGAGEMENT_RESULTS):
        data = json.loads(value)["data"]
        by_status.setdefault(str(data["status"]), set()).add(str(data.get("email", "")).lower())
    return by_status


async def dead_letters(bootstrap: str) -> dict[str, int]:
    counts = {dlq(t): len(await read_topic(bootstrap, dlq(t))) for t in ALL_TOPICS}
    return {topic: n for topic, n in counts.items() if n}


async def until_quiet(stack: Stack, expected: set[str], quiet_s: float, cap_s: float) -> None:
    """Until every customer is accounted for (then SETTLE_S more), or nothing moves for quiet_s."""
    deadline = time.monotonic() + cap_s
    last, changed_at = (-1, -1), time.monotonic()
    while time.monotonic() < deadline:
        mail = caught_mail(stack.mail_dir)
        results = await results_by_status(stack.bootstrap)
        seen = (len(mail), sum(len(v) for v in results.values()))
        if seen != last:
            last, changed_at = seen, time.monotonic()
        accounted = {to for to, _ in mail} | results.get("uncertain", set())
        idle_s = time.monotonic() - changed_at
        if (expected <= accounted and idle_s >= SETTLE_S) or idle_s >= quiet_s:
            return
        await asyncio.sleep(1.0)
    log(f"still not quiet after {cap_s:.0f} s; counting anyway")


@dataclass
class Outcome:
    checkouts: list[Checkout]
    mail: list[tuple[str, datetime]]
    results: dict[str, set[str]]

    @property
    def mailed(self) -> Counter[str]:
        expected = {c.email for c in self.checkouts}
        return Counter(to for to, _ in self.mail if to in expected)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.mailed.values())

    @property
    def uncertain(self) -> set[str]:
        return self.results.get("uncertain", set()) - set(self.mailed)

    @property
    def lost(self) -> list[Checkout]:
        reached = set(self.mailed) | self.uncertain
        return [c for c in self.checkouts if c.email not in reached]

    def lateness_s(self) -> list[float]:
        first: dict[str, datetime] = {}
        for to, received in self.mail:
            first[to] = min(received, first.get(to, received))
        due = {c.email: c.due_at for c in self.checkouts}
        return sorted((first[e] - due[e]).total_seconds() for e in first if e in due)


def write_timeline(outcome: Outcome, path: Path) -> None:
    """One line per customer: when the cart was left, acknowledged, due, and first mailed."""
    first: dict[str, datetime] = {}
    for to, received in outcome.mail:
        first[to] = min(received, first.get(to, received))
    lines = ["email,updated_at,acknowledged_at,due_at,mailed_at,lateness_s"]
    for c in outcome.checkouts:
        mailed = first.get(c.email)
        late = "" if mailed is None else f"{(mailed - c.due_at).total_seconds():.2f}"
        acked = c.acknowledged_at.isoformat() if c.acknowledged_at else ""
        stamps = [c.updated_at.isoformat(), acked, c.due_at.isoformat()]
        lines.append(",".join([c.email, *stamps, mailed.isoformat() if mailed else "", late]))
    path.write_text("\n".join(lines) + "\n")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def where_lost(pg: devstack.Postgres, lost: Iterable[Checkout]) -> dict[str, str]:
    """For each lost customer, the first stage of the pipeline that has no trace of it."""
    checkouts = list(lost)
    keys = "ARRAY[" + ",".join(f"'{c.customer_key}'" for c in checkouts) + "]::text[]"
    traces = {
        "ingest": "SELECT customer_key, '' FROM ingest.customers WHERE customer_key",
        "enrolled": "SELECT customer_key, status || ' at step ' || step_index "
        "FROM scheduler.enrollments WHERE customer_key",
        "timer": "SELECT e.customer_key, t.due_at FROM scheduler.timers t "
        "JOIN scheduler.enrollments e ON e.id = t.enrollment_id WHERE e.customer_key",
        "requested": "SELECT e.customer_key, r.requested_at FROM scheduler.message_requests r "
        "JOIN scheduler.enrollments e ON e.id = r.enrollment_id WHERE e.customer_key",
        "outbox": "SELECT key, '' FROM scheduler.outbox WHERE key",
        "message": "SELECT customer_key, row_to_json(m) FROM dispatcher.messages m "
        "WHERE customer_key",
    }
    keys = ",".join(f"'{c.customer_key}'" for c in checkouts)
    found = {stage: _pairs(pg, f"{sql} IN ({keys})") for stage, sql in traces.items()}
    return {c.email: _stage(c, found) for c in checkouts}


def _pairs(pg: devstack.Postgres, select_key_value: str) -> dict[str, str]:
    """{key: value} from a `SELECT key, value ...` (values as text)."""
    sql = select_key_value.replace("SELECT ", "SELECT concat_ws('|', ", 1).replace(
        " FROM ", ") FROM ", 1
    )
    pairs = (line.split("|", 1) for line in pg.psql(sql, "rebound").splitlines() if line)
    return {key: value for key, value in pairs}


def _stage(checkout: Checkout, found: dict[str, dict[str, str]]) -> str:
    key = checkout.customer_key
    if checkout.acknowledged_at is None:
        return "ingest api: the webhook was never acknowledged"
    if key not in found["ingest"]:
        return "ingest consumer: the checkout never reached the customer facts"
    if key not in found["enrolled"]:
        return "scheduler: the activity never enrolled the customer"
    if key in found["timer"]:
        return f"scheduler: the timer is still waiting (due {found['timer'][key]})"
    if key not in found["requested"]:
        return f"scheduler: no request fired (enrolment {found['enrolled'][key]})"
    if key in found["outbox"]:
        return "scheduler: the request is still in the outbox"
    if key not in found["message"]:
        return "dispatcher: the request was never recorded"
    message = json.loads(found["message"][key])
    return (
        f"dispatcher: {message.get('status')} after {message.get('attempts')} attempt(s), "
        f"{str(message.get('reason'))[:60]}"
    )


def traces(pg: devstack.Postgres, outcome: Outcome) -> list[drill_lateness.Trace]:
    """Each mailed reminder's moments: acknowledged (seen here), ingested, enrolled, fired,
    first claimed (the database), mailed (the catcher)."""
    ingested = _pairs(
        pg, "SELECT event_id, date_part('epoch', processed_at) FROM ingest.processed_events"
    )
    rows = pg.psql(
        "SELECT concat_ws('|', e.customer_key, extract(epoch FROM e.entered_at), "
        "extract(epoch FROM r.requested_at), coalesce(extract(epoch FROM m.created_at)::text, '')) "
        "FROM scheduler.enrollments e "
        "JOIN scheduler.message_requests r ON r.enrollment_id = e.id "
        "LEFT JOIN dispatcher.messages m ON m.request_key = r.request_key",
        "rebound",
    )
    moments = {line.split("|")[0]: line.split("|")[1:] for line in rows.splitlines() if line}
    first: dict[str, datetime] = {}
    for to, received in outcome.mail:
        first[to] = min(received, first.get(to, received))
    found: list[drill_lateness.Trace] = []
    for c in outcome.checkouts:
        row, mailed = moments.get(c.customer_key, ["", "", ""]), first.get(c.email)
        if mailed is None:
            continue
        enrolled, fired, claimed = (drill_lateness.epoch(v) for v in row)
        event_id = stable_event_id("shopify", SHOP_DOMAIN, c.webhook_id)
        found.append(
            drill_lateness.Trace(
                c.email,
                c.due_at,
                c.updated_at,
                c.acknowledged_at,
                drill_lateness.epoch(ingested.get(event_id, "")),
                enrolled,
                fired,
                claimed,
                mailed,
            )
        )
    return found


def report(
    outcome: Outcome, stack: Stack, dlq: dict[str, int], elapsed_s: float, chaos: Chaos
) -> bool:
    """Print the figures; True when nothing was lost and nothing duplicated."""
    checkouts = outcome.checkouts
    acknowledged = sum(c.acknowledged_at is not None for c in checkouts)
    retried = sum(c.attempts > 1 for c in checkouts)
    lateness = outcome.lateness_s()
    lost = outcome.lost
    kills = ", ".join(f"{m.name} {m.kills}" for m in stack.members if m.kills) or "none"
    terms = ", ".join(f"{m.name} {m.terms}" for m in stack.members if m.terms) or "none"
    forced = sum(m.forced for m in stack.members)
    print(f"\nDrill over after {elapsed_s:.0f} s (logs, mail, timeline.csv in {DRILL})")
    print(f"  checkouts posted        {len(checkouts)}")
    print(f"  webhooks acknowledged   {acknowledged}  ({retried} needed a retry)")
    print(f"  customers mailed        {len(outcome.mailed)}")
    print(f"  duplicates              {outcome.duplicates}")
    print(f"  lost                    {len(lost)}")
    print(f"  uncertain (reported)    {len(outcome.uncertain)}")
    failed = outcome.results.get("failed", set())
    delivered = len(failed & set(outcome.mailed))
    print(f"  reported failed         {len(failed)}  ({delivered} of them were delivered)")
    print(f"  dead letters            {dlq or 'none'}")
    print(f"  kill -9                 {kills}")
    if chaos.sigterm:
        print(f"  SIGTERM                 {terms}  ({forced} still up after {TERM_GRACE_S:.0f} s)")
        for service in SERVICES:
            exits = sorted(e for m in stack.members if m.service == service for e in m.exits_s)
            if exits:
                print(
                    f"    {service:<10} SIGTERM to exit  p50 {percentile(exits, 0.5):.1f} s, "
                    f"max {exits[-1]:.1f} s"
                )
    print(
        f"  reminder lateness       p50 {percentile(lateness, 0.50):.1f} s, "
        f"p99 {percentile(lateness, 0.99):.1f} s, max {max(lateness, default=float('nan')):.1f} s"
        f" (target p99 < {LATENESS_TARGET_P99_S:.0f} s)"
    )
    if chaos.pg_outage_s is not None:
        print(
            f"  PostgreSQL away         {chaos.pg_outage_s:.1f} s "
            f"(stopped {PG_OUTAGE_S:.0f} s, then its crash recovery)"
        )
    if chaos.restarts_s:
        print(
            f"  {'SIGTERM' if chaos.sigterm else 'kill -9'} to ready again  "
            f"p50 {percentile(sorted(chaos.restarts_s), 0.5):.1f} s, "
            f"max {max(chaos.restarts_s):.1f} s"
        )
    for line in drill_lateness.report(traces(stack.pg, outcome), chaos.incidents):
        print(line)
    if lost:
        stages = where_lost(stack.pg, lost)
        print("  where the lost ones stopped:")
        for stage, n in Counter(stages.values()).most_common():
            print(f"    {n:5d}  {stage}")
        for checkout in lost[:10]:
            print(f"    {checkout.email}  left {checkout.updated_at:%H:%M:%S}")
    for email, n in outcome.mailed.items():
        if n > 1:
            print(f"  duplicate: {email} got {n} mails")
    return not lost and outcome.duplicates == 0 and acknowledged == len(checkouts)


# --- the run -----------------------------------------------------------------------------


async def drill(args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    started = time.monotonic()
    settings = {}
    if args.session_timeout_ms:
        settings["KAFKA_SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
    stack = await start_stack(settings)
    try:
        victims = "any process" if args.kill_any else "never a service's last instance up"
        log(
            f"stack up: 2 x {', '.join(SERVICES)}; broker {stack.bootstrap}; seed {args.seed}; "
            f"session timeout {args.session_timeout_ms or 'default'} ms; kills: {victims}"
            f"{' (SIGTERM, as a deploy)' if args.sigterm else ''}"
        )
        stop_chaos = asyncio.Event()
        chaos = Chaos(
            stack,
            rng,
            args.kill_every,
            args.send_s * 0.4,
            kill_any=args.kill_any,
            sigterm=args.sigterm,
        )
        chaos_task = None if args.no_chaos else asyncio.create_task(chaos.run(stop_chaos))
        checkouts = await send_checkouts(stack.ingest_urls(), args.checkouts, args.send_s)
        await asyncio.sleep(REMINDER_DELAY_S + 5.0)  # the last reminders fall due under chaos
        stop_chaos.set()
        if chaos_task is not None:
            await chaos_task
        await asyncio.gather(*(until_ready(m) for m in stack.members))
        log("every instance up, no more chaos; waiting until quiet")
        expected = {c.email for c in checkouts}
        await until_quiet(stack, expected, args.quiet_s, cap_s=600.0)
        mail = caught_mail(stack.mail_dir)
        results = await results_by_status(stack.bootstrap)
        dlq = await dead_letters(stack.bootstrap)
        outcome = Outcome(checkouts, mail, results)
        write_timeline(outcome, DRILL / "timeline.csv")
        return report(outcome, stack, dlq, time.monotonic() - started, chaos)
    finally:
        stack.stop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", type=int, default=1000, help="distinct customers")
    parser.add_argument("--send-s", type=float, default=60.0, help="spread the checkouts over")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=None, help="which processes get killed")
    parser.add_argument("--no-chaos", action="store_true", help="no kills, no outage")
    parser.add_argument(
        "--sigterm",
        action="store_true",
        help="stop processes as a rolling deploy does (SIGTERM, then SIGKILL after 30 s)",
    )
    parser.add_argument(
        "--kill-any",
        action="store_true",
        help="also kill a service's last instance up (both down until a restart)",
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=SESSION_TIMEOUT_MS,
        help="the services' KAFKA_SESSION_TIMEOUT_MS (default %(default)s; 0: the services' own)",
    )
    parser.add_argument("--quiet-s", type=float, default=30.0, help="no change this long: done")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args(sys.argv[1:])
    signal.signal(signal.SIGTERM, _interrupt)
    ok = asyncio.run(drill(args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
