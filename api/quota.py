"""The tenant's storage quota (`tenants.max_storage_bytes`, set with `ganft admin set-quota`) on uploads.

An upload may bring at most what is left of the quota: the bytes the tenant stores now
(ganft/repo/usage.py) are read when the upload starts, so uploads running at the same time can
together pass the quota by at most their own sizes. Passing it is a 413 problem that names the
quota, the bytes in use and what is left. The files a job writes (checkpoints, artifacts) are
counted in the usage but never refused: a running job is not failed for its outputs.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from api.uploads import UploadLimit
from ganft.db.session import session_scope
from ganft.repo import usage


def over_quota(quota: int, used: int, *, adding: int | None = None) -> Problem:
    left = max(0, quota - used)
    what = f"{adding} more bytes" if adding is not None else "the upload"
    return Problem(
        413,
        f"{what} would exceed your storage quota: max_storage_bytes is {quota}, {used} bytes are in use, "
        f"{left} left (GET /v1/usage); delete datasets or models you no longer need, or ask an operator "
        "to raise the quota (ganft admin set-quota)",
    )


def upload_limit_in(session: Session, *, tenant_id: str, max_upload_bytes: int) -> UploadLimit:
    """The limit on one upload of the tenant: GANFT_MAX_UPLOAD_BYTES or what is left of its quota."""
    quota = usage.storage_quota(session, tenant_id=tenant_id)
    if quota is None:
        return UploadLimit.of(max_upload_bytes)
    used = sum(usage.tenant_usage(session, tenant_id=tenant_id).values())
    left = max(0, quota - used)
    if left >= max_upload_bytes:
        return UploadLimit.of(max_upload_bytes)
    return UploadLimit(left, lambda: over_quota(quota, used))


async def upload_limit(engine: Engine, *, tenant_id: str, max_upload_bytes: int) -> UploadLimit:
    """`upload_limit_in` in the threadpool, on its own session."""

    def read() -> UploadLimit:
        with session_scope(engine) as session:
            return upload_limit_in(session, tenant_id=tenant_id, max_upload_bytes=max_upload_bytes)

    return await run_in_threadpool(read)
