"""The webhook delivery loop: one pass per sweeper tick (worker/sweeper.py) on every worker node.

A pass creates the deliveries of newly finished jobs, then sends the due ones: a signed POST
(ganft/webhooks.py) with a 5 s timeout and no redirects; a 2xx answer is delivered, anything
else is retried after 5 s, 30 s, 2 min, 10 min and 1 h, then marked failed. Every attempt's
outcome (status code or error) is recorded and visible at GET /v1/jobs/{id}/webhooks.
Delivery is at least once: receivers dedupe on `webhook-id`.

Each attempt resolves the URL's host itself and connects to the address it checked (the URL's
host goes in the Host header and, for https, in SNI and the certificate check): unless
GANFT_WEBHOOK_ALLOW_PRIVATE is set, a host that resolves to a non-public address is refused and
the delivery fails at once (no retries), with the reason as its error. No connection is reused,
so every request is made on a connection to the address checked for that request.
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
_DEFAULT_PORTS = {"http": 80, "https": 443}

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


@dataclass
class Attempt:
    status_code: int | None = None
    error: str | None = None
    final: bool = False  # give up now: retrying cannot help (a refused target)


def _send(
    client: httpx.Client, delivery: webhooks.DueDelivery, body: bytes, secret: str, *, allow_private: bool
) -> Attempt:
    url = httpx.URL(delivery.url)
    host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and TLS want it
    try:
        address = signing.resolve_target(host, url.port or _DEFAULT_PORTS[url.scheme], allow_private=allow_private)
    except signing.ForbiddenTarget as exc:
        return Attempt(error=f"refused: {exc}"[:1000], final=True)
    except OSError as exc:  # socket.gaierror: the name does not resolve (now); retried
        return Attempt(error=f"cannot resolve {host}: {exc}"[:1000])
    headers = {**signing.headers(secret, delivery.id, body), "host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    try:
        response = client.post(url.copy_with(host=address), content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Attempt(error=f"{type(exc).__name__}: {exc}"[:1000])
    if response.is_success:
        return Attempt(status_code=response.status_code)
    return Attempt(status_code=response.status_code, error=f"HTTP {response.status_code}: {response.text[:200]}")


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
    # No keep-alive: a pooled connection belongs to an address (and a TLS name) checked for an
    # earlier request; each request gets a connection to the address checked for it.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False, limits=limits) as client:
        for delivery in due:
            try:
                body, secret = _message(settings, delivery)
                attempt = _send(client, delivery, body, secret, allow_private=settings.webhook_allow_private)
            except Exception as exc:  # a bug or DB hiccup for one message must not stop the others
                log.exception("webhook %s of job %s could not be prepared", delivery.id, delivery.job_id)
                attempt = Attempt(error=f"internal error: {type(exc).__name__}")
            with session_scope(engine) as session:
                outcome = webhooks.record_attempt(
                    session,
                    delivery_id=delivery.id,
                    now=now,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    final=attempt.final,
                )
            report.outcomes[delivery.id] = outcome
            level = logging.INFO if attempt.error is None else logging.WARNING
            log.log(level, "webhook %s (%s, job %s) to %s: %s (%s)", delivery.id, delivery.event_type,
                    delivery.job_id, delivery.url, outcome, attempt.error or attempt.status_code)  # fmt: skip
    return report
