"""A job's kept checkpoints: the rows the worker records, the keep policy, and the API's reads.

A checkpoint's evaluation figures are those of the job's newest evaluation at or before its step
(the `evaluation` events the worker appends). The keep policy keeps the `keep_checkpoints`
newest checkpoints of a job plus the best one by its figures in the method's metric (ssgan:
highest accuracy, adapt: lowest FID); when several checkpoints share the best figures, the
earliest of them (the one nearest the evaluated weights) is the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from ganft.db.tables import JobCheckpoint, JobEvent, utcnow

# The metric that ranks evaluations of each method, and whether higher is better.
BEST_METRIC: dict[str, tuple[str, bool]] = {"ssgan": ("accuracy", True), "adapt": ("fid", False)}
DEFAULT_KEEP = 3  # when the hyperparameters have no keep_checkpoints (adapt)


@dataclass(frozen=True)
class Evaluation:
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class KeptCheckpoint:
    row: JobCheckpoint
    evaluation: Evaluation | None  # the newest evaluation at or before the checkpoint's step
    best: bool  # the best checkpoint by the method's metric


def evaluations(session: Session, *, job_id: str) -> list[Evaluation]:
    """The job's evaluations in step order (each attempt's; a resumed attempt may repeat a step: the last wins)."""
    rows = session.execute(
        select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "evaluation").order_by(JobEvent.seq)
    ).scalars()
    by_step: dict[int, dict[str, float]] = {}
    for data in rows:
        if isinstance(data.get("step"), int):
            by_step[data["step"]] = dict(data.get("metrics") or {})
    return [Evaluation(step, by_step[step]) for step in sorted(by_step)]


def best_evaluation(method: str, found: Sequence[Evaluation]) -> Evaluation | None:
    """The best of `found` by the method's metric (the earliest of equals); None when none has it."""
    name, higher = BEST_METRIC[method]
    scored = [e for e in found if isinstance(e.metrics.get(name), int | float)]
    if not scored:
        return None
    return max(scored, key=lambda e: (e.metrics[name] if higher else -e.metrics[name], -e.step))


def _evaluation_at(step: int, found: Sequence[Evaluation]) -> Evaluation | None:
    before = [e for e in found if e.step <= step]
    return before[-1] if before else None


def _rows(session: Session, job_id: str) -> list[JobCheckpoint]:
    return list(
        session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id).order_by(JobCheckpoint.step))
    )


def kept(session: Session, *, job_id: str, method: str) -> list[KeptCheckpoint]:
    """The job's kept checkpoints, oldest first, each with its evaluation figures."""
    found = evaluations(session, job_id=job_id)
    rows = _rows(session, job_id)
    best = _best_step(method, rows, found)
    return [KeptCheckpoint(r, _evaluation_at(r.step, found), r.step == best) for r in rows]


def _best_step(method: str, rows: Sequence[JobCheckpoint], found: Sequence[Evaluation]) -> int | None:
    """The step of the checkpoint whose figures (the evaluation at or before it) are best; of equals the
    earliest, the one nearest the evaluated weights. None before any evaluation."""
    name, higher = BEST_METRIC[method]
    scored = []
    for row in rows:
        evaluation = _evaluation_at(row.step, found)
        value = evaluation.metrics.get(name) if evaluation is not None else None
        if isinstance(value, int | float):
            scored.append(((value if higher else -value), -row.step))
    return -max(scored)[1] if scored else None


def get(session: Session, *, job_id: str, step: int) -> JobCheckpoint | None:
    return session.scalars(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.step == step)
    ).one_or_none()


def add(
    session: Session,
    *,
    job_id: str,
    method: str,
    step: int,
    storage_key: str,
    size_bytes: int,
    sha256: str,
    keep_last: int,
) -> list[str]:
    """Record a stored checkpoint (replacing one of the same step), then apply the keep policy.

    Returns the storage keys of the checkpoints dropped (the caller deletes them from the store
    after commit); never the key just recorded.
    """
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.step == step))
    row: dict[str, Any] = {
        "job_id": job_id,
        "step": step,
        "storage_key": storage_key,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "created_at": utcnow(),
    }
    session.execute(insert(JobCheckpoint), [row])
    rows = _rows(session, job_id)
    keep = {r.step for r in rows[-max(1, keep_last) :]}
    best = _best_step(method, rows, evaluations(session, job_id=job_id))
    if best is not None:
        keep.add(best)
    dropped = [r for r in rows if r.step not in keep]
    if dropped:
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.id.in_([r.id for r in dropped])))
    return [r.storage_key for r in dropped if r.storage_key != storage_key]
