"""Following a job for a person (`ganft jobs watch`, `ganft demo`): a progress bar fed by the job's
event stream, and the summary at the end (for ssgan the GAN against its control and the verdict, for
adapt FID/KID; the output model and the command that downloads it).

The bar is rich's: a live line at the bottom of the terminal, sized to its width, that other lines
print above (each evaluation, status change and log message is its own line), and nothing but the
final frame is left behind. It shows step/total, steps per second, ETA and one or two headline
figures. rich rather than tqdm: tqdm squeezes the bar to make room for the postfix and prints lines
above it only through its own `write`, where rich lays out columns to the terminal's width and lets
anything print above the live line. Off a terminal (a log file, a pipe) the view prints a plain line
every `every_s` seconds instead of redrawing.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ganft.client import Client
    from ganft.client_types import Event, Job

PLAIN_EVERY_S = 10.0  # default seconds between plain progress lines off a terminal (`jobs watch --every`)
SHORT_NAMES = {
    "accuracy": "acc", "macro_f1": "F1", "control_accuracy": "control acc", "control_macro_f1": "control F1",
    "loss_d": "D", "loss_g": "G", "loss_control": "control", "fid": "FID", "kid": "KID", "augment_p": "p",
}  # fmt: skip
BAR_FIGURES = (("accuracy", "fid"), ("loss_d",))  # the bar shows the first present of each group


def figures_text(metrics: Mapping[str, Any]) -> str:
    """`acc 0.8123 F1 0.8011 | control acc 0.7702 F1 0.7650 | +4.2 pt`: short names, four significant digits,
    the control's figures after the GAN's and the accuracy difference last (fits 80 columns after the step)."""
    shown = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}

    def named(items: dict[str, float]) -> str:
        return " ".join(f"{SHORT_NAMES.get(k, k)} {v:.4g}" for k, v in items.items())

    ours = {k: v for k, v in shown.items() if not k.startswith(("control_", "delta_"))}
    control = {k.removeprefix("control_"): v for k, v in shown.items() if k.startswith("control_")}
    parts = [named(ours)] + ([f"control {named(control)}"] if control else [])
    if "delta_accuracy" in shown:
        parts.append(f"{shown['delta_accuracy'] * 100:+.1f} pt")
    return " | ".join(p for p in parts if p)


def clock_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressView:
    """Shows a job's events on `stream`: a bar on a terminal, a plain line every `every_s` seconds elsewhere."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,
        width: int | None = None,
    ) -> None:
        from rich.console import Console

        self._stream = stream if stream is not None else sys.stderr
        self.console = Console(file=self._stream, force_terminal=terminal, width=width, highlight=False)
        self.live = self.console.is_terminal
        self._every_s, self._clock = every_s, clock
        self._last_plain = -math.inf
        self._latest: dict[str, float] = {}
        self.step, self.total = 0, 0
        self.rate: float | None = None  # steps per second (the worker's figure)
        self._bar: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                BarColumn(bar_width=None), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TextColumn("eta {task.fields[eta]}"), TextColumn("{task.fields[figures]}"),
                console=self.console, expand=True, refresh_per_second=4,
            )  # fmt: skip
            self._task = self._bar.add_task("", total=None, rate="", eta="-:--:--", figures="")
            self._bar.start()

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type in ("progress", "evaluation") and "step" in data:
            metrics = data.get("metrics") or {}
            if event.type == "evaluation":  # its figures print now; the progress event written with it moves the bar
                self._remember(metrics)
                if metrics:
                    total = data.get("total_steps") or self.total
                    self.line(f"eval {data['step']}/{total}: {figures_text(metrics)}")
                return
            self.advance(int(data["step"]), int(data.get("total_steps") or 0), metrics, data.get("steps_per_second"))
        elif event.type == "status":
            reason = f" ({data['reason']})" if data.get("reason") else ""
            error = data.get("error") or {}
            said = f": {error.get('code')}: {error.get('message')}" if error else ""
            self.line(f"status: {data.get('status')}{reason}{said}")
        elif event.type == "log" and data.get("message"):
            self.line(f"step {data.get('step', '?')}: {data['message']}")

    def advance(self, step: int, total: int, metrics: Mapping[str, Any], rate: float | None = None) -> None:
        moved = step != self.step or self._last_plain == -math.inf
        self.step, self.total = step, total or self.total
        self.rate = float(rate) if isinstance(rate, int | float) and rate > 0 else self.rate
        self._remember(metrics)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=self.total or None, **self._fields())
            return
        now = self._clock()
        if moved and (now - self._last_plain >= self._every_s or (self.total and step >= self.total)):
            self._last_plain = now  # a line every `every_s`, and one for the last step
            self.line(self.plain_line())

    def _remember(self, metrics: Mapping[str, Any]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        self._latest.update(finite)

    def _fields(self) -> dict[str, str]:
        eta = (self.total - self.step) / self.rate if self.rate and self.total else None
        shown = [next((f"{SHORT_NAMES[k]} {self._latest[k]:.4g}" for k in group if k in self._latest), "")
                 for group in BAR_FIGURES]  # fmt: skip
        return {"rate": f"{self.rate:.1f} step/s" if self.rate else "", "eta": clock_text(eta),
                "figures": " ".join(s for s in shown if s)}

    def plain_line(self) -> str:
        """`step 1150/1500 (77%) 45.3 step/s eta 0:00:07 acc 0.873 D 0.0431`."""
        f = self._fields()
        share = f" ({self.step / self.total:.0%})" if self.total else ""
        return " ".join(p for p in (f"step {self.step}/{self.total or '?'}{share}", f["rate"], f"eta {f['eta']}",
                                    f["figures"]) if p)  # fmt: skip

    def line(self, text: str) -> None:
        """A line above the bar (or just a line, off a terminal)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def follow(api: Client, job_id: str, view: ProgressView) -> Job:
    """Feed the job's events to `view`, from its first (a job watched late shows its evaluations so far),
    until the job ends; the finished job."""
    for event in api.watch(job_id):
        view.feed(event)
    view.close()
    return api.get_job(job_id)


# ---------------------------------------------------------------- the summary


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _duration(job: Job) -> str:
    if job.started_at is None or job.finished_at is None:
        return ""
    seconds = (job.finished_at - job.started_at).total_seconds()
    minutes, secs = divmod(int(round(seconds)), 60)
    return f" in {minutes}m {secs:02d}s" if minutes else f" in {secs}s"


def ssgan_lines(result: Mapping[str, Any]) -> tuple[list[str], str]:
    """The GAN's classifier against the supervised control (accuracy, macro F1, difference) and the verdict;
    and the artifact to download (model.pt2, or control.pt2 when the verdict says to use the control)."""
    ours, control = result.get("ssgan") or {}, result.get("control")
    rows = [("", "accuracy", "macro F1"), ("ssgan", _cell(_num(ours.get("accuracy"))),
                                           _cell(_num(ours.get("macro_f1"))))]  # fmt: skip
    if isinstance(control, dict):
        rows.append(("control", _cell(_num(control.get("accuracy"))), _cell(_num(control.get("macro_f1")))))
        diff = []
        for key in ("accuracy", "macro_f1"):
            a, b = _num(ours.get(key)), _num(control.get(key))
            diff.append(f"{(a - b) * 100:+.2f} pt" if a is not None and b is not None else "-")
        rows.append(("difference", diff[0], diff[1]))
    lines = [f"  {a:<11}{b:>10}{c:>11}".rstrip() for a, b, c in rows]
    download = "model.pt2"
    verdict = result.get("verdict")
    if isinstance(verdict, dict) and verdict.get("outcome"):
        said = {"helped": "the GAN helped", "hurt": "the GAN hurt", "no_difference": "no difference within noise"}
        delta, margin = _num(verdict.get("delta")), _num(verdict.get("margin"))
        figures = (f" ({delta * 100:+.1f} pt {verdict.get('metric', 'accuracy')}, noise ±{margin * 100:.1f} pt)"
                   if delta is not None and margin is not None else "")  # fmt: skip
        if verdict.get("use") == "control":
            download = "control.pt2"
        use = "control.pt2 (the supervised control)" if download == "control.pt2" else "model.pt2"
        lines.append(f"verdict: {said.get(str(verdict['outcome']), str(verdict['outcome']))}{figures}: use {use}")
    elif "verdict" in result or not isinstance(control, dict):
        lines.append("no supervised control was run (run_control=false): nothing to compare with")
    else:  # a result from before verdicts
        lines.append("no verdict in this result (an older job): compare the figures above")
    return lines, download


def adapt_lines(result: Mapping[str, Any]) -> list[str]:
    fid, kid = _num(result.get("fid")), _num(result.get("kid"))
    if fid is None and kid is None:
        return ["no FID/KID: the job had no evaluator (GANFT_INCEPTION_WEIGHTS on the worker, or evaluator_model_id)"]
    lines = [f"  FID {_cell(fid)}   KID {_cell(kid)}   (lower is better)"]
    if result.get("evaluator"):
        lines.append(f"  features: {result['evaluator']}; against: {result.get('fid_reference')}")
    return lines


def summary_lines(job: Job) -> list[str]:
    """What a person came for, when the job has ended: its figures, the output model, the download command."""
    steps = f"{job.progress.step}/{job.progress.total_steps} steps"
    if job.status == "failed":
        error = f": {job.error.code}: {job.error.message}" if job.error else ""
        return [f"{job.id} failed at {steps}{error}", f"events and log lines: ganft jobs logs {job.id}"]
    if job.status != "succeeded":
        return [f"{job.id} {job.status} at {steps}"]
    lines = [f"{job.id} succeeded: {job.method}, {job.progress.total_steps} steps{_duration(job)}"]
    result = job.result or {}
    download = "model.pt2"
    if job.method == "ssgan":
        figures, download = ssgan_lines(result)
        lines += figures
    elif job.method == "adapt":
        lines += adapt_lines(result)
    if job.output_model_id:
        what = "the GAN's classifier; the verdict prefers control.pt2" if download == "control.pt2" else (
            "base_model_id of a next job")
        lines.append(f"output model: {job.output_model_id} ({what})")
    lines.append(f"download:     ganft artifacts download {job.id} {download}")
    return lines
