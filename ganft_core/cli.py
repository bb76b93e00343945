"""`python -m ganft_core`: inspect a dataset, or run one training job from a spec file.

    python -m ganft_core inspect PATH [--format F]
    python -m ganft_core train SPEC.json --data PATH [--format F] [--validation PATH]
        [--base-model DIR] [--evaluator DIR] [--inception PATH] --out RUN_DIR [--device D]

stdout carries one JSON document: the dataset summary (`dataset_stats` plus `format`), the
run's final metrics, or
`{"error": {code, message[, field]}}` with exit status 2. Progress and logs go to stderr.
`inspect` never imports torch (the API runs it in a small, short-lived subprocess); `train`
imports the trainer only once the spec and data have been checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ganft_core.config import TrainSpec
from ganft_core.data import FORMATS, align_validation, dataset_stats, detect_format, inspect_dataset, load_dataset
from ganft_core.errors import DatasetError, GanftError, SpecError

if TYPE_CHECKING:
    from tqdm import tqdm

    from ganft_core.train import ProgressUpdate

log = logging.getLogger(__name__)

EXIT_ERROR = 2  # a GanftError: the JSON on stdout says what


def _emit(document: dict[str, Any]) -> None:
    print(json.dumps(document, default=_jsonable), flush=True)  # noqa: T201 -- the CLI's one stdout document


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, and paths, as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_spec(path: Path) -> TrainSpec:
    """The TrainSpec in a JSON file, or SpecError naming the first bad field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec file {path}: {exc}") from exc
    try:
        return TrainSpec.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        if loc and loc[0] not in TrainSpec.model_fields:
            # TrainSpec validates hyperparameters in a before-validator, whose errors lose that prefix.
            loc = ("hyperparameters", *loc)
        where = ".".join(str(part) for part in loc)
        raise SpecError(f"{where or 'spec'}: {first['msg']}", field=where or None) from exc


class _Progress:
    """A tqdm bar on stderr driven by the trainer's progress callback; the latest metrics as postfix."""

    def __init__(self) -> None:
        from tqdm import tqdm  # only `train` needs it

        self._bar: tqdm[Any] = tqdm(total=None, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self._metrics: dict[str, float] = {}

    def __call__(self, update: ProgressUpdate) -> None:
        bar = self._bar
        if update.step < bar.n:
            bar.reset(total=update.total_steps)  # a new phase (e.g. the supervised control) starts over
        elif update.total_steps and bar.total != update.total_steps:
            bar.total = update.total_steps
        bar.update(update.step - bar.n)
        scalars = {k: float(v) for k, v in update.metrics.items() if isinstance(v, int | float)}
        if scalars:
            self._metrics.update(scalars)
            bar.set_postfix({k: f"{v:.4g}" for k, v in self._metrics.items()}, refresh=False)
        if update.kind == "evaluation":
            shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
            bar.write(f"step {update.step}/{update.total_steps} evaluation: {shown}", file=sys.stderr)
        if update.message:
            bar.write(f"[{update.kind}] {update.message}", file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


class _StopOnInterrupt:
    """The first Ctrl-C asks the trainer to stop (it checkpoints, then raises Aborted); a second one kills."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        log.warning("interrupt: stopping after the next checkpoint (press Ctrl-C again to kill)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _inspect(args: argparse.Namespace) -> int:
    try:
        fmt = args.format or detect_format(args.path)
        stats = inspect_dataset(args.path, fmt)  # dataset_stats(load_dataset(...)), streamed
    except MemoryError:
        raise DatasetError("the dataset does not fit in the memory allowed for checking it") from None
    _emit({**stats, "format": fmt})  # the format, so the caller can store what was detected
    return 0


def _train(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    data = load_dataset(args.data, args.format)
    validation = align_validation(data, load_dataset(args.validation, args.format)) if args.validation else None
    log.info("data: %s", json.dumps(dataset_stats(data)))

    from ganft_core.train import train  # torch loads here, after the cheap checks passed

    progress = _Progress()
    try:
        with _StopOnInterrupt() as stop:
            result = train(
                spec,
                data,
                args.out,
                validation=validation,
                base_model=args.base_model,
                evaluator=args.evaluator,
                inception_weights=args.inception,
                progress=progress,
                should_abort=stop,
                device=args.device,
            )
    except MemoryError:
        raise GanftError("the run ran out of memory", code="out_of_memory") from None
    finally:
        progress.close()
    _emit({"metrics": result.metrics, "artifacts": result.artifacts, "run_dir": str(args.out)})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ganft_core", description="ganft's GAN fine-tuning core.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="check a dataset and print its summary as JSON")
    inspect.add_argument("path", type=Path, metavar="PATH", help="the dataset file")
    inspect.add_argument("--format", choices=FORMATS, help="dataset format (default: detected)")
    inspect.set_defaults(run=_inspect)

    train = commands.add_parser("train", help="run one training job and print its final metrics as JSON")
    train.add_argument("spec", type=Path, metavar="SPEC.json", help="JSON file with method, hyperparameters and seed")
    train.add_argument("--data", type=Path, required=True, metavar="PATH", help="the training dataset file")
    train.add_argument("--format", choices=FORMATS, help="format of the dataset files (default: detected)")
    train.add_argument(
        "--validation", type=Path, metavar="PATH", help="validation dataset (default: split off the data)"
    )
    train.add_argument("--base-model", type=Path, metavar="DIR", help="folder with the pretrained model to fine-tune")
    train.add_argument("--evaluator", type=Path, metavar="DIR", help="folder with a classifier for FID/KID features")
    train.add_argument("--inception", type=Path, metavar="PATH", help="local Inception weights for FID/KID")
    train.add_argument(
        "--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (resumes from its checkpoints)"
    )
    train.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: best available)")
    train.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except GanftError as exc:
        _emit({"error": exc.to_dict()})
        return EXIT_ERROR
    return code
