"""The core's one entry point: `train(spec, data, out_dir, ...)` dispatches to a method's loop.

The outside world talks to a run through exactly two hooks (STYLE.md 2): `progress`
receives `ProgressUpdate`s and `should_abort` is polled every step. The run folder
(`out_dir`) holds everything else; calling `train` again on the same folder resumes from
its newest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ganft_core.config import AdaptHyperparameters, SsganHyperparameters, TrainSpec
from ganft_core.data.types import Dataset
from ganft_core.errors import GanftError, SpecError


@dataclass(frozen=True)
class ProgressUpdate:
    """One report from a running trainer to whoever watches it (worker, CLI, tests)."""

    kind: Literal["step", "evaluation", "checkpoint", "log", "artifact"]
    step: int  # optimisation steps done so far
    total_steps: int  # steps the run will make in all
    metrics: dict[str, float]  # latest scalars (losses, accuracy, fid ...)
    message: str | None = None  # human text (e.g. "head replaced: 10 -> 5 classes")
    path: str | None = None  # checkpoint/artifact: a file inside the run folder, relative to it


ProgressFn = Callable[[ProgressUpdate], None]
AbortFn = Callable[[], bool]


@dataclass
class RunResult:
    """What a finished run hands back: final metrics (as in metrics.json) and artifact names in out_dir."""

    metrics: dict[str, Any]
    artifacts: list[str] = field(default_factory=list)


def pick_device(requested: str | None) -> torch.device:
    """The device to train on: `requested` if usable, else CUDA when present, else CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise SpecError(f"unknown device {requested!r}", field="device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {requested!r} asked for, but CUDA is not available here", field="device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SpecError(f"device {requested!r} does not exist", field="device")
    if device.type not in ("cpu", "cuda"):
        raise SpecError(f"device {requested!r} is not supported (use cpu or cuda)", field="device")
    return device


def train(
    spec: TrainSpec,
    data: Dataset,
    out_dir: Path,
    *,
    validation: Dataset | None = None,
    base_model: Path | None = None,
    evaluator: Path | None = None,
    inception_weights: Path | None = None,
    progress: ProgressFn | None = None,
    should_abort: AbortFn | None = None,
    device: str | None = None,
) -> RunResult:
    """Train `spec.method` on `data`, writing the run folder `out_dir`; resumes from its newest checkpoint.

    `validation` is aligned to `data` (same classes and layout); without it each method
    splits one off as its hyperparameters say. `base_model` is a model folder (see
    docs/CONTRACTS.md); `evaluator`/`inception_weights` only matter to `adapt`.
    Raises `GanftError` subclasses: `Aborted` after a checkpoint, `NanLossError` keeping the
    last good checkpoint, `DatasetError`/`ModelError`/`SpecError` for unusable inputs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_device = pick_device(device)
    report: ProgressFn = progress or (lambda _update: None)
    abort: AbortFn = should_abort or (lambda: False)
    try:
        return _dispatch(
            spec,
            data,
            out_dir,
            validation=validation,
            base_model=base_model,
            evaluator=evaluator,
            inception_weights=inception_weights,
            progress=report,
            should_abort=abort,
            device=torch_device,
        )
    except torch.OutOfMemoryError as exc:
        raise GanftError(
            f"the run ran out of {torch_device.type.upper()} memory; lower batch_size or use smaller images "
            "(the newest checkpoint is kept)",
            code="out_of_memory",
        ) from exc


def _dispatch(
    spec: TrainSpec,
    data: Dataset,
    out_dir: Path,
    *,
    validation: Dataset | None,
    base_model: Path | None,
    evaluator: Path | None,
    inception_weights: Path | None,
    progress: ProgressFn,
    should_abort: AbortFn,
    device: torch.device,
) -> RunResult:
    """Call the method's training loop (imported here: each method pulls in only its own nets)."""
    hp = spec.hyperparameters
    if spec.method == "ssgan":
        if not isinstance(hp, SsganHyperparameters):
            raise SpecError("ssgan needs SsganHyperparameters", field="hyperparameters")
        from ganft_core.data.text import TextDataset

        if isinstance(data, TextDataset):  # GAN-BERT: ganft_core/ssgan_text.py
            from ganft_core.ssgan_text import train_ssgan_text

            return train_ssgan_text(
                hp,
                data,
                out_dir,
                seed=spec.seed,
                validation=validation,  # type: ignore[arg-type]
                base_model=base_model,
                progress=progress,
                should_abort=should_abort,
                device=device,
            )
        from ganft_core.ssgan import train_ssgan

        return train_ssgan(
            hp,
            data,
            out_dir,
            seed=spec.seed,
            validation=validation,
            base_model=base_model,
            progress=progress,
            should_abort=should_abort,
            device=device,
        )
    if spec.method == "adapt":
        if not isinstance(hp, AdaptHyperparameters):
            raise SpecError("adapt needs AdaptHyperparameters", field="hyperparameters")
        from ganft_core.adapt import train_adapt

        return train_adapt(
            hp,
            data,
            out_dir,
            seed=spec.seed,
            validation=validation,
            base_model=base_model,
            evaluator=evaluator,
            inception_weights=inception_weights,
            progress=progress,
            should_abort=should_abort,
            device=device,
        )
    raise SpecError(f"unknown method {spec.method!r}", field="method")
