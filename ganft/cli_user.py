"""`ganft` user commands on the Python SDK: datasets, models, artifacts (jobs: `ganft.cli_jobs`).

Every command takes `--url` (or GANFT_URL, default http://127.0.0.1:8000) and `--key` (or
GANFT_API_KEY). Results go to stdout as an aligned table for people, or with `--json` as
JSON for scripts; messages and errors go to stderr. Exit status: 0 ok, 1 the API refused
(the problem's detail and field errors are printed), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganft.client import Client

DEFAULT_URL = "http://127.0.0.1:8000"
Handler = Callable[["Client", argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    """The options every user command shares (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=None, help=f"API base URL (env GANFT_URL, default {DEFAULT_URL})")
    parent.add_argument("--key", default=None, help="API key (env GANFT_API_KEY)")
    parent.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    # Also after the sub-command (`ganft jobs watch ID -v`); SUPPRESS keeps a `ganft -v ...` given before it.
    parent.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log at INFO (-vv DEBUG)")
    return parent


def with_client(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build the client from --url/--key, turn ApiError into a message and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from ganft.client import ApiError, ChecksumError, Client

        url = args.url or os.environ.get("GANFT_URL") or DEFAULT_URL
        key = args.key or os.environ.get("GANFT_API_KEY")
        if not key:
            sys.stderr.write("error: no API key: pass --key or set GANFT_API_KEY\n")
            return 2
        try:
            with Client(url, key) as api:
                return handler(api, args)
        except ApiError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1
        except (ChecksumError, OSError, ValueError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1

    return run


# ---------------------------------------------------------------- output


def plain(value: Any) -> Any:
    """JSON-ready form of a typed result (pydantic models, dataclasses, lists of them)."""
    from dataclasses import asdict, is_dataclass

    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(plain(value), indent=2, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as left-aligned columns under an upper-case header (missing values as '-')."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def show(value: Any, args: argparse.Namespace, columns: Sequence[str]) -> int:
    """One result or a list: JSON with --json, else a table of `columns`."""
    if args.json:
        emit_json(value)
        return 0
    items = value if isinstance(value, list) else [value]
    sys.stdout.write(table([plain(i) for i in items], columns))
    return 0


def show_detail(value: Any, args: argparse.Namespace) -> int:
    """One result as `field  value` lines (or JSON)."""
    if args.json:
        emit_json(value)
        return 0
    body = plain(value)
    width = max(len(k) for k in body)
    sys.stdout.writelines(f"{k.ljust(width)}  {_cell(v)}\n" for k, v in body.items())
    return 0


# ---------------------------------------------------------------- datasets

DATASET_COLUMNS = ("id", "name", "format", "size_bytes", "created_at")


RESUMABLE_ABOVE_MIB = 256  # files larger than this go up in parts (resumable) unless told otherwise


def _whole(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {raw!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, not {value}")
        return value

    return parse


def _datasets_upload(api: Client, args: argparse.Namespace) -> int:
    size_mib = args.path.stat().st_size / 1024**2
    if args.resume is None and size_mib <= args.resumable_above_mib:
        return show(api.upload_dataset(args.path, name=args.name, format=args.format), args, DATASET_COLUMNS)

    def started(upload_id: str) -> None:  # stderr: stdout stays the dataset (for --json and scripts)
        sys.stderr.write(f"upload {upload_id}: if it is interrupted, carry on with --resume {upload_id}\n")

    dataset = api.upload_dataset_resumable(args.path, name=args.name, format=args.format, upload_id=args.resume,
                                           part_bytes=args.part_mib * 1024**2, on_started=started)  # fmt: skip
    return show(dataset, args, DATASET_COLUMNS)


def _datasets_list(api: Client, args: argparse.Namespace) -> int:
    return show(api.list_datasets(limit=args.limit).data, args, DATASET_COLUMNS)


def _datasets_show(api: Client, args: argparse.Namespace) -> int:
    return show_detail(api.get_dataset(args.id), args)


def _datasets_delete(api: Client, args: argparse.Namespace) -> int:
    api.delete_dataset(args.id)
    if args.json:
        emit_json({"id": args.id, "deleted": True})
    else:
        sys.stderr.write(f"deleted {args.id}\n")
    return 0


# ---------------------------------------------------------------- models

MODEL_COLUMNS = ("id", "name", "kind", "role", "size_bytes", "created_at")


def _models_upload(api: Client, args: argparse.Namespace) -> int:
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    model = api.upload_model(
        config,
        weights=args.weights,
        discriminator=args.discriminator,
        program=args.program,
        tokenizer=args.tokenizer,
        name=args.name,
    )
    return show(model, args, MODEL_COLUMNS)


def _models_list(api: Client, args: argparse.Namespace) -> int:
    return show(api.list_models(limit=args.limit).data, args, MODEL_COLUMNS)


def _models_show(api: Client, args: argparse.Namespace) -> int:
    return show_detail(api.get_model(args.id), args)


def _models_delete(api: Client, args: argparse.Namespace) -> int:
    api.delete_model(args.id)
    if args.json:
        emit_json({"id": args.id, "deleted": True})
    else:
        sys.stderr.write(f"deleted {args.id}\n")
    return 0


# ---------------------------------------------------------------- artifacts


def _artifacts_list(api: Client, args: argparse.Namespace) -> int:
    return show(api.list_artifacts(args.job), args, ("name", "size_bytes", "sha256", "content_type"))


def _artifacts_download(api: Client, args: argparse.Namespace) -> int:
    """One artifact to --output (default: its name in the current folder), or all of them into --dir."""
    names = [a.name for a in api.list_artifacts(args.job)] if args.all else args.names
    if not names:
        sys.stderr.write("error: name an artifact or pass --all\n")
        return 2
    folder = Path(args.dir)
    saved = []
    for name in names:
        dest = Path(args.output) if args.output and len(names) == 1 else folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        saved.append({"name": name, "path": str(api.download_artifact(args.job, name, dest))})
        if not args.json:
            sys.stderr.write(f"{name} -> {dest} (sha256 verified)\n")
    if args.json:
        emit_json(saved)
    return 0


def add_commands(commands: Any) -> None:
    """Add `datasets`, `models` and `artifacts` to the `ganft` sub-command parser."""
    common = common_options()

    datasets = commands.add_parser("datasets", help="upload, list, show, delete datasets")
    sub = datasets.add_subparsers(dest="datasets_command", required=True)
    upload = sub.add_parser("upload", parents=[common], help="upload a .npz, .csv or imagefolder .zip")
    upload.add_argument("path", type=Path)
    upload.add_argument("--name", default=None)
    upload.add_argument("--format", choices=("npz", "csv", "imagefolder", "text"), default=None)
    upload.add_argument(
        "--resumable-above-mib",
        type=_whole(0),
        default=RESUMABLE_ABOVE_MIB,
        help=f"files larger than this (MiB) go up in resumable parts (default {RESUMABLE_ABOVE_MIB})",
    )
    upload.add_argument("--part-mib", type=_whole(1), default=64, help="part size of a resumable upload (MiB)")
    upload.add_argument("--resume", metavar="UPLOAD_ID", default=None, help="carry on an interrupted upload")
    upload.set_defaults(run=with_client(_datasets_upload))
    listing = sub.add_parser("list", parents=[common], help="your datasets, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=with_client(_datasets_list))
    for name, handler in (("show", _datasets_show), ("delete", _datasets_delete)):
        cmd = sub.add_parser(name, parents=[common], help=f"{name} one dataset")
        cmd.add_argument("id")
        cmd.set_defaults(run=with_client(handler))

    models = commands.add_parser("models", help="upload, list, show, delete models")
    sub = models.add_subparsers(dest="models_command", required=True)
    upload = sub.add_parser("upload", parents=[common], help="upload safetensors weights or a .pt2 program")
    upload.add_argument("--config", type=Path, default=None, help="model config JSON file (architecture, ...)")
    files = upload.add_mutually_exclusive_group(required=True)
    files.add_argument("--weights", type=Path, help="safetensors file")
    files.add_argument("--program", type=Path, help="torch.export .pt2 classifier")
    upload.add_argument("--discriminator", type=Path, default=None, help="a GAN's D weights (safetensors)")
    upload.add_argument("--tokenizer", type=Path, default=None, help="a text model's tokenizer.json")
    upload.add_argument("--name", default=None)
    upload.set_defaults(run=with_client(_models_upload))
    listing = sub.add_parser("list", parents=[common], help="your models, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=with_client(_models_list))
    for name, handler in (("show", _models_show), ("delete", _models_delete)):
        cmd = sub.add_parser(name, parents=[common], help=f"{name} one model")
        cmd.add_argument("id")
        cmd.set_defaults(run=with_client(handler))

    artifacts = commands.add_parser("artifacts", help="a job's output files")
    sub = artifacts.add_subparsers(dest="artifacts_command", required=True)
    cmd = sub.add_parser("list", parents=[common], help="name, size, sha256 of each file")
    cmd.add_argument("job")
    cmd.set_defaults(run=with_client(_artifacts_list))
    cmd = sub.add_parser("download", parents=[common], help="download (resumable, sha256-verified)")
    cmd.add_argument("job")
    cmd.add_argument("names", nargs="*", help="artifact names (e.g. model.pt2)")
    cmd.add_argument("--all", action="store_true", help="every artifact of the job")
    cmd.add_argument("-o", "--output", default=None, help="file name (one artifact only)")
    cmd.add_argument("--dir", default=".", help="folder for the files (default: current)")
    cmd.set_defaults(run=with_client(_artifacts_download))
