"""The webhook delivery loop: one pass per sweeper tick (worker/sweeper.py) on every worker node.

A pass creates the deliveries of newly finished jobs, then sends the due ones: a signed POST
(ganft/webhooks.py) with a 5 s timeout and no redirects; a 2xx answer is delivered, anything
else is retried after 5 s, 30 s, 2 min, 10 min and 1 h, then marked failed. Every attempt's
outcome (status code or error) is recorded and visible at GET /v1/jobs/{id}/webhooks.
Delivery is at least once: receivers dedupe on `webhook-id`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import httpx

from api.schemas import JobOut  # the body's `data` is exactly what GET /v1/jobs/{id} returns
from ganft import webhooks as signing
from ganft.db.session import get_engine, session_scope
from ganft.db.tables import Job, utcnow
from ganft.repo import webhooks
from ganft.settings import Settings

SEND_TIMEOUT_S = 5.0  # per attempt (connect + read)
CLAIM_S = 60.0  # a claimed delivery is left alone this long (longer than any one send)
BATCH = 20  # deliveries sent per pass, so a slow receiver cannot stall the sweeper for long

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    enqueued: list[str] = field(default_factory=list)  # job ids that got a delivery
    outcomes: dict[str, str] = field(default_factory=dict)  # delivery id -> pending | delivered | failed


def _message(settings: Settings, delivery: webhooks.DueDelivery) -> tuple[bytes, str]:
    """(JSON body, signing secret) of one delivery."""
    engine = get_engine(settings.database_url)
    with session_scope(engine) as session:
        job = session.get_one(Job, delivery.job_id)
        data = JobOut.of(job).model_dump(mode="json")
        secret = settings.webhook_secret or webhooks.tenant_secret(session, tenant_id=delivery.tenant_id)
    created = delivery.created_at if delivery.created_at.tzinfo else delivery.created_at.replace(tzinfo=dt.UTC)
    body = {"type": delivery.event_type, "timestamp": created.isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode(), secret


def _send(
    client: httpx.Client, delivery: webhooks.DueDelivery, body: bytes, secret: str
) -> tuple[int | None, str | None]:
    headers = signing.headers(secret, delivery.id, body)
    try:
        response = client.post(delivery.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def deliver_due(settings: Settings, *, now: dt.datetime | None = None) -> DeliveryReport:
    """One pass: enqueue deliveries of finished jobs, then send what is due at `now` (default: now)."""
    engine = get_engine(settings.database_url)
    report = DeliveryReport()
    with session_scope(engine) as session:
        report.enqueued = webhooks.enqueue_terminal(session)
    now = now or utcnow()
    with session_scope(engine) as session:
        due = webhooks.claim_due(session, now=now, claim_s=CLAIM_S, limit=BATCH)
    if not due:
        return report
    with httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False) as client:
        for delivery in due:
            try:
                body, secret = _message(settings, delivery)
                status_code, error = _send(client, delivery, body, secret)
            except Exception as exc:  # a bug or DB hiccup for one message must not stop the others
                log.exception("webhook %s of job %s could not be prepared", delivery.id, delivery.job_id)
                status_code, error = None, f"internal error: {type(exc).__name__}"
            with session_scope(engine) as session:
                outcome = webhooks.record_attempt(
                    session, delivery_id=delivery.id, now=now, status_code=status_code, error=error
                )
            report.outcomes[delivery.id] = outcome
            level = logging.INFO if error is None else logging.WARNING
            log.log(level, "webhook %s (%s, job %s) to %s: %s (%s)", delivery.id, delivery.event_type,
                    delivery.job_id, delivery.url, outcome, error or status_code)  # fmt: skip
    return report
