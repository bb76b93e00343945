"""The garbage collector on a real job's files in S3 (the several-machine stack of test_s3_stack.py).

A real ssgan job runs on a worker; then `ganft admin gc` (a subprocess, with the strictest retention
and no grace period) must leave every file the job's records reference downloadable and
sha256-correct, and only once the output model and the datasets are deleted may it remove them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganft.client import Client
from tests.e2e import flows
from tests.e2e.test_s3_stack import S3Stack, _make_stack, _stop
from tests.s3_server import SeaweedS3, s3_server  # noqa: F401 - fixture
from tests.worker.helpers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STRICT = {
    "GANFT_GC_GRACE_S": "0",
    "GANFT_RETAIN_CHECKPOINTS_DAYS": "0",
    "GANFT_RETAIN_ARTIFACTS_DAYS": "0",
}


@pytest.fixture
def gc_stack(s3_server: SeaweedS3, pg_url: str, clean_db: None, engine: Any, tmp_path: Path) -> Iterator[S3Stack]:  # noqa: F811
    stack = _make_stack(s3_server.endpoint, pg_url, engine, tmp_path, worker=True)
    try:
        yield stack
    finally:
        _stop(stack.server)
        if stack.worker is not None:
            stack.worker.stop()


def _gc(stack: S3Stack) -> dict[str, Any]:
    env = {**stack.env, **STRICT}
    done = subprocess.run([sys.executable, "-m", "ganft.cli", "admin", "gc", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_gc_keeps_a_finished_jobs_files_until_its_model_is_deleted(gc_stack: S3Stack, tmp_path: Path) -> None:
    with Client(gc_stack.url, gc_stack.key, timeout=60) as api:
        (tmp_path / "client").mkdir()
        flows.ssgan_digits(api, tmp_path / "client")
        job = api.list_jobs().data[0]
        artifacts = api.list_artifacts(job.id)
        assert any(a.name == "model.pt2" for a in artifacts)
        before = api.usage()
        assert before.by_kind["artifacts"] == sum(a.size_bytes for a in artifacts)

        first = _gc(gc_stack)  # the checkpoints go (0 days); the output model is in use: artifacts stay
        assert first["checkpoints_dropped"] >= 1 and first["artifacts_dropped"] == 0
        assert api.list_checkpoints(job.id) == []
        (tmp_path / "after-gc").mkdir()
        for artifact in artifacts:  # still there, whole: the SDK checks each sha256
            api.download_artifact(job.id, artifact.name, tmp_path / "after-gc" / artifact.name)
        datasets = [d.id for d in api.list_datasets().data]
        assert len(datasets) == 2 and api.get_model(str(job.output_model_id)).id == job.output_model_id
        assert _gc(gc_stack)["deleted"] == []  # idempotent

        api.delete_model(str(job.output_model_id))
        for dataset_id in datasets:
            api.delete_dataset(dataset_id)
        second = _gc(gc_stack)
        assert second["artifacts_dropped"] == len(artifacts)
        assert api.list_artifacts(job.id) == []
        assert api.usage().total_bytes == 0
    store = gc_stack.store()
    assert store.list_keys("datasets") == [] and store.list_keys(f"jobs/{job.id}") == []
