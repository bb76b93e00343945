"""The service benchmarks' tiny modes (bench/README.md): each runs end to end against real parts.

They assert on what the benchmarks report (every request answered, bytes round-tripped, jobs
claimed and finished), never on times: the figures come from full runs on a quiet machine.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The bench folder on sys.path (its scripts import `common` as a sibling), as a namespace of modules."""
    sys.path.insert(0, str(BENCH))
    try:
        import api_load
        import dispatch
        import service_overhead
        import transfer

        namespace = ModuleType("bench")
        namespace.__dict__.update(
            api_load=api_load, transfer=transfer, dispatch=dispatch, service_overhead=service_overhead
        )
        yield namespace
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_api_load_tiny(bench: ModuleType) -> None:
    args = bench.api_load.parse_args(
        ["--workers", "1", "--duration", "1", "--connections", "4", "--threads", "1", "--seed-jobs", "10"]
    )
    results = bench.api_load.measure(args)
    runs = {(r["endpoint"], r["server"]): r for r in results["runs"]}
    assert set(runs) == {
        ("bare Starlette route", "bare"),
        ("GET /healthz", "this tree"),
        ("GET /v1/jobs/{id}", "this tree"),
        ("GET /v1/jobs (50 per page)", "this tree"),
        ("POST /v1/jobs", "this tree"),
    }
    for run in runs.values():
        assert run["requests"] > 0 and run["errors"] == 0, run  # every answer was 2xx (auth, rate limit, body)
        assert run["server_cpu_ms_per_request"] > 0
    assert "GET /v1/jobs/{id}" in bench.api_load.table(results, args)


def test_transfer_tiny(bench: ModuleType) -> None:
    args = bench.transfer.parse_args(["--mib", "4"])
    results = bench.transfer.measure(args)
    assert [u["kind"] for u in results["uploads"]] == ["raw body", "multipart"]
    images = 4 * 1024**2 // (64 * 64 * 3)
    for upload in results["uploads"]:
        stats = upload["dataset"]["stats"]
        assert (stats["examples"], stats["labeled"]) == (images, (images + 1) // 2)  # every other image labeled
        assert upload["inspector_peak_mib"] > 0  # the inspector subprocess was seen and measured
    assert len(results["downloads"]) == 2  # each checked for status 200 and the full size by the benchmark
    assert "Targets:" in bench.transfer.report(results, args)


@pytest.mark.slow
def test_dispatch_tiny(bench: ModuleType) -> None:
    args = bench.dispatch.parse_args(["--jobs", "1"])
    results = bench.dispatch.measure(args)
    (job,) = results["jobs"]
    assert job["claim_ms"] > 0 and job["client_ms"] > 0  # the job was claimed (seen running), then cancelled
    assert "Target p50" in bench.dispatch.report(results, args)


@pytest.mark.slow
def test_service_overhead_tiny(bench: ModuleType) -> None:
    args = bench.service_overhead.parse_args(["--steps", "2", "--rounds", "1"])
    results = bench.service_overhead.measure(args)
    cli, service = results["runs"]
    assert (cli["path"], service["path"]) == ("cli", "service")
    assert cli["accuracy"] == service["accuracy"]  # the same spec, seed and data: the same model
    assert "service / CLI" in bench.service_overhead.report(results, args)
