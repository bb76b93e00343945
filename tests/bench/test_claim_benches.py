"""The claim benchmarks' tiny modes (bench/claim_latency.py, bench/claim_pause_resume.py), end to end against
real parts; they assert on what the benchmarks report, never on times."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import claim_latency
        import claim_pause_resume

        namespace = ModuleType("bench")
        namespace.__dict__.update(claim_latency=claim_latency, claim_pause_resume=claim_pause_resume)
        yield namespace
    finally:
        sys.path.remove(str(BENCH))


def test_claim_latency_tiny(bench: ModuleType) -> None:
    args = bench.claim_latency.parse_args(["--jobs", "200", "--tenants", "10", "--trials", "3", "--sqlite"])
    results = bench.claim_latency.measure(args)  # asserts itself that every priority claim took the same best job
    assert set(results["runs"]) == {"postgresql", "postgresql (server execution only)", "sqlite"}
    assert all({"claim_job", "claim_next"} <= set(run) for run in results["runs"].values())
    assert "Target p50" in bench.claim_latency.report(results, args)


@pytest.mark.slow
def test_claim_pause_resume_tiny(bench: ModuleType) -> None:
    args = bench.claim_pause_resume.parse_args(["--cycles", "1"])
    results = bench.claim_pause_resume.measure(args)
    (cycle,) = results["cycles"]
    assert cycle["resume_training_s"] >= cycle["resume_running_s"] > 0 and results["cancel_s"] > 0
    assert "POST pause" in bench.claim_pause_resume.report(results, args)
