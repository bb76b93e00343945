"""`GET /v1/jobs/{id}/webhooks`: the job's webhook deliveries and their latest outcome.

Mounted under the jobs router (api/routes/jobs.py includes it), so its paths are relative.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import JobDep, SessionDep
from api.schemas import ListOf, WebhookDeliveryOut
from ganft.repo import webhooks

router = APIRouter(tags=["webhooks"])


@router.get("/{job_id}/webhooks", response_model=ListOf[WebhookDeliveryOut])
def job_webhooks(job: JobDep, session: SessionDep) -> ListOf[WebhookDeliveryOut]:
    """The job's webhook deliveries: URL, event type, status, attempts and the last response or error."""
    deliveries = webhooks.list_for_job(session, job_id=job.id)
    return ListOf[WebhookDeliveryOut](data=[WebhookDeliveryOut.model_validate(d) for d in deliveries])
