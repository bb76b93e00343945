"""FastAPI dependencies as `Annotated` aliases: routes ask for what they need by type.

    def get_job(job_id: str, session: SessionDep, tenant: TenantDep) -> Job: ...

The app's long-lived parts (settings, engine, reader, store, broker client, rate limiter) live
on `app.state`, set by `api.main.create_app`; these functions hand them to routes. They are
`async def` on purpose: FastAPI runs a plain `def` dependency in the threadpool, a hop that
cost more than the lookup it wraps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.keycache import KeyCache
from api.problems import Problem, not_found, unauthorized
from api.queue import JobQueue
from api.ratelimit import RateLimiter
from ganft.db.reads import Reader
from ganft.db.tables import Dataset, Job, Model
from ganft.repo import datasets, jobs, keys, models
from ganft.repo.keys import Principal
from ganft.settings import Settings
from ganft.store import Store


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


async def _reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


def _session(request: Request) -> Iterator[Session]:
    # A sync generator on purpose: FastAPI runs its exit (the ROLLBACK that returns the connection)
    # in a thread outside the shared threadpool limit, so a request holding a pooled connection never
    # waits for a thread behind requests that wait for a connection (a deadlock until pool_timeout).
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer gft_...`")


async def _principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller behind the bearer key (401 otherwise), after taking a rate-limit token (429).

    A key seen within `auth_cache_s` is answered from the process's KeyCache; otherwise it is
    looked up through the Reader (on Postgres an async query, no threadpool hop: lookups done in
    the threadpool, all 64 keys of the load benchmark expiring together, held GET /v1/jobs/{id}'s
    p99 near 80 ms).
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
    cache: KeyCache = request.app.state.key_cache
    principal = cache.get(credentials.credentials)
    if principal is None:
        principal = await keys.read_principal(request.app.state.reader, key=credentials.credentials)
        if principal is None:
            raise unauthorized("invalid or revoked API key", error="invalid_token")
        cache.put(credentials.credentials, principal)
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.acquire(principal.key_id)
    if wait > 0:
        raise Problem(429, "rate limit exceeded for this API key", headers={"Retry-After": str(math.ceil(wait))})
    request.state.principal = principal
    return principal


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]
ReaderDep = Annotated[Reader, Depends(_reader)]
TenantDep = Annotated[Principal, Depends(_principal)]


# ---------------------------------------------------------------- the caller's objects, or 404


async def _tenant_job(job_id: str, tenant: TenantDep, reader: ReaderDep) -> Job:
    # Through the Reader (no session, no threadpool hop on Postgres): `GET /v1/jobs/{id}` is the
    # route platforms poll. The Job is detached; routes that change it use their own session.
    job = await jobs.read(reader, tenant_id=tenant.tenant_id, job_id=job_id)
    if job is None:  # absent and another tenant's look the same
        raise not_found("job", job_id)
    return job


def _tenant_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Dataset:
    dataset = datasets.get(session, tenant_id=tenant.tenant_id, dataset_id=dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    return dataset


def _tenant_model(model_id: str, session: SessionDep, tenant: TenantDep) -> Model:
    model = models.get(session, tenant_id=tenant.tenant_id, model_id=model_id)
    if model is None:
        raise not_found("model", model_id)
    return model


JobDep = Annotated[Job, Depends(_tenant_job)]
DatasetDep = Annotated[Dataset, Depends(_tenant_dataset)]
ModelDep = Annotated[Model, Depends(_tenant_model)]
