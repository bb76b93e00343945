"""A job driven through the database the way a worker drives it, while a browser watches.

The browser test must not depend on a real trainer, so this thread writes what the worker
writes, with the service's own data-access functions: the claim (status `running` and its
event), throttled progress writes (step, steps/s, metric points, `progress` and `evaluation`
events, one transaction each), a log line, a checkpoint event, then the artifacts (a real PNG
sample grid, metrics.json) in the store and the artifacts table together with `succeeded`.

It pauses half-way until the test says `resume()`, so the test can look at the running job.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sqlalchemy import Engine, update

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Job, JobMetric, utcnow
from ganft.repo.jobs import append_event
from ganft.store import Store

CLASSES = [str(d) for d in range(10)]


def sample_grid_png(rows: int = 8, cols: int = 8, scale: int = 4, pad: int = 2) -> bytes:
    """A grid of scikit-learn's bundled 8×8 digits as a PNG (what a trainer's samples.png looks like)."""
    digits = load_digits().images[: rows * cols] / 16.0  # N×8×8 in [0, 1]
    cell = 8 * scale + pad
    grid = np.zeros((rows * cell + pad, cols * cell + pad), dtype=np.uint8)
    for i, image in enumerate(digits):
        big = np.kron(image, np.ones((scale, scale)))  # nearest-neighbour upscale
        r, c = divmod(i, cols)
        grid[pad + r * cell : pad + r * cell + 8 * scale, pad + c * cell : pad + c * cell + 8 * scale] = big * 255
    buffer = io.BytesIO()
    Image.fromarray(grid, mode="L").convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def figures(accuracy: float) -> dict[str, Any]:
    """Classification figures shaped like ganft_core's classification_metrics."""
    per_class = [
        {
            "class": c,
            "precision": accuracy,
            "recall": accuracy - 0.01 * (i % 3),
            "f1": accuracy - 0.005 * i,
            "support": 18,
        }
        for i, c in enumerate(CLASSES)
    ]
    confusion = [[16 if i == j else (2 if j == (i + 1) % 10 else 0) for j in range(10)] for i in range(10)]
    return {
        "accuracy": accuracy,
        "macro_precision": accuracy + 0.004,
        "macro_recall": accuracy - 0.003,
        "macro_f1": accuracy - 0.006,
        "examples": 180,
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


class ScriptedJob(threading.Thread):
    def __init__(self, engine: Engine, store: Store, job_id: str, *, total: int = 80, pause_at: int = 40) -> None:
        super().__init__(daemon=True, name=f"scripted-{job_id}")
        self.engine, self.store, self.job_id = engine, store, job_id
        self.total, self.pause_at = total, pause_at
        self._resume = threading.Event()
        self.paused = threading.Event()
        self.error: BaseException | None = None
        self.result: dict[str, Any] = {}

    def resume(self) -> None:
        self._resume.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test through .error
            self.error = exc
            self.paused.set()

    def _run(self) -> None:
        with session_scope(self.engine) as session:  # the claim: a compare-and-set on `queued`
            claimed = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == "queued")
                .values(status="running", attempt=Job.attempt + 1, worker_id="scripted", started_at=utcnow())
                .returning(Job.id)
            ).first()
            assert claimed is not None, "the job was not queued"
            append_event(session, job_id=self.job_id, type="status", data={"status": "running", "attempt": 1})
        started = time.monotonic()
        for step in range(2, self.total + 1, 2):  # one throttled write per two steps, like log_every
            if step == self.pause_at + 2:
                self.paused.set()
                assert self._resume.wait(60), "the test never resumed the job"
            time.sleep(0.05)
            self._write(step, started)
        self._finish()

    def _write(self, step: int, started: float) -> None:
        t = step / self.total
        metrics = {
            "loss_d": 1.4 * math.exp(-2.5 * t) + 0.35 + 0.04 * math.sin(step),
            "loss_g": 0.9 * math.exp(-1.5 * t) + 0.2 + 0.03 * math.cos(step),
            "loss_control": 1.2 * math.exp(-3 * t) + 0.1,
        }
        evaluation = None
        if step % 20 == 0:
            evaluation = {"accuracy": 0.55 + 0.35 * t, "control_accuracy": 0.52 + 0.3 * t, "macro_f1": 0.5 + 0.36 * t}
        rate = step / max(time.monotonic() - started, 1e-3)
        with session_scope(self.engine) as session:
            session.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(step=step, total_steps=self.total, steps_per_second=rate)
            )
            points = {**metrics, **(evaluation or {})}
            session.add_all(JobMetric(job_id=self.job_id, step=step, name=n, value=v) for n, v in points.items())
            if evaluation:
                append_event(
                    session,
                    job_id=self.job_id,
                    type="evaluation",
                    data={"step": step, "total_steps": self.total, "metrics": evaluation},
                )
            if step == 10:
                append_event(
                    session,
                    job_id=self.job_id,
                    type="log",
                    data={"step": step, "message": "head replaced: 2 -> 10 classes"},
                )
            if step % 40 == 0:
                append_event(session, job_id=self.job_id, type="checkpoint", data={"step": step})
            append_event(
                session,
                job_id=self.job_id,
                type="progress",
                data={"step": step, "total_steps": self.total, "steps_per_second": rate, "metrics": metrics},
            )

    def _finish(self) -> None:
        ours, control = figures(0.9), figures(0.82)
        self.result = {
            "method": "ssgan",
            "steps": self.total,
            "ssgan": ours,
            "control": control,
            "delta_accuracy": ours["accuracy"] - control["accuracy"],
            "delta_macro_f1": ours["macro_f1"] - control["macro_f1"],
            "verdict": {
                "outcome": "helped",
                "metric": "accuracy",
                "ssgan": 0.9,
                "control": 0.82,
                "delta": 0.08,
                "margin": 0.05,
                "use": "model",
                "message": "the GAN helped",
            },  # ganft_core/verdict.py's keys
            "labeled_examples": 100,
            "unlabeled_examples": 1200,
            "validation_examples": 180,
            "evaluated_with_ema": True,
        }
        files = {
            "samples.png": (sample_grid_png(), "image/png"),
            "metrics.json": (json.dumps(self.result).encode(), "application/json"),
        }
        rows = []
        for name, (data, content_type) in files.items():
            key = f"jobs/{self.job_id}/{name}"
            size, sha = self.store.put_bytes(key, data)
            rows.append(
                Artifact(
                    job_id=self.job_id,
                    name=name,
                    size_bytes=size,
                    sha256=sha,
                    content_type=content_type,
                    storage_key=key,
                )
            )
        with session_scope(self.engine) as session:  # artifacts, result and status commit together
            session.add_all(rows)
            session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == "running")
                .values(status="succeeded", result=self.result, finished_at=utcnow(), steps_per_second=None)
            )
            append_event(session, job_id=self.job_id, type="status", data={"status": "succeeded"})
