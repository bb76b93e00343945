"""`ganft up` as a user runs it: the URL and key on stdout, Ctrl-C stops it cleanly, a running job is
handed back (checkpointed) and the next `ganft up` resumes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ganft.client import Client
from ganft.embedded import free_port
from tests.e2e.flows import digit_images
from tests.worker.helpers import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class GanftUp:
    def __init__(self, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANFT_")}
        env.update(GANFT_DATA_DIR=str(data_dir), GANFT_PROGRESS_INTERVAL_S="0.25", PYTHONUNBUFFERED="1")
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in interrupt()
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ganft.cli", "up", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self) -> tuple[str, str]:
        """(URL, admin key) as `ganft up` prints them."""

        def printed() -> tuple[str, str] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"ganft up exited with {self.process.returncode}:\n{self.logs()}")
            lines = self.logs().splitlines()
            url = next((ln.split(" at ", 1)[1] for ln in lines if ln.startswith("ganft is up at ")), None)
            key = next((ln.split()[3] for ln in lines if ln.startswith("admin API key: ")), None)
            return (url, key) if url and key else None

        return wait_for(printed, timeout=90, what="ganft up to print its URL and key", logs=self.logs)

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C, as a terminal sends it; the exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def ganft_up(tmp_path: Path) -> Iterator[type[GanftUp]]:
    started: list[GanftUp] = []

    class Tracked(GanftUp):
        def __init__(self, data_dir: Path, log: Path) -> None:
            super().__init__(data_dir, log)
            started.append(self)

    yield Tracked
    for up in started:  # only after a failure: a passing test has stopped them
        up.kill()


def test_ctrl_c_hands_the_job_back_and_the_next_start_resumes_it(ganft_up: type[GanftUp], tmp_path: Path) -> None:
    data_dir = tmp_path / "ganft"
    first = ganft_up(data_dir, tmp_path / "first.log")
    url, key = first.wait_up()
    images = digit_images()
    np.savez(tmp_path / "images.npz", x=images["x"], y=images["y"])
    hp = {"steps": 100_000, "batch_size": 8, "checkpoint_every": 5, "log_every": 5, "eval_every": 100_000}
    with Client(url, key) as api:
        dataset = api.upload_dataset(tmp_path / "images.npz")
        job_id = api.create_job({"method": "adapt", "dataset_id": dataset["id"], "hyperparameters": hp})["id"]
        wait_for(lambda: api.get_job(job_id)["progress"]["step"] >= 5, timeout=90, what="training", logs=first.logs)
    started = time.monotonic()
    assert first.interrupt() == 0, first.logs()
    assert time.monotonic() - started < 45  # the trainer checkpointed and stopped; nothing was killed
    assert "killing" not in first.logs()

    second = ganft_up(data_dir, tmp_path / "second.log")
    url, same_key = second.wait_up()
    assert same_key == key  # kept in <data_dir>/admin.key
    with Client(url, key) as api:
        events = api.list_events(job_id)
        statuses = [e.data for e in events if e.type == "status"]
        assert statuses[:3] == [
            {"status": "queued"},
            {"status": "running", "attempt": 1},
            {"status": "queued", "reason": "worker shut down"},
        ]
        checkpoint = max(e.data["step"] for e in events if e.type == "checkpoint")
        job = wait_for(
            lambda: (j := api.get_job(job_id))["attempt"] == 2 and j["progress"]["step"] > checkpoint and j,
            timeout=90,
            what="the second start to resume the job",
            logs=second.logs,
        )
        assert job["status"] == "running"
        api.cancel_job(job_id)
        wait_for(lambda: api.get_job(job_id)["status"] == "cancelled", timeout=60, what="the cancel", logs=second.logs)
    assert second.interrupt() == 0, second.logs()
