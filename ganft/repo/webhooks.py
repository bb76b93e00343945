"""Webhook deliveries and tenants' webhook settings.

Deliveries are created by the delivery loop itself (`enqueue_terminal`): every terminal job
with a `webhook_url` and no delivery row gets one (one per job and event type, unique, so two
sweepers racing insert it once). This keeps the job lifecycle code untouched and is
idempotent; the cost is up to one sweep interval of delay. A job's `webhook_url` is fixed
at creation (its own, else the tenant's default then), so changing a tenant default never
sends webhooks about jobs that finished before.

Sending is claim -> send (no transaction open) -> record: `claim_due` moves each due row's
`next_attempt_at` forward by `claim_s` with a compare-and-set, so another sender skips it and
a sender that dies leaves it to be retried after `claim_s`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ganft.db.tables import TERMINAL_STATUSES, Job, Tenant, WebhookDelivery, new_id, utcnow
from ganft.webhooks import check_literal_target, check_url, generate_secret

# Waits after the 1st, 2nd ... failed attempt; after the last one the delivery is `failed`
# (6 attempts over about 1 h 13 min).
RETRY_DELAYS_S = (5, 30, 120, 600, 3600)
EVENT_TYPES = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}


class WebhookConfigError(Exception):
    """An unknown tenant or an unusable URL."""


@dataclass(frozen=True)
class DueDelivery:
    id: str  # the webhook-id header
    job_id: str
    tenant_id: str
    url: str
    event_type: str
    attempts: int  # attempts made before this one
    created_at: dt.datetime  # the event's time (the body's `timestamp`)


def set_tenant_webhook(session: Session, *, tenant_name: str, url: str | None, allow_private: bool = False) -> str:
    """Set (or with None clear) a tenant's default webhook URL; returns the tenant's signing secret.

    The URL is checked as a job's is (`localhost` and literal non-public addresses are refused
    unless `allow_private`, GANFT_WEBHOOK_ALLOW_PRIVATE). The secret is generated on first use
    and kept (receivers configured with it keep working).
    """
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        raise WebhookConfigError(f"no tenant named {tenant_name!r}")
    if url is not None:
        try:
            check_url(url)
            if not allow_private:
                check_literal_target(url)
        except ValueError as exc:
            raise WebhookConfigError(f"webhook URL {exc}") from None
    tenant.webhook_url = url
    if tenant.webhook_secret is None:
        tenant.webhook_secret = generate_secret()
    session.flush()
    return tenant.webhook_secret


def tenant_default_url(session: Session, *, tenant_id: str) -> str | None:
    return session.scalar(select(Tenant.webhook_url).where(Tenant.id == tenant_id))


def tenant_secret(session: Session, *, tenant_id: str) -> str:
    """The tenant's signing secret, generated and stored if it has none yet."""
    tenant = session.get_one(Tenant, tenant_id)
    if tenant.webhook_secret is None:
        tenant.webhook_secret = generate_secret()
        session.flush()
    return tenant.webhook_secret


def enqueue_terminal(session: Session, *, limit: int = 100) -> list[str]:
    """Create the pending delivery of each finished job that has a webhook URL and none yet; returns job ids."""
    rows = session.execute(
        select(Job.id, Job.status, Job.webhook_url)
        .where(
            Job.status.in_(TERMINAL_STATUSES),
            Job.webhook_url.is_not(None),
            ~exists().where(WebhookDelivery.job_id == Job.id),
        )
        .limit(limit)
    ).all()
    if not rows:
        return []
    now = utcnow()
    values = [
        {
            "id": new_id("msg"),
            "job_id": job_id,
            "url": url,
            "event_type": EVENT_TYPES[status],
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for job_id, status, url in rows
    ]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(WebhookDelivery).values(values).on_conflict_do_nothing())
    return [job_id for job_id, _, _ in rows]


def claim_due(session: Session, *, now: dt.datetime, claim_s: float, limit: int = 20) -> list[DueDelivery]:
    """Pending deliveries due at `now`, each claimed for `claim_s` seconds (compare-and-set)."""
    due = session.execute(
        select(WebhookDelivery, Job.tenant_id)
        .join(Job, Job.id == WebhookDelivery.job_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    ).all()
    claimed = []
    until = now + dt.timedelta(seconds=claim_s)
    for row, tenant_id in due:
        won = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at == row.next_attempt_at,
            )
            .values(next_attempt_at=until)
            .returning(WebhookDelivery.id)
        ).first()
        if won is not None:
            claimed.append(
                DueDelivery(row.id, row.job_id, tenant_id, row.url, row.event_type, row.attempts, row.created_at)
            )
    return claimed


def record_attempt(
    session: Session,
    *,
    delivery_id: str,
    now: dt.datetime,
    status_code: int | None,
    error: str | None,
    final: bool = False,
) -> str:
    """Record one attempt's outcome (2xx = delivered; else retry later or give up, at once when
    `final`: a refused target); returns the new status."""
    row = session.get_one(WebhookDelivery, delivery_id)
    row.attempts += 1
    row.last_status_code = status_code
    row.last_error = error
    if error is None and status_code is not None and 200 <= status_code < 300:
        row.status, row.next_attempt_at = "delivered", None
    elif final or row.attempts > len(RETRY_DELAYS_S):
        row.status, row.next_attempt_at = "failed", None
    else:
        row.next_attempt_at = now + dt.timedelta(seconds=RETRY_DELAYS_S[row.attempts - 1])
    session.flush()
    return row.status


def list_for_job(session: Session, *, job_id: str) -> list[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at)
        )
    )
