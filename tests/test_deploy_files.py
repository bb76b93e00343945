"""The Dockerfile and docker-compose.yml cannot run here (no Docker engine), so check that what
they call exists and is the same thing the tests start: importable apps, alembic config, pinned torch."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_shape() -> None:
    """postgres, redis, a one-shot migrate, api and a GPU worker, wired by health/completion."""
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_runs_the_worker_command_the_tests_run() -> None:
    """The worker service runs `worker.app.worker_command()` (solo pool: one job per process, in that
    process), the command every worker test, `ganft up` and the benchmarks start; its stop grace
    leaves the runner time to checkpoint and hand the job back (cancel grace + margin)."""
    from ganft.settings import Settings
    from worker.app import worker_command

    worker = _compose()["services"]["worker"]
    assert worker["command"] == worker_command("gpu@%h")
    assert worker["command"][worker["command"].index("--pool") + 1] == "solo"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace and int(grace.group(1)) >= Settings().cancel_grace_s + 10


def test_compose_commands_point_at_real_modules() -> None:
    """`uvicorn api.main:app` and `celery -A worker.app` name objects that import."""
    services = _compose()["services"]
    module, attr = services["api"]["command"][1].split(":")
    assert hasattr(importlib.import_module(module), attr)
    celery_module = importlib.import_module("worker.app")
    assert hasattr(celery_module, "app")
    assert (ROOT / "alembic.ini").is_file()


def test_dockerfile_pins_torch_and_copies_every_package() -> None:
    """The image installs torch==2.13.0 (never an unpinned torch) and ships all service packages."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'"torch==2\.13\.0"', text)
    for package in ("api", "worker", "ganft", "ganft_core", "migrations"):
        assert f"COPY {package} ./{package}" in text
