"""One message request, start to finish: decide, claim, send, record, publish.

The row in dispatcher.messages is claimed (status 'sending', committed) before any SMTP
traffic, so a redelivered request never sends a second e-mail: a final row is republished,
a row a crash left in 'sending' resolves to "not sent again".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Protocol

from services.dispatcher.adapters.dkim import DkimKey
from services.dispatcher.adapters.mailer import SendFailed, SmtpMailer, compose
from services.dispatcher.adapters.repository import TRANSIENT_DB_ERRORS, MessageRepository
from services.dispatcher.adapters.results import ResultPublisher
from services.dispatcher.adapters.suppressions import HARD_BOUNCE, SuppressionRepository
from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.domain.content import (
    RenderedMessage,
    message_id,
    one_line,
    render_context,
)
from services.dispatcher.domain.decisions import (
    INTERRUPTED_REASON,
    FailureKind,
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
from services.dispatcher.domain.records import FinalStatus, MessageRecord, Status
from services.dispatcher.domain.tracking import ShopMail, prepare
from shared import metrics
from shared.clock import Clock
from shared.errors import Unavailable
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
from shared.retry import backoff_s, retry_forever
from shared.tracking import MessageRef, TokenSigner

SERVICE = "dispatcher"
log = get_logger(__name__)


class SmtpUnavailable(Unavailable):
    """The relay could not be reached; the request was released and must be retried later."""


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


@dataclass(frozen=True)
class Engagement:
    """Tracking and suppression; without shops configured, mail goes out as before."""

    shops: Mapping[str, ShopIdentity]
    signer: TokenSigner | None
    suppressions: SuppressionRepository
    bounces: BouncePublisher


class BouncePublisher(Protocol):
    async def publish_bounce(self, key: str, event: CloudEvent) -> None: ...


class Dispatcher:
    def __init__(
        self,
        *,
        repository: MessageRepository,
        renderer: TemplateRenderer,
        mailer: SmtpMailer,
        results: ResultPublisher,
        clock: Clock,
        policy: SendPolicy,
        engagement: Engagement,
    ) -> None:
        self._repo = repository
        self._renderer = renderer
        self._mailer = mailer
        self._results = results
        self._clock = clock
        self._policy = policy
        self._engagement = engagement

    async def handle(self, request: MessageRequest) -> None:
        """Raises InvalidEvent (dead-letter it) or a transient error (retry the batch)."""
        existing = await self._repo.get(request.request_key)
        if existing is not None:
            await self._seen_before(existing)
            return
        reason = suppression_reason(request.consent_required, request.marketing_consent)
        if reason is None and request.consent_required:
            reason = await self._engagement.suppressions.reason(
                request.shop_id, request.customer_key, request.recipient.email
            )
        if reason is not None:
            await self._suppress(request, reason)
            return
        rendered = self._renderer.render(request.template, request.subject, render_context(request))
        message = self._compose(request, rendered)
        if not await self._repo.insert(self._new_record(request, rendered.subject, "sending")):
            log.info("claimed_by_another_consumer", request_key=request.request_key)
            return
        await self._results.publish(await self._deliver(request, message))

    def _compose(self, request: MessageRequest, rendered: RenderedMessage) -> EmailMessage:
        """Built before the claim: a request that cannot become a mail is dead-lettered."""
        recipient = request.recipient
        mail_from, headers = self._policy.mail_from, []
        shop = self._engagement.shops.get(request.shop_id)
        signer = self._engagement.signer
        if shop is not None and signer is not None:
            mail_from = formataddr((shop.mail.sender_name, shop.mail.sender_address))
            prepared = prepare(rendered, shop.mail, self._message_ref(request), signer.sign)
            rendered, headers = prepared.rendered, prepared.headers
        try:
            return compose(
                rendered=rendered,
                mail_from=mail_from,
                headers=headers,
                to_email=recipient.email,
                to_name=one_line(
                    " ".join(filter(None, (recipient.first_name, recipient.last_name)))
                ),
                message_id=message_id(request.request_key, mail_from),
                date=self._clock.now(),
            )
        except ValueError as exc:  # e.g. a header the email package refuses
            raise InvalidEvent(f"cannot build the e-mail: {exc}") from exc

    async def _seen_before(self, record: MessageRecord) -> None:
        if on_seen_before(record) is Seen.MARK_INTERRUPTED:
            log.warning("send_interrupted_not_resent", request_key=record.request_key)
            metrics.MESSAGES_SKIPPED.labels(SERVICE, "interrupted").inc()
            record = await self._repo.finish(
                record.request_key, "failed", INTERRUPTED_REASON, None, self._clock.now()
            )
        await self._results.publish(record)

    async def _suppress(self, request: MessageRequest, reason: str) -> None:
        record = self._new_record(request, request.subject, "suppressed", reason)
        if await self._repo.insert(record):
            metrics.MESSAGES_SKIPPED.labels(SERVICE, reason).inc()
            log.info("message_suppressed", request_key=request.request_key, reason=reason)
            await self._results.publish(record)

    def _message_ref(self, request: MessageRequest) -> MessageRef:
        return MessageRef(
            shop_id=request.shop_id,
            customer_key=request.customer_key,
            request_key=request.request_key,
            journey_id=request.journey_id,
            step_id=request.step_id,
            sent_at=self._clock.now(),
        )

    async def _deliver(self, request: MessageRequest, message: EmailMessage) -> MessageRecord:
        key = request.request_key
        shop = self._engagement.shops.get(request.shop_id)
        dkim = shop.dkim if shop is not None else None
        while True:
            attempts = await self._repo.count_attempt(key, self._clock.now())
            try:
                await self._mailer.send(message, dkim)
            except SendFailed as exc:
                if is_hard_bounce(exc.failure):
                    await self._hard_bounce(request, exc.failure)
                outcome = await self._after_failure(key, exc.failure, attempts)
                if outcome is None:
                    continue
                return outcome
            metrics.MAILS_SENT.labels(SERVICE).inc()
            mid = str(message["Message-ID"])
            log.info("mail_sent", request_key=key, attempts=attempts, message_id=mid)
            return await self._record(key, "sent", None, mid)

    async def _hard_bounce(self, request: MessageRequest, failure: SmtpFailure) -> None:
        """Suppress the address for marketing now, and tell the facts (email.events)."""
        now = self._clock.now()
        email = request.recipient.email.lower()
        row = (request.shop_id, "address", email, HARD_BOUNCE, now)
        await self._engagement.suppressions.add([row])
        ref = self._message_ref(request)
        bounced = EmailBounced(
            request_key=ref.request_key,
            shop_id=ref.shop_id,
            customer_key=ref.customer_key,
            journey_id=ref.journey_id,
            step_id=ref.step_id,
            sent_at=now,
            email=email,
            bounced_at=now,
            permanent=True,
            stage="data" if failure.stage == "data" else "recipient",
            smtp_code=failure.code,
            detail=failure.detail[:500],
        )
        event = make_event(
            type=EMAIL_BOUNCED,
            source="rebound/dispatcher",
            id=stable_event_id("bounce", request.request_key),
            time=now,
            subject=request.customer_key,
            shop_id=request.shop_id,
            data=bounced,
        )
        await self._engagement.bounces.publish_bounce(request.customer_key, event)

    async def _after_failure(
        self, key: str, failure: SmtpFailure, attempts: int
    ) -> MessageRecord | None:
        """The failed record, or None to try again; raises SmtpUnavailable to release."""
        kind = classify(failure)
        action = after_failure(kind, attempts, self._policy.max_attempts)
        metrics.ERRORS.labels(SERVICE, f"smtp_{kind}").inc()
        log.warning(
            "smtp_failed",
            request_key=key,
            kind=str(kind),
            attempt=attempts,
            action=str(action),
            error=failure.describe(),
        )
        if action is Next.RETRY:
            policy = self._policy
            await asyncio.sleep(backoff_s(attempts - 1, policy.retry_initial_s, policy.retry_max_s))
            return None
        if action is Next.RELEASE:
            await self._repo.release(key)
            raise SmtpUnavailable(failure.describe())
        return await self._record_failed(key, kind, failure_reason(kind, failure, attempts))

    async def _record_failed(self, key: str, kind: FailureKind, reason: str) -> MessageRecord:
        metrics.MESSAGES_SKIPPED.labels(SERVICE, f"smtp_{kind}").inc()
        return await self._record(key, "failed", reason, None)

    async def _record(
        self, key: str, status: FinalStatus, reason: str | None, smtp_message_id: str | None
    ) -> MessageRecord:
        """After SMTP spoke, the outcome is known: wait out a database outage to record it
        rather than leave the row in 'sending', which would later read as a crash."""

        async def finish() -> MessageRecord:
            return await self._repo.finish(key, status, reason, smtp_message_id, self._clock.now())

        return await retry_forever(
            finish,
            what="record message outcome",
            initial_s=self._policy.retry_initial_s,
            max_s=self._policy.retry_max_s,
            retryable=TRANSIENT_DB_ERRORS,
        )

    def _new_record(
        self, request: MessageRequest, subject: str, status: Status, reason: str | None = None
    ) -> MessageRecord:
        now = self._clock.now()
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
