"""A batch of message requests, start to finish: decide, claim, send, record, publish.

Per batch: one statement reads what is already known, one claims the rest (suppressed and
unbuildable requests are recorded final in the same statement), the mails go out over the
pooled SMTP connections, each group of them is marked 'data' in one statement just before
their DATA commands, one statement records every outcome, and the results are published
together. A crash before DATA leaves a row 'claimed' (sent after the restart), a crash after
it leaves it 'data' (reported uncertain, never resent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from services.dispatcher.adapters.data_gate import DataGate
from services.dispatcher.adapters.mailer import ClaimLost, Envelope, SmtpConnection, SmtpPool
from services.dispatcher.adapters.mime import Mailbox, MailParts, UnsendableMessage, build
from services.dispatcher.adapters.repository import MessageRepository
from services.dispatcher.adapters.results import ResultPublisher
from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.domain.content import message_id, render_context
from services.dispatcher.domain.decisions import (
    UNCERTAIN_REASON,
    Next,
    Seen,
    SmtpFailure,
    after_failure,
    classify,
    failure_reason,
    on_seen_before,
    suppression_reason,
)
from services.dispatcher.domain.records import MessageRecord, Status
from shared import metrics
from shared.clock import Clock
from shared.errors import Transient
from shared.events import InvalidEvent, MessageRequest
from shared.logging import get_logger
from shared.retry import retry_forever

SERVICE = "dispatcher"
log = get_logger(__name__)


@dataclass(frozen=True)
class SendPolicy:
    mail_from: str
    max_attempts: int
    retry_initial_s: float
    retry_max_s: float


@dataclass
class Job:
    """One mail of this batch on its way through SMTP; `record` ends up final or released."""

    record: MessageRecord
    envelope: Envelope
    tries: int = 0  # SMTP attempts in this batch


@dataclass
class BatchOutcome:
    """What became of a batch: records to publish, requests that were not mail (dead-letter
    them too), and whether the relay or the database stopped it (retry the batch later)."""

    published: list[MessageRecord] = field(default_factory=list)
    unbuildable: dict[str, str] = field(default_factory=dict)  # request key -> reason
    relay_down: str | None = None
    database_down: str | None = None


@dataclass
class _Sending:
    """Shared state of the connections working on one batch."""

    queue: deque[Job]
    gate: DataGate
    done: list[Job] = field(default_factory=list)
    relay_down: str | None = None
    database_down: str | None = None


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
    ) -> None:
        self._repo = repository
        self._renderer = renderer
        self._pool = pool
        self._results = results
        self._clock = clock
        self._policy = policy
        self._sender = Mailbox.parse(policy.mail_from)
        self._sender_header = self._sender.header("From")

    async def handle(self, requests: list[MessageRequest]) -> BatchOutcome:
        """Every request ends in a published result, except those the relay or the database
        kept from being decided: then `relay_down` / `database_down` say to retry the batch."""
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
        jobs = await self._claim(fresh, claim_id, now, outcome)
        claimed = time.perf_counter()
        await self._send(jobs, claim_id, outcome)
        sent = time.perf_counter()
        await self._results.publish(outcome.published)
        log.info(
            "batch_dispatched",
            requests=len(requests),
            mails=len(jobs),
            results=len(outcome.published),
            claim_ms=round(1000 * (claimed - started)),
            smtp_ms=round(1000 * (sent - claimed)),
            publish_ms=round(1000 * (time.perf_counter() - sent)),
        )
        return outcome

    async def _mark_uncertain(self, keys: list[str], now: datetime) -> list[MessageRecord]:
        records = await self._repo.mark_uncertain(keys, UNCERTAIN_REASON, now)
        for record in records:
            log.warning("send_interrupted_during_data", request_key=record.request_key)
            metrics.MESSAGES_SKIPPED.labels(SERVICE, "uncertain").inc()
        return records

    async def _claim(
        self, requests: list[MessageRequest], claim_id: str, now: datetime, outcome: BatchOutcome
    ) -> list[Job]:
        prepared = [self._prepare(request, now) for request in requests]
        owned = await self._repo.claim([record for record, _ in prepared], claim_id, now)
        jobs: list[Job] = []
        for record, envelope in prepared:
            attempts = owned.get(record.request_key)
            if attempts is None:
                log.info("claimed_by_another_dispatcher", request_key=record.request_key)
            elif envelope is None:
                self._count_skipped(record)
                outcome.published.append(record)
                if record.status == "failed" and record.reason is not None:
                    outcome.unbuildable[record.request_key] = record.reason
            else:
                jobs.append(Job(replace(record, attempts=attempts), envelope))
        return jobs

    def _prepare(
        self, request: MessageRequest, now: datetime
    ) -> tuple[MessageRecord, Envelope | None]:
        """The record to claim and the mail to send; a suppressed or unbuildable request gets
        its final record and no mail."""
        reason = suppression_reason(request.consent_required, request.marketing_consent)
        if reason is not None:
            return _new_record(request, request.subject, "suppressed", now, reason), None
        try:
            rendered = self._renderer.render(
                request.template, request.subject, render_context(request)
            )
            recipient = request.recipient
            content = build(
                MailParts(
                    sender=self._sender,
                    to_name=" ".join(filter(None, (recipient.first_name, recipient.last_name))),
                    to_address=recipient.email,
                    subject=rendered.subject,
                    message_id=message_id(request.request_key, self._policy.mail_from),
                    date=now,
                    text=rendered.text,
                    html=rendered.html,
                ),
                self._sender_header,
            )
        except InvalidEvent as exc:
            return _new_record(request, request.subject, "failed", now, str(exc)), None
        except UnsendableMessage as exc:
            reason = f"cannot build the e-mail: {exc}"
            return _new_record(request, request.subject, "failed", now, reason), None
        envelope = Envelope(self._sender.address, recipient.email, content)
        return _new_record(request, rendered.subject, "claimed", now), envelope

    def _count_skipped(self, record: MessageRecord) -> None:
        reason = record.reason if record.status == "suppressed" else "unbuildable"
        metrics.MESSAGES_SKIPPED.labels(SERVICE, reason or record.status).inc()
        log.info("message_not_sent", request_key=record.request_key, status=record.status)

    # --- SMTP -----------------------------------------------------------------------------

    async def _send(self, jobs: list[Job], claim_id: str, outcome: BatchOutcome) -> None:
        if not jobs:
            return
        gate = DataGate(lambda keys: self._repo.mark_data(keys, claim_id, self._clock.now()))
        state = _Sending(deque(jobs), gate)
        connections = self._pool.connections[: len(jobs)]
        try:
            results = await asyncio.gather(
                *(self._work(c, state) for c in connections), return_exceptions=True
            )
        finally:
            gate.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for job in state.queue:  # not sent: the relay or the database stopped the batch
            state.done.append(self._finished(job, "claimed", None))
        outcome.published += await self._record(state.done, claim_id)
        outcome.relay_down, outcome.database_down = state.relay_down, state.database_down
        log.info("batch_sent", marks=gate.statements, connections=len(connections))

    async def _work(self, connection: SmtpConnection, state: _Sending) -> None:
        """Take mail after mail until the batch is done or cannot go on."""
        while state.queue and state.relay_down is None and state.database_down is None:
            job = state.queue.popleft()
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
                continue
            if failure is None:
                metrics.MAILS_SENT.labels(SERVICE).inc()
                state.done.append(self._finished(job, "sent", None))
                continue
            self._after_failure(job, failure, state)
            await connection.pause()

    def _after_failure(self, job: Job, failure: SmtpFailure, state: _Sending) -> None:
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
        mid = message_id(record.request_key, self._policy.mail_from) if status == "sent" else None
        final = replace(
            record,
            status=status,
            reason=reason,
            smtp_message_id=mid,
            attempts=record.attempts + job.tries - 1,
        )
        return replace(job, record=final)

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
