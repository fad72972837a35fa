"""A batch of message requests, start to finish: decide, claim, send, record, publish.

Per batch: one statement reads what is already known; the rest is claimed in parts of
CLAIM_PART requests, one statement each (suppressed and unbuildable requests are recorded
final in the same statement), and the pooled SMTP connections start on the first part while
the next ones are rendered and claimed. Each group of mails is marked 'data' in one statement
just before their DATA commands, one statement records every outcome, and the results are
published together. A crash before DATA leaves a row 'claimed' (sent after the restart), a
crash after it leaves it 'data' (reported uncertain, never resent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import formataddr
from functools import partial
from typing import Protocol

from services.dispatcher.adapters.data_gate import DataGate
from services.dispatcher.adapters.dkim import DkimKey, dkim_sign
from services.dispatcher.adapters.mailer import ClaimLost, Envelope, SmtpConnection, SmtpPool
from services.dispatcher.adapters.mime import Mailbox, MailParts, UnsendableMessage, build
from services.dispatcher.adapters.repository import MessageRepository
from services.dispatcher.adapters.results import ResultPublisher
from services.dispatcher.adapters.suppressions import HARD_BOUNCE, SuppressionRepository
from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.coupons import CouponDesk, Issued
from services.dispatcher.domain.content import (
    Extras,
    RenderedMessage,
    ShopView,
    message_id,
    render_context,
)
from services.dispatcher.domain.decisions import (
    UNCERTAIN_REASON,
    Next,
    Seen,
    SmtpFailure,
    after_failure,
    classify,
    failure_reason,
    is_hard_bounce,
    on_seen_before,
    suppression_reason,
)
from services.dispatcher.domain.offers import perk_terms, perk_view
from services.dispatcher.domain.records import MessageRecord, Status
from services.dispatcher.domain.tracking import ShopMail, prepare
from shared import metrics
from shared.clock import Clock
from shared.errors import Transient
from shared.events import (
    EMAIL_BOUNCED,
    CloudEvent,
    EmailBounced,
    InvalidEvent,
    MessageRequest,
    make_event,
    stable_event_id,
)
from shared.logging import get_logger
from shared.recommendations import RecommendedProduct
from shared.retry import retry_forever
from shared.tracking import MessageRef, TokenSigner

SERVICE = "dispatcher"
# Requests rendered and claimed per statement. Small enough that SMTP starts soon and the
# next part is claimed while this one is sent; large enough to keep statements few.
CLAIM_PART = 128
log = get_logger(__name__)


@dataclass(frozen=True)
class SendPolicy:
    mail_from: str
    max_attempts: int
    retry_initial_s: float
    retry_max_s: float


@dataclass(frozen=True)
class ShopIdentity:
    """A configured shop: its mail identity and DKIM key (None: not signed)."""

    mail: ShopMail
    dkim: DkimKey | None


class BouncePublisher(Protocol):
    async def publish_bounces(self, events: list[tuple[str, CloudEvent]]) -> None: ...


class Barrier(Protocol):
    async def wait(self) -> None:
        """Return once the suppressions table holds every unsubscribe already on the topic."""
        ...


@dataclass(frozen=True)
class Engagement:
    """Tracking and suppression; without shops configured, mail goes out as before."""

    shops: Mapping[str, ShopIdentity]
    signer: TokenSigner | None
    suppressions: SuppressionRepository
    bounces: BouncePublisher
    barrier: Barrier


class ProductSource(Protocol):
    """Recommended products per customer key (ingest's read API); a key may be missing."""

    async def for_customers(
        self, customer_keys: list[str]
    ) -> Mapping[str, list[RecommendedProduct]]: ...


class NoProducts:
    """No recommendation source configured: mail that shows products shows the shop link."""

    async def for_customers(
        self, customer_keys: list[str]
    ) -> Mapping[str, list[RecommendedProduct]]:
        return {}


@dataclass(frozen=True)
class Content:
    """What mail shows beyond the request: each shop's name, link and currency; products."""

    shops: Mapping[str, ShopView] = field(default_factory=dict)
    products: ProductSource = field(default_factory=NoProducts)


@dataclass
class Job:
    """One mail of this batch on its way through SMTP; `record` ends up final or released."""

    record: MessageRecord
    envelope: Envelope
    message_id: str  # the Message-ID header it carries, recorded once it is sent
    tries: int = 0  # SMTP attempts in this batch


@dataclass
class BatchOutcome:
    """What became of a batch: records to publish, requests that were not mail (dead-letter
    them too), and whether the relay or the database stopped it (retry the batch later)."""

    published: list[MessageRecord] = field(default_factory=list)
    unbuildable: dict[str, str] = field(default_factory=dict)  # request key -> reason
    relay_down: str | None = None
    database_down: str | None = None
    error: Exception | None = None  # a later part's claim failed: raise it after the rest
    stopping: bool = False  # the service is stopping: mail was left for the next instance


@dataclass
class _Sending:
    """Shared state of the connections working on one batch, and of the task claiming it."""

    queue: deque[Job]
    gate: DataGate
    done: list[Job] = field(default_factory=list)
    bounced: list[tuple[Job, SmtpFailure]] = field(default_factory=list)
    relay_down: str | None = None
    database_down: str | None = None
    error: Exception | None = None
    claimed_all: bool = False  # no more jobs will be added
    left_unclaimed: bool = False  # claiming stopped before the batch's last part
    draining: bool = False  # the service is stopping: no mail starts any more
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # jobs added, or stopping
    mails: int = 0

    @property
    def stopped(self) -> bool:
        return (
            self.relay_down is not None
            or self.database_down is not None
            or self.error is not None
            or self.draining
        )

    def add(self, jobs: list[Job]) -> None:
        self.queue.extend(jobs)
        self.mails += len(jobs)
        self.arrived.set()

    def wake(self) -> None:
        self.arrived.set()


class Dispatcher:
    def __init__(
        self,
        *,
        repository: MessageRepository,
        renderer: TemplateRenderer,
        pool: SmtpPool,
        results: ResultPublisher,
        clock: Clock,
        policy: SendPolicy,
        engagement: Engagement,
        coupons: CouponDesk,
        content: Content | None = None,
    ) -> None:
        self._repo = repository
        self._sources = content or Content()
        self._renderer = renderer
        self._pool = pool
        self._results = results
        self._clock = clock
        self._policy = policy
        self._engagement = engagement
        self._coupons = coupons
        self._sender = Mailbox.parse(policy.mail_from)
        self._senders: dict[str, tuple[str, Mailbox, str]] = {}  # shop -> from, mailbox, header
        self._draining = False
        self._sending: _Sending | None = None  # the batch in hand
        self._idle = asyncio.Event()
        self._idle.set()

    def drain(self) -> None:
        """The service is stopping: no mail starts from now on. The transactions already at
        the relay end normally (a mail cut off during DATA could only be reported uncertain);
        the batch in hand records and publishes what was sent and leaves the rest claimed,
        for the next instance, with `stopping` set so that the batch is not committed."""
        self._draining = True
        if self._sending is not None:
            self._sending.draining = True
            self._sending.wake()

    async def idle(self) -> None:
        """Returns when no batch is in hand."""
        await self._idle.wait()

    async def handle(self, requests: list[MessageRequest]) -> BatchOutcome:
        """Every request ends in a published result, except those the relay or the database
        kept from being decided: then `relay_down` / `database_down` say to retry the batch
        (and `stopping`: to leave it to the next instance)."""
        if self._draining:
            return BatchOutcome(stopping=True)
        self._idle.clear()
        try:
            return await self._handle(requests)
        finally:
            self._sending = None
            self._idle.set()

    async def _handle(self, requests: list[MessageRequest]) -> BatchOutcome:
        outcome = BatchOutcome()
        now = self._clock.now()
        started = time.perf_counter()
        known = await self._repo.known([r.request_key for r in requests])
        fresh: list[MessageRequest] = []
        uncertain: list[str] = []
        for request in requests:
            record = known.get(request.request_key)
            if record is None or on_seen_before(record) is Seen.SEND:
                fresh.append(request)
            elif on_seen_before(record) is Seen.MARK_UNCERTAIN:
                uncertain.append(request.request_key)
            else:
                outcome.published.append(record)
        outcome.published += await self._mark_uncertain(uncertain, now)
        claim_id = uuid.uuid4().hex
        gate = DataGate(lambda keys: self._repo.mark_data(keys, claim_id, self._clock.now()))
        state = _Sending(deque(), gate, draining=self._draining)
        self._sending = state
        known_at = time.perf_counter()
        claiming = asyncio.create_task(self._claim_parts(fresh, claim_id, now, outcome, state))
        try:
            await self._send(state)
        finally:
            gate.close()
            await claiming  # it stops after its current part when the sending stopped
        sent = time.perf_counter()
        await self._settle(state, claim_id, outcome)
        settled = time.perf_counter()
        await self._results.publish(outcome.published)
        log.info(
            "batch_dispatched",
            requests=len(requests),
            mails=state.mails,
            results=len(outcome.published),
            known_ms=round(1000 * (known_at - started)),
            claim_and_smtp_ms=round(1000 * (sent - known_at)),
            record_ms=round(1000 * (settled - sent)),
            publish_ms=round(1000 * (time.perf_counter() - settled)),
        )
        return outcome

    async def _claim_parts(
        self,
        fresh: list[MessageRequest],
        claim_id: str,
        now: datetime,
        outcome: BatchOutcome,
        state: _Sending,
    ) -> None:
        """Claims part after part and hands each one's mail to the connections. A failed
        claim stops the batch; what was sent is still recorded before the error is raised."""
        try:
            for start in range(0, len(fresh), CLAIM_PART):
                if state.stopped:
                    state.left_unclaimed = True
                    break
                part = fresh[start : start + CLAIM_PART]
                state.add(await self._claim(part, claim_id, now, outcome))
        except Exception as exc:
            state.error = exc
        finally:
            state.claimed_all = True
            state.wake()

    async def _mark_uncertain(self, keys: list[str], now: datetime) -> list[MessageRecord]:
        records = await self._repo.mark_uncertain(keys, UNCERTAIN_REASON, now)
        for record in records:
            log.warning("send_interrupted_during_data", request_key=record.request_key)
            metrics.MESSAGES_SKIPPED.labels(SERVICE, "uncertain").inc()
        return records

    async def _claim(
        self, requests: list[MessageRequest], claim_id: str, now: datetime, outcome: BatchOutcome
    ) -> list[Job]:
        suppressed = await self._suppressed(requests)
        offers = await self._coupons.issue(
            [r for r, why in zip(requests, suppressed, strict=True) if why is None], now
        )
        products = await self._products(
            [r for r, why in zip(requests, suppressed, strict=True) if why is None]
        )
        prepared = [
            self._prepare(r, now, why, offers.get(r.request_key), products.get(r.customer_key))
            for r, why in zip(requests, suppressed, strict=True)
        ]
        owned = await self._repo.claim([record for record, _ in prepared], claim_id, now)
        jobs: list[Job] = []
        for record, mail in prepared:
            attempts = owned.get(record.request_key)
            if attempts is None:
                log.info("claimed_by_another_dispatcher", request_key=record.request_key)
            elif mail is None:
                self._count_skipped(record)
                outcome.published.append(record)
                if record.status == "failed" and record.reason is not None:
                    outcome.unbuildable[record.request_key] = record.reason
            else:
                jobs.append(Job(replace(record, attempts=attempts), *mail))
        return jobs

    async def _products(
        self, requests: list[MessageRequest]
    ) -> Mapping[str, list[RecommendedProduct]]:
        """One lookup for the customers whose mail shows products. Without an answer the
        mail goes out without them (it links to the shop) rather than wait."""
        keys = sorted(
            {r.customer_key for r in requests if self._renderer.uses(r.template, "products")}
        )
        if not keys:
            return {}
        try:
            return await self._sources.products.for_customers(keys)
        except Transient as exc:
            metrics.ERRORS.labels(SERVICE, "recommendations").inc()
            log.warning("recommendations_unavailable", customers=len(keys), error=str(exc))
            return {}

    async def _suppressed(self, requests: list[MessageRequest]) -> list[str | None]:
        """Why each request must not be sent (consent, then the suppression list), or None."""
        reasons = [suppression_reason(r.consent_required, r.marketing_consent) for r in requests]
        ask = [i for i, r in enumerate(requests) if reasons[i] is None and r.consent_required]
        if ask:  # an unsubscribe acknowledged before now must be in the table first
            await self._engagement.barrier.wait()
        found = await self._engagement.suppressions.reasons(
            [
                (r.shop_id, r.customer_key, r.recipient.email, r.requested_at)
                for r in (requests[i] for i in ask)
            ]
        )
        for i, reason in zip(ask, found, strict=True):
            reasons[i] = reason
        return reasons

    def _prepare(
        self,
        request: MessageRequest,
        now: datetime,
        suppressed: str | None,
        offer: Issued | None,
        products: list[RecommendedProduct] | None = None,
    ) -> tuple[MessageRecord, tuple[Envelope, str] | None]:
        """The record to claim and the mail to send; a suppressed or unbuildable request, or
        one whose discount code could not be issued, gets its final record and no mail."""
        if suppressed is not None:
            return _new_record(request, request.subject, "suppressed", now, suppressed), None
        if isinstance(offer, str):
            return _new_record(request, request.subject, "failed", now, offer), None
        try:
            shop = self._sources.shops.get(request.shop_id)
            extras = Extras(shop, products or [])
            shown = offer if offer is not None else self._perk(request, shop)
            rendered = self._renderer.render(
                request.template, request.subject, render_context(request, shown, extras)
            )
            content, sender, mid = self._content(request, rendered, now)
        except InvalidEvent as exc:
            return _new_record(request, request.subject, "failed", now, str(exc)), None
        except UnsendableMessage as exc:
            reason = f"cannot build the e-mail: {exc}"
            return _new_record(request, request.subject, "failed", now, reason), None
        envelope = Envelope(sender, request.recipient.email, content)
        return _new_record(request, rendered.subject, "claimed", now), (envelope, mid)

    @staticmethod
    def _perk(request: MessageRequest, shop: ShopView | None) -> object | None:
        """The perk offered (free shipping, gift, early access), ending at request time +
        valid_for; raises InvalidEvent for terms that cannot be shown honestly."""
        terms = perk_terms(request.context.get("offer"))
        if terms is None:
            return None
        return perk_view(terms, request.requested_at, shop.currency if shop else None)

    def _content(
        self, request: MessageRequest, rendered: RenderedMessage, now: datetime
    ) -> tuple[bytes, str, str]:
        """The bytes DATA sends (DKIM-signed when the shop has a key), the envelope sender and
        the Message-ID."""
        mail_from, sender, from_header = self._sender_of(request.shop_id)
        shop = self._engagement.shops.get(request.shop_id)
        signer = self._engagement.signer
        headers: list[tuple[str, str]] = []
        if shop is not None and signer is not None:
            ref = _message_ref(request, now)
            prepared = prepare(rendered, shop.mail, ref, signer.sign)
            rendered, headers = prepared.rendered, prepared.headers
        recipient = request.recipient
        mid = message_id(request.request_key, mail_from)
        content = build(
            MailParts(
                sender=sender,
                to_name=" ".join(filter(None, (recipient.first_name, recipient.last_name))),
                to_address=recipient.email,
                subject=rendered.subject,
                message_id=mid,
                date=now,
                text=rendered.text,
                html=rendered.html,
                headers=tuple(headers),
            ),
            from_header,
        )
        if shop is not None and shop.dkim is not None:
            content = dkim_sign(content, shop.dkim)  # over the exact bytes DATA sends
        return content, sender.address, mid

    def _sender_of(self, shop_id: str) -> tuple[str, Mailbox, str]:
        """(From as configured, its mailbox, the encoded From header), once per shop."""
        known = self._senders.get(shop_id)
        if known is None:
            shop = self._engagement.shops.get(shop_id)
            if shop is not None and self._engagement.signer is not None:
                sender = Mailbox(shop.mail.sender_name, shop.mail.sender_address)
                mail_from = formataddr((sender.name, sender.address))
            else:
                sender, mail_from = self._sender, self._policy.mail_from
            known = self._senders[shop_id] = (mail_from, sender, sender.header("From"))
        return known

    def _count_skipped(self, record: MessageRecord) -> None:
        reason = record.reason if record.status == "suppressed" else "unbuildable"
        metrics.MESSAGES_SKIPPED.labels(SERVICE, reason or record.status).inc()
        log.info("message_not_sent", request_key=record.request_key, status=record.status)

    # --- SMTP -----------------------------------------------------------------------------

    async def _send(self, state: _Sending) -> None:
        """Every connection takes mail as the parts are claimed, until all is sent or the
        relay or the database stopped the batch."""
        results = await asyncio.gather(
            *(self._work(c, state) for c in self._pool.connections), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _settle(self, state: _Sending, claim_id: str, outcome: BatchOutcome) -> None:
        """Record every outcome (mail left unsent is released 'claimed'), then the bounces."""
        for job in state.queue:  # not sent: the relay, the database or a stop ended the batch
            state.done.append(self._finished(job, "claimed", None))
        outcome.stopping = state.draining and bool(state.queue or state.left_unclaimed)
        state.queue.clear()
        outcome.published += await self._record(state.done, claim_id)
        await self._hard_bounces(state.bounced)
        outcome.relay_down, outcome.database_down = state.relay_down, state.database_down
        outcome.error = state.error
        log.info("batch_sent", marks=state.gate.statements, mails=state.mails)

    async def _next_job(self, state: _Sending) -> Job | None:
        """The next mail to send; waits while a part is still being claimed."""
        while not state.stopped:
            if state.queue:
                return state.queue.popleft()
            if state.claimed_all:
                return None
            state.arrived.clear()
            await state.arrived.wait()
        return None

    async def _work(self, connection: SmtpConnection, state: _Sending) -> None:
        """Take mail after mail until the batch is done or cannot go on."""
        while (job := await self._next_job(state)) is not None:
            job.tries += 1
            key = job.record.request_key
            try:
                failure = await connection.send(job.envelope, partial(state.gate.enter, key))
            except ClaimLost:
                log.info("claim_taken_over", request_key=key)
                continue
            except Transient as exc:
                state.database_down = str(exc)
                state.queue.append(job)
                state.wake()
                continue
            if failure is None:
                metrics.MAILS_SENT.labels(SERVICE).inc()
                state.done.append(self._finished(job, "sent", None))
                continue
            self._after_failure(job, failure, state)
            if not state.draining:  # a stop does not wait out a backoff
                await connection.pause()

    def _after_failure(self, job: Job, failure: SmtpFailure, state: _Sending) -> None:
        if is_hard_bounce(failure):
            state.bounced.append((job, failure))
        kind = classify(failure)
        attempts = job.record.attempts + job.tries - 1
        action = after_failure(kind, attempts, self._policy.max_attempts)
        metrics.ERRORS.labels(SERVICE, f"smtp_{kind}").inc()
        log.warning(
            "smtp_failed",
            request_key=job.record.request_key,
            kind=str(kind),
            attempt=attempts,
            action=str(action),
            error=failure.describe(),
        )
        if action is Next.RETRY:
            state.queue.append(job)
        elif action is Next.RELEASE:
            state.relay_down = failure.describe()
            state.queue.append(job)
            state.wake()
        elif action is Next.UNCERTAIN:
            metrics.MESSAGES_SKIPPED.labels(SERVICE, "uncertain").inc()
            reason = failure_reason(kind, failure, attempts)
            state.done.append(self._finished(job, "uncertain", reason))
        elif action is Next.FAIL:
            metrics.MESSAGES_SKIPPED.labels(SERVICE, f"smtp_{kind}").inc()
            reason = failure_reason(kind, failure, attempts)
            state.done.append(self._finished(job, "failed", reason))

    def _finished(self, job: Job, status: Status, reason: str | None) -> Job:
        record = job.record
        final = replace(
            record,
            status=status,
            reason=reason,
            smtp_message_id=job.message_id if status == "sent" else None,
            attempts=record.attempts + job.tries - 1,
        )
        return replace(job, record=final)

    async def _hard_bounces(self, bounced: list[tuple[Job, SmtpFailure]]) -> None:
        """Suppress the addresses for marketing now, and tell the facts (email.events)."""
        if not bounced:
            return
        now = self._clock.now()
        rows = [
            (job.record.shop_id, "address", job.record.email.lower(), HARD_BOUNCE, now)
            for job, _ in bounced
        ]
        await self._engagement.suppressions.add(rows)
        await self._engagement.bounces.publish_bounces(
            [(job.record.customer_key, _bounce_event(job.record, f, now)) for job, f in bounced]
        )

    async def _record(self, done: list[Job], claim_id: str) -> list[MessageRecord]:
        """After SMTP spoke, the outcome is known: wait out a database outage to record it
        rather than leave the rows in 'data', which would later read as a crash."""
        now = self._clock.now()
        records = [replace(job.record, updated_at=now) for job in done]

        async def finish() -> set[str]:
            return await self._repo.finish(records, claim_id, now)

        written = await retry_forever(
            finish,
            what="record message outcomes",
            initial_s=self._policy.retry_initial_s,
            max_s=self._policy.retry_max_s,
            retryable=(Transient,),
        )
        return [r for r in records if r.request_key in written and r.is_final]


def _new_record(
    request: MessageRequest, subject: str, status: Status, now: datetime, reason: str | None = None
) -> MessageRecord:
    return MessageRecord(
        request_key=request.request_key,
        shop_id=request.shop_id,
        customer_key=request.customer_key,
        journey_id=request.journey_id,
        step_id=request.step_id,
        email=request.recipient.email,
        subject=subject,
        status=status,
        reason=reason,
        smtp_message_id=None,
        attempts=0,
        created_at=now,
        updated_at=now,
    )


def _message_ref(request: MessageRequest, now: datetime) -> MessageRef:
    return MessageRef(
        shop_id=request.shop_id,
        customer_key=request.customer_key,
        request_key=request.request_key,
        journey_id=request.journey_id,
        step_id=request.step_id,
        sent_at=now,
    )


def _bounce_event(record: MessageRecord, failure: SmtpFailure, now: datetime) -> CloudEvent:
    bounced = EmailBounced(
        request_key=record.request_key,
        shop_id=record.shop_id,
        customer_key=record.customer_key,
        journey_id=record.journey_id,
        step_id=record.step_id,
        sent_at=now,
        email=record.email.lower(),
        bounced_at=now,
        permanent=True,
        stage="data" if failure.stage == "data" else "recipient",
        smtp_code=failure.code,
        detail=failure.detail[:500],
    )
    return make_event(
        type=EMAIL_BOUNCED,
        source="rebound/dispatcher",
        id=stable_event_id("bounce", record.request_key),
        time=now,
        subject=record.customer_key,
        shop_id=record.shop_id,
        data=bounced,
    )
