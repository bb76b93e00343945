"""bench/inspect_memory.py's tiny mode: it runs end to end and measures every child (never asserts on figures)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def inspect_memory() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))  # the script imports `common` as a sibling
    try:
        import inspect_memory

        yield inspect_memory
    finally:
        sys.path.remove(str(BENCH))


def test_inspect_memory_tiny(inspect_memory: ModuleType) -> None:
    """2 MiB files: both cases, the three runs each (one-example baseline, this tree, np.load + astype)."""
    args = inspect_memory.parse_args(["--mib", "2"])
    results = inspect_memory.measure(args)
    assert [c["case"] for c in results["cases"]] == ["images", "features"]
    for case in results["cases"]:
        assert set(case["runs"]) == {"baseline", "this tree", "np.load + astype"}
        for run in case["runs"].values():
            assert run["exit"] == 0 and run["peak_mib"] > 0  # each child ran and the launcher read its ru_maxrss
    assert "Target: growth < 256 MiB" in inspect_memory.report(results, args)
