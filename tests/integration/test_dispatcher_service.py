"""The dispatcher against a real broker, PostgreSQL and SMTP server: requests in, e-mails out."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import devstack
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from mailcatcher import CaughtMail, MailStore, start_catcher
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text

from services.dispatcher.app import DispatcherService
from services.dispatcher.dispatch import CLAIM_PART
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.shops import ShopMailConfig
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import (
    MESSAGE_FAILED,
    MESSAGE_REQUESTED,
    MESSAGE_SENT,
    MESSAGE_SUPPRESSED,
    MESSAGE_UNCERTAIN,
    CloudEvent,
    MessageRequest,
    decode,
    encode,
    make_event,
    stable_event_id,
)
from shared.kafka import HEADERS, make_producer
from shared.topics import ENGAGEMENT_RESULTS, MESSAGE_REQUESTS, Topics, dlq
from shared.tracking import TrackingKey
from tests.conftest import Infra, eventually

SHOP = "demo.myshopify.com"
CART = {
    "cart_id": "cart-1",
    "lines": [
        {"title": "Linen Shirt", "variant_title": "M / Sand", "quantity": 2, "price": "39.00"},
        {"title": "Canvas Tote", "quantity": 1, "price": "18.50"},
    ],
    "currency": "USD",
    "total_price": "96.50",
    "recovery_url": f"https://{SHOP}/cart/recover?token=abc",
    "updated_at": "2022-01-01T00:00:00Z",
}


def message_request(key: str, **overrides: Any) -> MessageRequest:
    email = overrides.pop("email", f"{key}@example.com")
    fields: dict[str, Any] = {
        "request_key": key,
        "shop_id": SHOP,
        "customer_key": f"{SHOP}:e:{email}",
        "journey_id": "abandoned-cart",
        "journey_version": 1,
        "step_id": "reminder",
        "template": "abandoned_cart_reminder",
        "subject": "{{ recipient.first_name or 'Hello' }}, you left something in your cart",
        "recipient": {"email": email, "first_name": "Ada", "last_name": "Lovelace"},
        "consent_required": True,
        "marketing_consent": "subscribed",
        "context": {"cart": CART},
        "requested_at": datetime.fromisoformat("2022-01-01T03:00Z"),
    }
    fields.update(overrides)
    return MessageRequest.model_validate(fields)


def request_event(request: MessageRequest) -> CloudEvent:
    return make_event(
        type=MESSAGE_REQUESTED,
        source="tests",
        time=request.requested_at,
        id=stable_event_id("request", request.request_key),
        subject=request.customer_key,
        shop_id=request.shop_id,
        data=request,
    )


class Tail:
    """Every record of a topic from the beginning, collected in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for record in self._consumer:
            self.records.append(record)

    def events(self) -> list[CloudEvent]:
        return [decode(r.value) for r in self.records]

    def of(self, request_key: str) -> list[CloudEvent]:
        return [e for e in self.events() if e.data["request_key"] == request_key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


class Harness:
    def __init__(
        self,
        infra: Infra,
        database_url: str,
        topics: Topics,
        clock: ManualClock,
        store: MailStore,
        smtp_port: int,
    ) -> None:
        self.infra, self.database_url, self.topics, self.clock = infra, database_url, topics, clock
        self.store, self.smtp_port = store, smtp_port
        self.producer: AIOKafkaProducer = make_producer(infra.bootstrap, "dispatcher-tests")
        self.results = Tail(infra.bootstrap, topics.name(ENGAGEMENT_RESULTS))
        self.dead_letters = Tail(infra.bootstrap, topics.name(dlq(MESSAGE_REQUESTS)))
        self.engine = make_engine(database_url, pool_size=2)
        self.service: DispatcherService | None = None

    def settings(self, **overrides: Any) -> DispatcherSettings:
        fields: dict[str, Any] = {
            "kafka_bootstrap_servers": self.infra.bootstrap,
            "database_url": self.database_url,
            "topic_prefix": self.topics.prefix,
            "smtp_port": self.smtp_port,
            "smtp_timeout_s": 2.0,
            "smtp_local_hostname": "localhost",
            "retry_initial_s": 0.05,
            "retry_max_s": 0.5,
            "mail_from": "Demo Shop <hi@shop.example>",
        }
        return DispatcherSettings(**(fields | overrides))

    async def start(self, **overrides: Any) -> DispatcherService:
        await self.start_clients()
        return await self.start_service(**overrides)

    async def start_clients(self) -> None:
        """The test's producer and topic readers, without the dispatcher."""
        await self.producer.start()
        await self.results.start()
        await self.dead_letters.start()

    async def start_service(self, **overrides: Any) -> DispatcherService:
        self.service = DispatcherService(self.settings(**overrides), self.clock)
        await self.service.start()
        return self.service

    async def restart(self, **overrides: Any) -> DispatcherService:
        """Stop the service abruptly (its tasks are cancelled wherever they are, nothing is
        committed to the broker) and start a new one, as after a kill -9."""
        assert self.service is not None
        await self.service.stop(grace_s=0)
        self.service = DispatcherService(self.settings(**overrides), self.clock)
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop(grace_s=0)  # a test may leave its relay hanging
        await self.results.stop()
        await self.dead_letters.stop()
        await self.producer.stop()
        await self.engine.dispose()

    async def send(self, request: MessageRequest) -> None:
        await self.producer.send_and_wait(
            self.topics.name(MESSAGE_REQUESTS),
            encode(request_event(request)),
            key=request.customer_key.encode(),
            headers=HEADERS,
        )

    async def send_many(self, requests: list[MessageRequest]) -> None:
        futures = [
            await self.producer.send(
                self.topics.name(MESSAGE_REQUESTS),
                encode(request_event(r)),
                key=r.customer_key.encode(),
                headers=HEADERS,
            )
            for r in requests
        ]
        await asyncio.gather(*futures)

    async def send_raw(self, value: bytes, key: bytes = b"poison") -> None:
        await self.producer.send_and_wait(self.topics.name(MESSAGE_REQUESTS), value, key=key)

    def mails_to(self, email: str) -> list[CaughtMail]:
        return [m for m in self.store.messages if email in m.recipients]

    async def row(self, request_key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM dispatcher.messages WHERE request_key = :k"),
                    {"k": request_key},
                )
            ).first()
        return None if row is None else dict(row._mapping)


@pytest.fixture
async def harness(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, mail: tuple[MailStore, int]
) -> AsyncIterator[Harness]:
    store, port = mail
    harness = Harness(infra, database_url, topics, clock, store, port)
    try:
        yield harness
    finally:
        await harness.stop()


@contextmanager
def relay(store: MailStore) -> Iterator[int]:
    """An SMTP server with the store's behaviour on a free port, for the block; its port."""
    port = devstack.free_port()
    controller = start_catcher(store, port)
    try:
        yield port
    finally:
        controller.stop()


def results_for(harness: Harness, key: str) -> Callable[[], bool]:
    return lambda: len(harness.results.of(key)) >= 1


async def settle() -> None:
    """Give a wrong second e-mail or result a chance to show up before asserting it did not."""
    await asyncio.sleep(0.5)


# --- the happy path -----------------------------------------------------------------------


async def test_a_request_becomes_one_email_a_sent_row_and_a_sent_event(harness: Harness) -> None:
    await harness.start()
    request = message_request("rk-happy", email="ada@example.com")
    await harness.send(request)

    await eventually(lambda: harness.mails_to("ada@example.com"), 30, "the e-mail")
    await eventually(results_for(harness, "rk-happy"), what="message.sent")
    await settle()

    [mail] = harness.mails_to("ada@example.com")
    message = mail.message
    assert message["Subject"] == "Ada, you left something in your cart"
    assert message["From"] == "Demo Shop <hi@shop.example>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message.get_content_type() == "multipart/alternative"
    for part in (mail.part("text/plain"), mail.part("text/html")):
        assert "Linen Shirt" in part and "Canvas Tote" in part
        assert "$78.00" in part and "$18.50" in part
        assert f"https://{SHOP}/cart/recover?token=abc" in part
    assert mail.part("text/plain").startswith("Hi Ada,")

    [event] = harness.results.of("rk-happy")
    assert event.type == MESSAGE_SENT
    assert event.id == stable_event_id("result", "rk-happy")
    assert event.data["status"] == "sent"
    assert event.data["smtp_message_id"] == message["Message-ID"]
    assert harness.results.records[0].key == request.customer_key.encode()

    row = await harness.row("rk-happy")
    assert row is not None
    assert (row["status"], row["attempts"], row["reason"]) == ("sent", 1, None)
    assert row["updated_at"] == harness.clock.now()  # times come from the injected clock


async def test_many_customers_at_once_each_get_exactly_one_email(harness: Harness) -> None:
    await harness.start(smtp_connections=4)
    keys = [f"rk-many-{n}" for n in range(20)]
    for key in keys:
        await harness.send(message_request(key))

    await eventually(lambda: all(harness.results.of(k) for k in keys), 30, "20 results")
    await settle()
    assert sorted(len(harness.mails_to(f"{k}@example.com")) for k in keys) == [1] * 20


async def test_a_batch_of_500_requests_gives_500_mails_each_exactly_once(harness: Harness) -> None:
    await harness.start()
    keys = [f"rk-500-{n}" for n in range(500)]
    await harness.send_many([message_request(key) for key in keys])

    await eventually(lambda: len(harness.results.events()) >= 500, 60, "500 results")
    await settle()
    assert {e.type for e in harness.results.events()} == {MESSAGE_SENT}
    assert sorted(e.data["request_key"] for e in harness.results.events()) == sorted(keys)
    recipients = sorted(r for m in harness.store.messages for r in m.recipients)
    assert recipients == sorted(f"{key}@example.com" for key in keys)


async def test_a_shop_sending_from_its_own_domain_records_the_message_id_its_mail_carries(
    harness: Harness,
) -> None:
    own_domain = ShopMailConfig(
        shop_id=SHOP,
        sender_name="Demo Shop",
        sender_address="hello@mail.demo-shop.example",  # not mail_from's domain
        footer_address="Demo Shop, 1 Main St, Springfield",
        public_base_url="https://t.shop.example",
    )
    keys = [TrackingKey(kid="k1", secret=SecretStr("d" * 40))]
    await harness.start(shops=[own_domain], tracking_keys=keys)
    await harness.send(message_request("rk-own-domain", email="own@example.com"))

    await eventually(results_for(harness, "rk-own-domain"), 30, "message.sent")
    [mail] = harness.mails_to("own@example.com")
    [event] = harness.results.of("rk-own-domain")
    assert mail.message["Message-ID"].endswith("@mail.demo-shop.example>")
    assert event.data["smtp_message_id"] == mail.message["Message-ID"]
    row = await harness.row("rk-own-domain")
    assert row is not None and row["smtp_message_id"] == mail.message["Message-ID"]


async def test_hostile_names_make_well_formed_mail_and_every_request_gets_a_result(
    harness: Harness,
) -> None:
    await harness.start()
    long_name = "Maximiliana" * 182  # 2,002 characters
    await harness.send(
        message_request("rk-long", recipient=recipient("long@example.com", long_name))
    )
    await harness.send(
        message_request(
            "rk-crlf", recipient=recipient("crlf@example.com", "Ada\r\nBcc: all@evil.test")
        )
    )

    await eventually(lambda: harness.mails_to("crlf@example.com"), 30, "the CR/LF mail")
    await eventually(lambda: harness.mails_to("long@example.com"), 30, "the long-name mail")
    await eventually(lambda: len(harness.results.events()) == 2, what="two results")
    assert {e.type for e in harness.results.events()} == {MESSAGE_SENT}
    for mail in harness.store.messages:
        assert max(len(line) for line in mail.raw.split(b"\r\n")) <= 78
        assert mail.message["Bcc"] is None
    [crlf] = harness.mails_to("crlf@example.com")
    assert crlf.recipients == ["crlf@example.com"]
    assert crlf.message["Subject"] == "Ada Bcc: all@evil.test, you left something in your cart"
    [long] = harness.mails_to("long@example.com")
    assert long.message["Subject"].startswith("MaximilianaMaximiliana")
    assert long_name in long.part("text/plain")  # the body keeps the name as given


def recipient(email: str, first_name: str) -> dict[str, str]:
    return {"email": email, "first_name": first_name}


# --- idempotency --------------------------------------------------------------------------


async def test_the_same_request_twice_in_a_row_sends_one_email(harness: Harness) -> None:
    await harness.start()
    request = message_request("rk-twice")
    await harness.send(request)
    await harness.send(request)
    await harness.send(message_request("rk-after"))  # same partition order: after both copies

    await eventually(lambda: harness.mails_to("rk-after@example.com"), 30, "the later mail")
    await settle()
    assert len(harness.mails_to("rk-twice@example.com")) == 1


async def test_a_request_redelivered_after_it_was_sent_only_republishes_the_result(
    harness: Harness,
) -> None:
    await harness.start()
    request = message_request("rk-again")
    await harness.send(request)
    await eventually(results_for(harness, "rk-again"), 30, "the first result")

    await harness.send(request)
    await eventually(lambda: len(harness.results.of("rk-again")) == 2, what="a second result")
    await settle()
    assert len(harness.mails_to("rk-again@example.com")) == 1
    first, second = harness.results.of("rk-again")
    assert first == second  # the same event, harmless to any consumer


async def test_a_dispatcher_killed_after_the_claim_sends_the_mail_after_restart_once(
    harness: Harness,
) -> None:
    silent = await SilentServer.start()  # accepts TCP, never greets: SMTP never gets going
    await harness.start(smtp_port=silent.port, smtp_timeout_s=60.0)
    await harness.send(message_request("rk-claimed"))
    await eventually(lambda: row_status(harness, "rk-claimed", "claimed"), 30, "the claim")
    await eventually(lambda: silent.connections, what="an SMTP connection attempt")

    await harness.restart()  # the real relay now
    await eventually(results_for(harness, "rk-claimed"), 30, "message.sent")
    await settle()
    assert len(harness.mails_to("rk-claimed@example.com")) == 1
    [event] = harness.results.of("rk-claimed")
    assert event.type == MESSAGE_SENT
    row = await harness.row("rk-claimed")
    assert row is not None and row["status"] == "sent"
    silent.close()


async def test_a_dispatcher_killed_during_data_reports_uncertain_and_never_resends(
    harness: Harness,
) -> None:
    hanging = HangingStore()
    with relay(hanging) as port:  # takes the content, never answers it
        await harness.start(smtp_port=port, smtp_timeout_s=60.0)
        await harness.send(message_request("rk-data"))
        await eventually(lambda: hanging.received, 30, "the mail content at the relay")
        row = await harness.row("rk-data")
        assert row is not None and row["status"] == "data"

        await harness.restart()  # the real relay now, which would accept it again
        await eventually(results_for(harness, "rk-data"), 30, "a result")
        await settle()
    [event] = harness.results.of("rk-data")
    assert event.type == MESSAGE_UNCERTAIN
    assert event.data["status"] == "uncertain"
    assert "DATA" in event.data["reason"]
    assert harness.mails_to("rk-data@example.com") == []
    row = await harness.row("rk-data")
    assert row is not None and row["status"] == "uncertain"


async def test_a_stopped_dispatcher_finishes_the_mail_at_the_relay_and_leaves_the_rest(
    harness: Harness,
) -> None:
    """SIGTERM (a deploy, a scale-down): no mail starts any more, the one whose DATA the
    relay holds is answered, recorded sent and published; the rest is sent by the next
    instance, each mail once."""
    held = HeldStore()
    keys = [f"rk-stop-{i}" for i in range(4)]
    with relay(held) as port:
        await harness.start(smtp_port=port, smtp_connections=1)
        await harness.send_many([message_request(k) for k in keys])
        await eventually(lambda: held.held, 30, "a mail's content at the relay")
        [held_to] = held.held
        first = held_to.removesuffix("@example.com")
        assert harness.service is not None
        stopping = asyncio.create_task(harness.service.stop())  # the default grace, 15 s
        await asyncio.sleep(0)  # the stop began: no new mail starts from here
        held.release()
        async with asyncio.timeout(30):
            await stopping

        assert [m.recipients for m in held.messages] == [[held_to]]
        row = await harness.row(first)
        assert row is not None and row["status"] == "sent"
        await eventually(results_for(harness, first), 30, "the held mail's result")
        assert [e.type for e in harness.results.of(first)] == [MESSAGE_SENT]
        for key in set(keys) - {first}:
            assert harness.results.of(key) == []
            row = await harness.row(key)
            assert row is None or row["status"] == "claimed"

        await harness.start_service(smtp_port=port, smtp_connections=1)  # the next instance
        for key in keys:
            await eventually(results_for(harness, key), 30, f"{key}'s result")
        await settle()
    assert sorted(r for m in held.messages for r in m.recipients) == sorted(
        f"{k}@example.com" for k in keys
    )
    for key in keys:  # the stopped batch was not committed: a result may be published again
        events = harness.results.of(key)
        assert {(e.type, e.id) for e in events} == {(MESSAGE_SENT, events[0].id)}


async def test_sigterm_to_a_dispatcher_process_lets_the_mail_at_the_relay_finish(
    harness: Harness, tmp_path: Path
) -> None:
    """The process as an orchestrator stops it: SIGTERM while the relay holds a mail's DATA.
    The process exits 0 once the relay answered, with the mail recorded and published sent."""
    held = HeldStore()
    with relay(held) as smtp_port:
        code = await _sigterm_while_the_relay_holds_a_mail(harness, held, smtp_port, tmp_path)
    assert [m.recipients for m in held.messages] == [["rk-sigterm@example.com"]]
    row = await harness.row("rk-sigterm")
    assert row is not None and row["status"] == "sent"
    assert [e.type for e in harness.results.of("rk-sigterm")] == [MESSAGE_SENT]
    assert code == 0


async def _sigterm_while_the_relay_holds_a_mail(
    harness: Harness, held: HeldStore, smtp_port: int, tmp_path: Path
) -> int:
    """Runs `python -m services.dispatcher run`; SIGTERM once the relay holds the mail's
    DATA, the relay's answer once the HTTP server has stopped. The process's exit code."""
    http_port = devstack.free_port()
    settings = harness.settings(smtp_port=smtp_port, http_port=http_port)
    passed = ["database_url", "kafka_bootstrap_servers", "topic_prefix", "mail_from"]
    passed += ["smtp_port", "smtp_local_hostname", "http_port"]
    env = {**os.environ, "PYTHONPATH": str(devstack.ROOT)} | {
        f"REBOUND_DISPATCHER_{name.upper()}": str(getattr(settings, name)) for name in passed
    }
    log_path = tmp_path / "dispatcher.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.dispatcher", "run", env=env, stdout=out, stderr=out
        )
    try:
        await harness.start_clients()
        await harness.send(message_request("rk-sigterm"))
        await eventually(lambda: held.held, 60, "the mail's content at the relay")
        proc.send_signal(signal.SIGTERM)
        await eventually(lambda: not _answers(http_port), 30, "the HTTP server's end")
        held.release()  # the service is stopping now: the relay answers
        async with asyncio.timeout(30):
            code = await proc.wait()
        await eventually(results_for(harness, "rk-sigterm"), 30, "message.sent")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if code != 0:
        print(log_path.read_text())
    return code


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_a_stop_gives_a_relay_that_never_answers_only_its_grace(
    harness: Harness,
) -> None:
    hanging = HangingStore()
    with relay(hanging) as port:
        await harness.start(smtp_port=port, smtp_timeout_s=60.0)
        await harness.send(message_request("rk-grace"))
        await eventually(lambda: hanging.received, 30, "the mail content at the relay")
        assert harness.service is not None
        async with asyncio.timeout(10):
            await harness.service.stop(grace_s=0.2)

        await harness.start_service()  # the real relay now, which would accept it again
        await eventually(results_for(harness, "rk-grace"), 30, "a result")
        await settle()
    [event] = harness.results.of("rk-grace")
    assert event.type == MESSAGE_UNCERTAIN  # cut off during DATA, as by a kill
    assert harness.mails_to("rk-grace@example.com") == []


async def test_a_row_left_by_an_older_version_mid_send_is_uncertain_not_failed(
    harness: Harness,
) -> None:
    async with harness.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO dispatcher.messages (request_key, shop_id, customer_key, journey_id, "
                "step_id, email, subject, status, attempts, created_at, updated_at) VALUES "
                "('rk-crash', :shop, 'k', 'abandoned-cart', 'reminder', 'rk-crash@example.com', "
                "'hi', 'data', 1, now(), now())"
            ),
            {"shop": SHOP},
        )
    await harness.start()
    await harness.send(message_request("rk-crash"))

    await eventually(results_for(harness, "rk-crash"), 30, "message.uncertain")
    await settle()
    [event] = harness.results.of("rk-crash")
    assert event.type == MESSAGE_UNCERTAIN
    assert harness.mails_to("rk-crash@example.com") == []


class SilentServer:
    """A TCP server that accepts connections and says nothing, like a relay that hung."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self.connections = 0
        self.port: int = server.sockets[0].getsockname()[1]

    @classmethod
    async def start(cls) -> SilentServer:
        holder: list[SilentServer] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            holder[0].connections += 1
            await reader.read()  # until the client gives up

        silent = cls(await asyncio.start_server(accept, "127.0.0.1", 0))
        holder.append(silent)
        return silent

    def close(self) -> None:
        self._server.close()


class HeldStore(MailStore):
    """Receives the whole message after DATA and answers only once released."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []  # recipients of the mail waiting for its answer
        self._released = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.held = list(envelope.rcpt_tos)
        await asyncio.to_thread(self._released.wait, 60)  # the test releases it from its loop
        return await super().handle_DATA(server, session, envelope)

    def release(self) -> None:
        self._released.set()


class HangingStore(MailStore):
    """Receives the whole message after DATA and never answers: the dispatcher waits."""

    received: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received = True
        await asyncio.Event().wait()
        return "250 never said"


async def row_status(harness: Harness, key: str, status: str) -> bool:
    row = await harness.row(key)
    return row is not None and row["status"] == status


# --- consent ------------------------------------------------------------------------------


async def test_no_marketing_consent_means_no_email_and_a_recorded_suppression(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.send(message_request("rk-noconsent", marketing_consent="unsubscribed"))

    await eventually(results_for(harness, "rk-noconsent"), 30, "message.suppressed")
    await settle()
    [event] = harness.results.of("rk-noconsent")
    assert event.type == MESSAGE_SUPPRESSED
    assert event.data["reason"] == "no_marketing_consent"
    assert harness.store.messages == []
    row = await harness.row("rk-noconsent")
    assert row is not None
    assert (row["status"], row["reason"], row["attempts"]) == (
        "suppressed",
        "no_marketing_consent",
        0,
    )


async def test_a_journey_that_needs_no_consent_sends_anyway(harness: Harness) -> None:
    await harness.start()
    await harness.send(
        message_request("rk-transactional", consent_required=False, marketing_consent=None)
    )

    await eventually(lambda: harness.mails_to("rk-transactional@example.com"), 30, "the mail")
    await eventually(results_for(harness, "rk-transactional"), what="message.sent")
    assert harness.results.of("rk-transactional")[0].type == MESSAGE_SENT


# --- SMTP failures ------------------------------------------------------------------------


async def test_a_recipient_refused_by_the_server_fails_once_with_the_reason(
    harness: Harness,
) -> None:
    harness.store.reject_recipients.add("nobody@example.com")
    await harness.start()
    await harness.send(message_request("rk-refused", email="nobody@example.com"))

    await eventually(results_for(harness, "rk-refused"), 30, "message.failed")
    await asyncio.sleep(1.0)  # a retry storm would show up as more attempts or results
    [event] = harness.results.of("rk-refused")
    assert event.type == MESSAGE_FAILED
    assert "550" in event.data["reason"] and "mailbox unavailable" in event.data["reason"]
    assert harness.store.messages == []
    row = await harness.row("rk-refused")
    assert row is not None
    assert (row["status"], row["attempts"]) == ("failed", 1)


async def test_mail_waits_for_an_smtp_server_that_is_down_and_arrives_once_it_is_up(
    harness: Harness,
) -> None:
    port = devstack.free_port()  # nothing listens here yet
    before = unreachable_count()
    await harness.start(smtp_port=port, max_send_attempts=2)
    await harness.send(message_request("rk-down"))
    # Several in-batch attempts and batch retries hit the closed port first.
    await eventually(lambda: unreachable_count() >= before + 5, 30, "failed attempts")
    assert harness.results.of("rk-down") == []

    store = MailStore()
    controller = start_catcher(store, port)
    try:
        await eventually(lambda: store.messages, 30, "the mail after the server came up")
        await eventually(results_for(harness, "rk-down"), what="message.sent")
        await settle()
        assert [m.recipients for m in store.messages] == [["rk-down@example.com"]]
        [event] = harness.results.of("rk-down")
        assert event.type == MESSAGE_SENT
    finally:
        controller.stop()


async def test_the_pool_reconnects_after_the_relay_restarted(harness: Harness) -> None:
    port = devstack.free_port()
    first = MailStore()
    controller = start_catcher(first, port)
    await harness.start(smtp_port=port)
    await harness.send(message_request("rk-before"))
    await eventually(lambda: first.messages, 30, "the mail before the restart")
    controller.stop()  # every pooled connection breaks

    second = MailStore()
    controller = start_catcher(second, port)
    try:
        await harness.send(message_request("rk-after-restart"))
        await eventually(lambda: second.messages, 30, "the mail after the restart")
        await eventually(results_for(harness, "rk-after-restart"), what="message.sent")
        await settle()
    finally:
        controller.stop()
    assert [m.recipients for m in second.messages] == [["rk-after-restart@example.com"]]
    assert [len(first.messages), len(second.messages)] == [1, 1]
    assert harness.results.of("rk-after-restart")[0].type == MESSAGE_SENT


class ThrottlingStore(MailStore):
    """Answers the first MAIL commands with 421 (too many connections), then accepts."""

    refusals: int = 2

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refusals > 0:
            self.refusals -= 1
            return "421 4.7.0 too many connections, slow down"
        envelope.mail_from = address
        return "250 OK"


async def test_a_throttling_relay_is_retried_and_the_mail_goes_once(harness: Harness) -> None:
    store = ThrottlingStore()
    with relay(store) as port:
        await harness.start(smtp_port=port, max_send_attempts=5)
        await harness.send(message_request("rk-throttled"))
        await eventually(results_for(harness, "rk-throttled"), 30, "message.sent")
        await settle()
    assert [m.recipients for m in store.messages] == [["rk-throttled@example.com"]]
    assert harness.results.of("rk-throttled")[0].type == MESSAGE_SENT
    row = await harness.row("rk-throttled")
    assert row is not None and (row["status"], row["attempts"]) == ("sent", 3)


def unreachable_count() -> float:
    labels = {"service": "dispatcher", "kind": "smtp_unreachable"}
    return REGISTRY.get_sample_value("rebound_errors_total", labels) or 0.0


# --- what cannot be processed -------------------------------------------------------------


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_next_is_processed(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.send_raw(b"{not json")
    not_a_request = make_event(
        type="shop.cart.updated.v1",
        source="tests",
        id="e1",
        time=harness.clock.now(),
        subject="k",
        shop_id=SHOP,
        data=message_request("rk-wrongtype"),
    )
    await harness.send_raw(encode(not_a_request))
    await harness.send(message_request("rk-unknown", template="no_such_template"))
    await harness.send(message_request("rk-inject", email="x@example.com\r\nBcc: all@x.test"))
    await harness.send(message_request("rk-next"))

    await eventually(lambda: harness.mails_to("rk-next@example.com"), 30, "the next mail")
    await eventually(lambda: len(harness.dead_letters.records) == 4, what="4 dead letters")
    reasons = sorted(dict(r.headers)["dlq.reason"].decode() for r in harness.dead_letters.records)
    assert reasons[0].startswith("cannot build the e-mail")  # no header injection
    assert reasons[1].startswith("not a CloudEvent")
    assert "unexpected event type" in reasons[2]
    assert "unknown template 'no_such_template'" in reasons[3]
    assert harness.store.messages == harness.mails_to("rk-next@example.com")
    # A request that cannot become a mail still gets an answer: message.failed, with why.
    for key, why in (("rk-unknown", "unknown template"), ("rk-inject", "cannot build")):
        await eventually(results_for(harness, key), what=f"the result of {key}")
        [event] = harness.results.of(key)
        assert event.type == MESSAGE_FAILED and why in event.data["reason"]
        row = await harness.row(key)
        assert row is not None and row["status"] == "failed"


async def test_a_request_the_database_refuses_is_dead_lettered_and_the_next_ones_are_sent(
    harness: Harness,
) -> None:
    await harness.start()
    same_customer = "ada@example.com"  # one customer key: one partition, in this order
    await harness.send(message_request("rk-\u0000nul", email=same_customer))
    await harness.send(message_request("rk-after-1", email=same_customer))
    await harness.send(message_request("rk-after-2", email=same_customer))

    await eventually(lambda: len(harness.mails_to(same_customer)) == 2, 30, "both later mails")
    await eventually(lambda: len(harness.dead_letters.records) == 1, what="one dead letter")
    [dead] = harness.dead_letters.records
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.reason"].startswith("the database refused it: ")
    assert headers["dlq.offset"] == "0"
    assert decode(dead.value).data["request_key"] == "rk-\u0000nul"
    for key in ("rk-after-1", "rk-after-2"):
        row = await harness.row(key)
        assert row is not None and row["status"] == "sent"


async def test_a_claim_refused_part_way_through_a_batch_leaves_no_mail_unrecorded(
    harness: Harness,
) -> None:
    """A batch is claimed in parts while the first ones are already on SMTP. When the database
    refuses a later part, the mail already sent is recorded 'sent' before the batch is retried
    (not left mid-send, which would read as a crash and answer 'uncertain')."""
    customer = f"{SHOP}:c:one-partition"  # one partition, in this order: one batch
    bad = CLAIM_PART + 2
    requests = [
        message_request(
            f"rk-part-{n}",
            email=f"part-{n}@example.com",
            customer_key=customer,
            journey_id="abandoned-cart\u0000" if n == bad else "abandoned-cart",
        )
        for n in range(CLAIM_PART + 12)
    ]
    await harness.start_clients()
    await harness.send_many(requests)
    await harness.start_service()

    good = [r.request_key for n, r in enumerate(requests) if n != bad]
    await eventually(lambda: all(harness.results.of(k) for k in good), 60, "every result")
    await eventually(lambda: len(harness.dead_letters.records) == 1, what="one dead letter")
    await settle()
    [dead] = harness.dead_letters.records
    assert decode(dead.value).data["request_key"] == f"rk-part-{bad}"
    assert {e.type for k in good for e in harness.results.of(k)} == {MESSAGE_SENT}
    recipients = sorted(r for m in harness.store.messages for r in m.recipients)
    assert recipients == sorted(f"part-{n}@example.com" for n in range(len(requests)) if n != bad)


# --- operations ---------------------------------------------------------------------------


async def test_ready_once_database_and_broker_answer_and_metrics_count_mails(
    harness: Harness,
) -> None:
    service = await harness.start()
    await harness.send(message_request("rk-metrics"))
    await eventually(results_for(harness, "rk-metrics"), 30, "message.sent")
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": True, "broker": True}
        metrics = (await client.get("/metrics")).text
    assert 'rebound_mails_sent_total{service="dispatcher"}' in metrics


async def test_one_producer_sender_for_all_loops_so_an_idle_dispatcher_does_not_spin(
    harness: Harness,
) -> None:
    """The requests, suppressions and privacy loops share one producer. Each start() of an
    aiokafka producer adds a sender task over the same buffer, and two of them wake each other
    without end: an idle dispatcher then burns CPU (it was a third of the CPU per mail)."""
    service = await harness.start()
    await harness.send(message_request("rk-one-sender"))
    await eventually(results_for(harness, "rk-one-sender"), 30, "message.sent")
    await settle()  # the other two loops are past their producer start by now

    producer = service._producer
    assert producer is not None
    senders = [
        task
        for task in asyncio.all_tasks()
        if task.get_coro().__qualname__ == "Sender._sender_routine"  # type: ignore[union-attr]
        and task.get_coro().cr_frame.f_locals.get("self") is producer._sender  # type: ignore[union-attr]
    ]
    assert len(senders) == 1
