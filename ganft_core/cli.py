"""`python -m ganft_core`: inspect a dataset, or run one training job from a spec file.

    python -m ganft_core inspect PATH [--format F]
    python -m ganft_core train SPEC.json --data PATH [--format F] [--validation PATH]
        [--base-model DIR|FILE.pt2 [--class-names A,B,...]] [--evaluator DIR] [--inception PATH]
        --out RUN_DIR [--stored DIR] [--device D] [--json]

`inspect` prints one JSON document on stdout: the dataset summary (`dataset_stats` plus `format`).
`train` shows a progress bar on stderr and prints the run's headline on stdout (for ssgan the GAN's
accuracy and F1 against the supervised control and the verdict; for adapt FID/KID); `--json`
prints the whole metrics.json instead. Images and feature data are trained from their memory-mapped
stored form (`ganft_core.data.stored`, under RUN_DIR/stored or `--stored`), as the worker does. An
error the user can fix (a wrong path, a bad spec, data or model) is one line on stderr and exit
status 2, plus `{"error": {code, message[, field]}}` on stdout where stdout is JSON (`inspect`,
`train --json`). `inspect` never imports torch (the API runs it in a small, short-lived
subprocess); `train` imports the trainer only once the spec, the paths and the data have been
checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from pydantic import ValidationError

from ganft_core.config import TrainSpec
from ganft_core.data import (
    FORMATS,
    Dataset,
    align_validation,
    dataset_stats,
    detect_format,
    inspect_dataset,
    load_dataset,
)
from ganft_core.errors import DatasetError, GanftError, ModelError, SpecError

log = logging.getLogger(__name__)

EXIT_ERROR = 2  # a GanftError or a wrong path: one line on stderr says what


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
    """The TrainSpec in a JSON file, or SpecError naming the file and the first bad field."""
    need_file(path, "SPEC.json", "spec file (JSON with method, hyperparameters and seed)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"SPEC.json: {path} is not UTF-8 text: {exc.reason}", field="spec") from None
    try:
        return TrainSpec.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        if loc and loc[0] not in TrainSpec.model_fields:
            # TrainSpec validates hyperparameters in a before-validator, whose errors lose that prefix.
            loc = ("hyperparameters", *loc)
        where = ".".join(str(part) for part in loc)
        said = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise SpecError(f"{path}: {where or 'spec'}: {said}", field=where or None) from exc


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


# ---------------------------------------------------------------- paths, checked before anything runs


def _path_error(flag: str, message: str, kind: type[GanftError] = SpecError) -> GanftError:
    """`--flag: message`, with the flag as the field (codes: invalid_spec, invalid_dataset, invalid_model)."""
    field = "spec" if flag == "SPEC.json" else flag.lstrip("-").replace("-", "_")
    return kind(f"{flag}: {message}", field=field)


def need_file(path: Path, flag: str, what: str, kind: type[GanftError] = SpecError) -> Path:
    """`path` if it is a readable file, else a one-line error naming `flag`."""
    if not path.exists():
        raise _path_error(flag, f"no such file: {path}", kind)
    if path.is_dir():
        raise _path_error(flag, f"{path} is a folder; give the {what}", kind)
    if not os.access(path, os.R_OK):
        raise _path_error(flag, f"cannot read {path} (permission denied)", kind)
    return path


@dataclass(frozen=True)
class ProgramFile:
    """A `.pt2` given as a model, with the class names its outputs stand for."""

    path: Path
    class_names: list[str]


def parse_class_names(text: str) -> list[str]:
    """`--class-names cat,dog,bird` as a list: no empty or repeated names."""
    names = [n.strip() for n in text.split(",")]
    if not names or any(not n for n in names):
        raise _path_error("--class-names", f"expected comma-separated names such as cat,dog, got {text!r}")
    if len(set(names)) != len(names):
        raise _path_error("--class-names", f"a name is repeated in {text!r}")
    return names


def _sidecar_names(sidecar: Path, flag: str) -> list[str]:
    try:
        config = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _path_error(flag, f"cannot read {sidecar}: {exc}", ModelError) from None
    names = config.get("class_names") if isinstance(config, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        example = '{"class_names": ["cat", "dog"]}'
        raise _path_error(flag, f"{sidecar} has no class_names list (e.g. {example})", ModelError)
    return names


def model_source(path: Path, flag: str, class_names: list[str] | None = None) -> Path | ProgramFile:
    """What `--base-model`/`--evaluator` names: a model folder (with model.json), or a `.pt2` program file
    whose class names come from `class_names` or from a sidecar JSON beside it (`X.json` for `X.pt2`).

    Anything else is a one-line error that says what to give instead.
    """
    if not path.exists():
        raise _path_error(flag, f"no such file or folder: {path}", ModelError)
    if path.is_dir():
        if class_names is not None:
            raise _path_error("--class-names", f"only for a .pt2 file; the model.json in {path} names the classes")
        if not (path / "model.json").is_file():
            programs = sorted(p.name for p in path.glob("*.pt2"))
            hint = f"; or pass the program itself: {flag} {path / programs[0]}" if programs else ""
            raise _path_error(
                flag,
                f"{path} has no model.json (a model folder holds model.json with model.safetensors or model.pt2){hint}",
                ModelError,
            )
        return path
    if path.suffix != ".pt2":
        folder = path.parent if path.name == "model.json" or path.suffix == ".safetensors" else None
        hint = f": give its folder, {folder}" if folder is not None else ""
        raise _path_error(
            flag,
            f"{path} is a file, not a model folder (model.json + model.safetensors) or a .pt2 program{hint}",
            ModelError,
        )
    if class_names is not None:
        return ProgramFile(path, class_names)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise _path_error(
            flag,
            f"{path} is a program without class names: pass --class-names A,B,... or put "
            f'{sidecar.name} with {{"class_names": [...]}} beside it',
            ModelError,
        )
    return ProgramFile(path, _sidecar_names(sidecar, flag))


def stage_program(program: ProgramFile, folder: Path) -> Path:
    """A model folder for `program` (model.pt2 + a program model.json) that the trainers load as any other;
    kept in the run folder, so the run says what it started from and a rerun resumes with the same one."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.pt2"
    if not (target.exists() and os.path.samefile(target, program.path)):
        tmp = folder / "model.pt2.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(program.path, tmp)  # no copy where the file system allows
        except OSError:
            shutil.copyfile(program.path, tmp)
        os.replace(tmp, target)
    config = {"format": "program", "class_names": program.class_names, "source": str(program.path.resolve())}
    (folder / "model.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def _load(path: Path, fmt: str | None, flag: str, stored: Path) -> Dataset:
    """The dataset at `path`, memory-mapped from its stored form in `stored` (decoded there once, reused while the
    file is unchanged); its errors name the flag and the file (`--data: x.csv: no 'label' column`)."""
    try:
        return load_dataset(path, fmt, stored=stored)
    except DatasetError as exc:
        raise DatasetError(f"{flag}: {path}: {exc.message}", field=flag.lstrip("-")) from None


def stored_folder(root: Path, role: str, path: Path) -> Path:
    """Where `--data`/`--validation` (`role`) is stored under `root`: one folder per role and file name, so that
    runs sharing a `--stored` folder reuse each other's stored forms, and a training and validation file of the
    same name do not replace each other's."""
    return root / f"{role}-{path.name}.stored"


def check_out(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise _path_error("--out", f"{path} is a file; the run folder is a new folder or an earlier run's")
    return path


# ---------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    dataset_file = "dataset file (.npz, .csv or an imagefolder .zip)"
    need_file(args.data, "--data", dataset_file, DatasetError)
    if args.validation is not None:
        need_file(args.validation, "--validation", dataset_file, DatasetError)
    names = parse_class_names(args.class_names) if args.class_names is not None else None
    if names is not None and args.base_model is None:
        raise _path_error("--class-names", "names the classes of a .pt2 --base-model; no --base-model was given")
    base = model_source(args.base_model, "--base-model", names) if args.base_model is not None else None
    evaluator = model_source(args.evaluator, "--evaluator") if args.evaluator is not None else None
    if args.inception is not None:
        need_file(args.inception, "--inception", "Inception weights file", ModelError)
    out = check_out(args.out)
    # Like the worker's child, training reads the memory-mapped stored form (issue 10): RAM holds the labels, not
    # the examples. Decoding it costs as much disk as the data again, in the run folder unless --stored says.
    stored = args.stored if args.stored is not None else out / "stored"
    new_out = not out.exists()
    try:
        data = _load(args.data, args.format, "--data", stored_folder(stored, "data", args.data))
        validation = align_validation(data, _load(args.validation, args.format, "--validation",
                                                  stored_folder(stored, "validation", args.validation))) if (
            args.validation) else None  # fmt: skip
    except GanftError:
        if new_out:  # a refused dataset leaves no run folder behind, as before there was a stored form
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("data: %s", json.dumps(dataset_stats(data)))
    log.info("data: stored form at %s", (data.storage or {}).get("folder"))

    from ganft_core.cli_report import headline
    from ganft_core.progress_view import Progress
    from ganft_core.train import train  # torch loads here, after the cheap checks passed

    if isinstance(base, ProgramFile):
        base = stage_program(base, out / "base-model")
    if isinstance(evaluator, ProgramFile):
        evaluator = stage_program(evaluator, out / "evaluator")
    progress = Progress()
    try:
        with _StopOnInterrupt() as stop:
            result = train(
                spec,
                data,
                out,
                validation=validation,
                base_model=base,
                evaluator=evaluator,
                inception_weights=args.inception,
                progress=progress,
                should_abort=stop,
                device=args.device,
            )
    except MemoryError:
        raise GanftError("the run ran out of memory", code="out_of_memory") from None
    finally:
        progress.close()
    if args.json:
        _emit({"metrics": result.metrics, "artifacts": result.artifacts, "run_dir": str(out)})
    else:
        sys.stdout.write("\n".join(headline(spec.method, result.metrics, out)) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ganft_core", description="ganft's GAN fine-tuning core.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="check a dataset and print its summary as JSON")
    inspect.add_argument("path", type=Path, metavar="PATH", help="the dataset file")
    inspect.add_argument("--format", choices=FORMATS, help="dataset format (default: detected)")
    inspect.set_defaults(run=_inspect, json=True)

    train = commands.add_parser("train", help="run one training job; print its headline (or --json: all metrics)")
    train.add_argument("spec", type=Path, metavar="SPEC.json", help="JSON file with method, hyperparameters and seed")
    train.add_argument("--data", type=Path, required=True, metavar="PATH", help="the training dataset file")
    train.add_argument("--format", choices=FORMATS, help="format of the dataset files (default: detected)")
    train.add_argument(
        "--validation", type=Path, metavar="PATH", help="validation dataset (default: split off the data)"
    )
    train.add_argument(
        "--base-model", type=Path, metavar="DIR|FILE.pt2",
        help="the pretrained model: a folder (model.json + model.safetensors) or a torch.export .pt2 classifier",
    )  # fmt: skip
    train.add_argument(
        "--class-names", metavar="A,B,...",
        help="class names of a .pt2 --base-model, in output order (default: from X.json beside X.pt2)",
    )  # fmt: skip
    train.add_argument("--evaluator", type=Path, metavar="DIR", help="folder with a classifier for FID/KID features")
    train.add_argument("--inception", type=Path, metavar="PATH", help="local Inception weights for FID/KID")
    train.add_argument(
        "--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (resumes from its checkpoints)"
    )
    train.add_argument(
        "--stored", type=Path, metavar="DIR",
        help="folder for the datasets' memory-mapped stored form (as much disk as the data; reused while a file is "
             "unchanged; default: RUN_DIR/stored)",
    )  # fmt: skip
    train.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: best available)")
    train.add_argument("--json", action="store_true", help="print the final metrics (and errors) as JSON on stdout")
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
        sys.stderr.write(f"error: {exc.message}\n")
        if args.json:
            _emit({"error": exc.to_dict()})
        return EXIT_ERROR
    return code
