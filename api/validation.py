"""Dataset validation: `python -m ganft_core inspect PATH --format F` in a fenced subprocess.

Uploaded archives may be hostile (zip bombs, huge images, malformed arrays), so the API
never opens them itself: a short-lived child process checks the dataset under a wall-clock
timeout and an address-space limit (RLIMIT_AS), and prints either the dataset's summary
or the loader's error as JSON. The API process stays small and never imports numpy. The
child streams the dataset (`ganft_core.data.inspect_dataset`): its memory stays within
a few tens of MiB above its imports whatever the upload's size (bench/inspect_memory.py),
so the limit refuses hostile files, not big valid ones.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from api.problems import Problem, invalid

log = logging.getLogger(__name__)

EXIT_DATASET_ERROR = 2  # ganft_core's CLI: stdout holds {"error": {...}}
_STDERR_TAIL_CHARS = 500


def _core_root() -> str:
    """The folder holding the `ganft_core` package, for the child's PYTHONPATH."""
    spec = find_spec("ganft_core")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ganft_core is not installed next to the API")
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


# The child limits its own address space before importing anything heavy, then runs
# `python -m ganft_core ...` (no preexec_fn: forking a threaded server with one is unsafe).
_CHILD = (
    "import resource, runpy, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "sys.argv = ['ganft_core', *sys.argv[2:]]\n"
    "runpy.run_module('ganft_core', run_name='__main__', alter_sys=True)\n"
)


def inspector_command(path: Path, fmt: str, *, max_memory_bytes: int) -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment (what `inspect_dataset` runs; the benchmark runs it too)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": _core_root(),
        # One BLAS thread: each thread reserves address space that counts against RLIMIT_AS.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [sys.executable, "-c", _CHILD, str(max_memory_bytes), "inspect", str(path), "--format", fmt]
    return command, env


def inspect_dataset(path: Path, fmt: str, *, timeout_s: float, max_memory_bytes: int) -> dict[str, Any]:
    """The dataset's stats (`dataset_stats` of ganft_core), or a 422 Problem with the loader's message.

    Blocking: call it from a threadpool.
    """
    command, env = inspector_command(path, fmt, max_memory_bytes=max_memory_bytes)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise invalid(
            "file", f"checking the dataset took longer than {timeout_s:g} s; upload a smaller dataset"
        ) from None
    if done.returncode == 0:
        try:
            stats: dict[str, Any] = json.loads(done.stdout)
            return stats
        except json.JSONDecodeError:
            log.error("dataset inspector printed no JSON: %r", done.stdout[:_STDERR_TAIL_CHARS])
            raise Problem(500, "the dataset inspector failed; the error was logged") from None
    if done.returncode == EXIT_DATASET_ERROR:
        try:
            error = json.loads(done.stdout)["error"]
            message = str(error["message"])
        except (json.JSONDecodeError, KeyError, TypeError):
            message = "the dataset could not be read"
            error = {}
        field = error.get("field") or "file"
        field = field if field in ("file", "format") else f"file.{field}"
        raise invalid(field, message, detail=f"invalid dataset: {message}")
    # Killed (memory limit, signal) or crashed: the file is unusable within the limits.
    log.warning(
        "dataset inspector exited with %s: %s",
        done.returncode,
        done.stderr.decode("utf-8", "replace")[-_STDERR_TAIL_CHARS:],
    )
    raise invalid(
        "file",
        "the dataset could not be checked within the memory allowed for checking it "
        f"({max_memory_bytes // 1024**2} MiB); upload a smaller or simpler dataset",
    )
