"""The training process: started with (billiard's) multiprocessing `spawn` by worker/runner.py.

Only this process imports torch and touches CUDA (a forked CUDA context is unusable, and the
Celery worker process stays small). It talks to its parent through exactly the core's two
hooks: every `ProgressUpdate` goes onto a queue, and the abort check reads an Event the parent
sets (cancel, max runtime, shutdown). The last message on the queue is the outcome:

    ("progress", {kind, step, total_steps, metrics, message, path})   any number
    ("result",   {metrics, artifacts})                                  on success
    ("error",    {code, message[, field]})                              a GanftError, OOM, or a bug
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class ChildArgs:
    """Everything the child needs, as plain picklable values (paths inside the run folder)."""

    spec: dict[str, Any]  # TrainSpec fields: method, hyperparameters, seed
    data: str
    data_format: str
    out_dir: str
    validation: str | None = None
    validation_format: str | None = None
    base_model: str | None = None  # model folder (docs/CONTRACTS.md)
    evaluator: str | None = None
    inception_weights: str | None = None
    device: str | None = None  # None: CUDA when present, else CPU
    torch_threads: int = 0  # intra-op CPU threads; 0 = half the CPUs (the API and the worker share the host)


def main(args: ChildArgs, queue: Any, abort: Any) -> None:
    """Process entry point: train, then put the outcome on `queue`; `abort` is an Event. Never raises."""
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parent = os.getppid()
    try:
        outcome = ("result", _train(args, queue, lambda: abort.is_set() or os.getppid() != parent))
    except BaseException as exc:  # every failure, even a bug, becomes an error message for the parent
        outcome = ("error", _error_dict(exc))
    queue.put(outcome)
    queue.close()
    queue.join_thread()  # flush before exiting, or the parent may never see the outcome
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (seconds with torch loaded): everything we owe the parent is sent.
    os._exit(0)


def _train(args: ChildArgs, queue: Any, should_abort: Any) -> dict[str, Any]:
    import torch

    from ganft_core.config import TrainSpec
    from ganft_core.data import align_validation, load_dataset, stored_beside
    from ganft_core.train import ProgressUpdate, train

    # An oversubscribed CPU makes torch's spinning worker threads crawl (measured 5-10x slower per
    # step with 2 threads on a busy 2-core host, bench/RESULTS.md): leave room for the API and others.
    torch.set_num_threads(args.torch_threads or max(1, (os.cpu_count() or 2) // 2))
    spec = TrainSpec.model_validate(args.spec)
    # Each dataset is decoded into its memory-mapped stored form beside the staged file, in the run folder
    # (as much disk again; removed with the folder): RAM holds the labels, not the examples (issue 10).
    data_path = Path(args.data)
    data = load_dataset(data_path, args.data_format, stored=stored_beside(data_path))
    validation = None
    if args.validation is not None:
        val_path = Path(args.validation)
        validation = align_validation(
            data, load_dataset(val_path, args.validation_format, stored=stored_beside(val_path))
        )

    def report(update: ProgressUpdate) -> None:
        queue.put(("progress", dataclasses.asdict(update)))

    result = train(
        spec,
        data,
        Path(args.out_dir),
        validation=validation,
        base_model=Path(args.base_model) if args.base_model else None,
        evaluator=Path(args.evaluator) if args.evaluator else None,
        inception_weights=Path(args.inception_weights) if args.inception_weights else None,
        progress=report,
        should_abort=should_abort,
        device=args.device,
    )
    return {"metrics": result.metrics, "artifacts": list(result.artifacts)}


def _error_dict(exc: BaseException) -> dict[str, str]:
    from pydantic import ValidationError

    from ganft_core.errors import GanftError

    if isinstance(exc, GanftError):
        return exc.to_dict()
    if isinstance(exc, ValidationError):  # the API validates specs at POST; a stored one may predate a change
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return {"code": "invalid_spec", "message": f"{where}: {first['msg']}" if where else first["msg"]}
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return {"code": "out_of_memory", "message": f"training ran out of memory: {_first_line(exc)}"}
    # A bug, not the user's doing: the traceback goes to the worker's log, the job gets one line.
    log.error("training crashed:\n%s", "".join(traceback.format_exception(exc)))
    return {"code": "internal", "message": f"training crashed ({type(exc).__name__}); see the worker log"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a killed worker leaves no
    orphan holding the GPU (elsewhere the abort check notices the parent is gone)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
