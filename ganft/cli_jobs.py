"""`ganft jobs ...`: create, list, show, cancel, pause, resume, checkpoints, fork, export, watch (live progress
bar) and logs.

`jobs watch` exits 0 when the job succeeds, 3 when it fails and 4 when it is cancelled, so a
script can `ganft jobs watch $JOB && ganft artifacts download $JOB model.pt2`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganft.cli_user import common_options, emit_json, plain, show, show_detail, with_client
from ganft_core.progress_view import PLAIN_EVERY_S, figures_text

if TYPE_CHECKING:
    from ganft.client import Client
    from ganft.client_types import Job

JOB_COLUMNS = ("id", "method", "status", "priority", "step", "total_steps", "created_at")
PRIORITY_CHOICES = ("low", "normal", "high")  # a free worker takes the highest first, FIFO within one
EXIT_FAILED = 3
EXIT_CANCELLED = 4


def parse_pairs(pairs: list[str], *, json_values: bool) -> dict[str, Any]:
    """`key=value` arguments as a dict; values parsed as JSON when `json_values` (else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        if json_values:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value  # a bare word: a string
        else:
            out[key] = value
    return out


def job_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The JobCreate body: `--spec` file (if any) overridden by the flags given."""
    spec: dict[str, Any] = json.loads(Path(args.spec).read_text()) if args.spec else {}
    flags = {
        "method": args.method,
        "dataset_id": args.dataset,
        "validation_dataset_id": args.validation,
        "base_model_id": args.base_model,
        "evaluator_model_id": args.evaluator,
        "seed": args.seed,
        "max_runtime_s": args.max_runtime,
        "priority": args.priority,
        "webhook_url": args.webhook_url,
    }
    spec.update({k: v for k, v in flags.items() if v is not None})
    if args.hp:
        spec["hyperparameters"] = {**spec.get("hyperparameters", {}), **parse_pairs(args.hp, json_values=True)}
    if args.metadata:
        spec["metadata"] = {**spec.get("metadata", {}), **parse_pairs(args.metadata, json_values=False)}
    if "method" not in spec or "dataset_id" not in spec:
        raise ValueError("a job needs --method and --dataset (or a --spec file with them)")
    return spec


def _row(job: Job) -> dict[str, Any]:
    return {**plain(job), "step": job.progress.step, "total_steps": job.progress.total_steps}


def _create(api: Client, args: argparse.Namespace) -> int:
    job = api.create_job(job_spec(args), idempotency_key=args.idempotency_key)
    return _made(job, args, f"created {job.method} job {job.id} ({job.status})")


def _list(api: Client, args: argparse.Namespace) -> int:
    page = api.list_jobs(status=args.status, limit=args.limit)
    if args.json:
        emit_json(page.data)
        return 0
    return show([_row(j) for j in page.data], args, JOB_COLUMNS)


def _show(api: Client, args: argparse.Namespace) -> int:
    return show_detail(api.get_job(args.id), args)


def _made(job: Job, args: argparse.Namespace, said: str) -> int:
    """A command that made a job: its id on stdout (for `JOB=$(...)`), what happened and how to follow it on
    stderr (two lines within 80 columns); `--json`: the job."""
    if args.json:
        emit_json(job)
    else:
        sys.stdout.write(f"{job.id}\n")
        sys.stderr.write(f"{said}\nfollow it: ganft jobs watch {job.id}\n")
    return 0


def _changed(job: Job, args: argparse.Namespace) -> int:
    """cancel, pause, resume: the job as it is now (a table row, or `--json` the job)."""
    return show(job if args.json else _row(job), args, JOB_COLUMNS)


def _cancel(api: Client, args: argparse.Namespace) -> int:
    return _changed(api.cancel_job(args.id), args)


def _pause(api: Client, args: argparse.Namespace) -> int:
    return _changed(api.pause_job(args.id), args)


def _resume(api: Client, args: argparse.Namespace) -> int:
    return _changed(api.resume_job(args.id), args)


def _fork(api: Client, args: argparse.Namespace) -> int:
    """`jobs fork JOB --step N [--hp k=v ...]`: prints the new job's id."""
    fields: dict[str, Any] = {} if args.seed is None else {"seed": args.seed}
    if args.priority is not None:
        fields["priority"] = args.priority
    if args.metadata:
        fields["metadata"] = parse_pairs(args.metadata, json_values=False)
    hp = parse_pairs(args.hp, json_values=True)
    job = api.fork_job(args.id, args.step, hyperparameters=hp, **fields)
    return _made(job, args, f"forked {args.id} at step {args.step} as {job.id}")


def _export(api: Client, args: argparse.Namespace) -> int:
    """`jobs export JOB --step N`: prints the export job's id (its output_model_id is the model)."""
    job = api.export_checkpoint(args.id, args.step)
    return _made(job, args, f"exporting step {args.step} of {args.id} in job {job.id}")


CHECKPOINT_COLUMNS = ("step", "created_at", "size_bytes", "evaluated_at", "figures", "best")


def _checkpoints(api: Client, args: argparse.Namespace) -> int:
    """The job's kept checkpoints; with --download STEP, that checkpoint to --out (default ckpt-STEP.pt)."""
    if args.download is not None:
        dest = args.out or Path(f"ckpt-{args.download}.pt")
        path = api.download_checkpoint(args.id, args.download, dest)
        sys.stderr.write(f"saved checkpoint {args.download} of {args.id} to {path}\n")
        return 0
    found = api.list_checkpoints(args.id)
    if args.json:
        emit_json(found)
        return 0
    rows = []
    for c in found:
        evaluation = c.evaluation or {}
        metrics = evaluation.get("metrics") or {}
        figures = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in ("accuracy", "macro_f1", "fid", "kid"))
        rows.append({**plain(c), "evaluated_at": evaluation.get("step"), "figures": figures, "best": c.best or None})
    return show(rows, args, CHECKPOINT_COLUMNS)


def _exit_code(status: str) -> int:
    return {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(status, 1)


def _seconds(text: str) -> float:
    """`--every`: seconds between 0 and 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {value:g}")
    return value


def _watch(api: Client, args: argparse.Namespace) -> int:
    """A progress bar on stderr fed by the job's events (plain lines off a terminal), then the summary on
    stdout: the job's figures (ssgan against its control and the verdict; adapt FID/KID), the output
    model and the download command. `--json`: no bar, the finished job as JSON."""
    from ganft.cli_watch import ProgressView, follow, summary_lines

    if args.json:
        for _ in api.watch(args.id):  # until the terminal status event
            pass
        job = api.get_job(args.id)
        emit_json(job)
        return _exit_code(job.status)
    with ProgressView(sys.stderr, every_s=args.every) as view:
        job = follow(api, args.id, view)
    sys.stdout.write("\n".join(summary_lines(job)) + "\n")
    return _exit_code(job.status)


def _logs(api: Client, args: argparse.Namespace) -> int:
    """Status changes, evaluations and log lines, in order (`--follow`: until the job ends)."""
    events = api.watch(args.id) if args.follow else iter(api.list_events(args.id))
    for event in events:
        if args.json:
            sys.stdout.write(json.dumps({"seq": event.seq, "type": event.type, "data": event.data}) + "\n")
            continue
        data = event.data
        if event.type == "status":
            error = data.get("error") or {}
            text = f"status {data.get('status')}" + (f": {error.get('code')}: {error.get('message')}" if error else "")
        elif event.type == "log":
            text = f"step {data.get('step')}: {data.get('message')}"
        elif event.type == "evaluation":
            text = f"evaluation at step {data.get('step')}: {figures_text(data.get('metrics') or {})}"
        else:
            continue  # progress and checkpoint events are what `watch` shows
        sys.stdout.write(f"{event.seq:>5}  {text}\n")
    return 0


def add_commands(commands: Any) -> None:
    """Add `jobs` to the `ganft` sub-command parser."""
    common = common_options()
    jobs = commands.add_parser("jobs", help="create, list, show, cancel, pause, resume, watch training jobs")
    sub = jobs.add_subparsers(dest="jobs_command", required=True)

    create = sub.add_parser("create", parents=[common], help="create a training job; prints its id")
    create.add_argument("--spec", type=Path, default=None, help="a JobCreate JSON file; flags override it")
    create.add_argument("--method", choices=("ssgan", "adapt"), default=None)
    create.add_argument("--dataset", default=None, help="dataset id")
    create.add_argument("--validation", default=None, help="validation dataset id")
    create.add_argument("--base-model", default=None, help="model id to start from")
    create.add_argument("--evaluator", default=None, help="adapt: classifier id for FID/KID")
    create.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter (JSON value)")
    create.add_argument("--seed", type=int, default=None)
    create.add_argument("--max-runtime", type=int, default=None, metavar="SECONDS")
    create.add_argument("--priority", choices=PRIORITY_CHOICES, default=None, help="queue order (default: normal)")
    create.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--webhook-url", default=None, help="POSTed (signed) when the job ends")
    create.add_argument("--idempotency-key", default=None, help="default: a fresh one")
    create.set_defaults(run=with_client(_create))

    listing = sub.add_parser("list", parents=[common], help="your jobs, newest first")
    listing.add_argument("--status", default=None)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=with_client(_list))

    for name, handler, text in (
        ("show", _show, "one job with progress, error and result"),
        ("cancel", _cancel, "cancel a job"),
        ("pause", _pause, "pause a job (it checkpoints and frees its worker)"),
        ("resume", _resume, "resume a paused job from its checkpoint"),
        ("checkpoints", _checkpoints, "a job's kept checkpoints (--download STEP saves one)"),
        ("watch", _watch, "live progress, then the result (exit 0 succeeded, 3 failed, 4 cancelled)"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("id")
        cmd.set_defaults(run=with_client(handler))
    fork = sub.add_parser("fork", parents=[common], help="a new job from a checkpoint, with overrides")
    fork.add_argument("id")
    fork.add_argument("--step", type=int, required=True, help="a kept checkpoint's step (jobs checkpoints)")
    fork.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter override")
    fork.add_argument("--seed", type=int, default=None)
    fork.add_argument("--priority", choices=PRIORITY_CHOICES, default=None, help="default: the parent's")
    fork.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    fork.set_defaults(run=with_client(_fork))
    export = sub.add_parser("export", parents=[common], help="register the model of one checkpoint")
    export.add_argument("id")
    export.add_argument("--step", type=int, required=True)
    export.set_defaults(run=with_client(_export))
    sub.choices["checkpoints"].add_argument("--download", type=int, default=None, metavar="STEP")
    sub.choices["checkpoints"].add_argument("-o", "--out", type=Path, default=None, help="where --download saves")
    sub.choices["watch"].add_argument(
        "--every", type=_seconds, default=PLAIN_EVERY_S, metavar="SECONDS",
        help=f"off a terminal, a progress line every SECONDS (0-3600, default {PLAIN_EVERY_S:g})",
    )  # fmt: skip
    logs = sub.add_parser("logs", parents=[common], help="status changes, evaluations and log lines")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following until the job ends")
    logs.set_defaults(run=with_client(_logs))
