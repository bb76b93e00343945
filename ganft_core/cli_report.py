"""What `python -m ganft_core train` shows a person: a progress bar that fits the terminal, and the
headline of the finished run.

The bar is rich's (a live line at the bottom of the terminal that other lines print above, sized to
the terminal's width, no frames left in a log); it carries step/total, steps per second, ETA and one
or two headline figures, while each evaluation prints as its own line above it. When stderr is not a
terminal (a log file, a pipe) it prints a plain line every `every_s` seconds instead.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ganft_core.train import ProgressUpdate

PLAIN_EVERY_S = 10.0  # seconds between plain progress lines when stderr is not a terminal
SHORT_NAMES = {
    "accuracy": "acc", "macro_f1": "F1", "control_accuracy": "control acc", "control_macro_f1": "control F1",
    "loss_d": "D", "loss_g": "G", "loss_control": "control", "fid": "FID", "kid": "KID", "augment_p": "p",
}  # fmt: skip
BAR_FIGURES = (("accuracy", "fid"), ("loss_d",))  # the bar shows the first present of each group


def figure(name: str, value: float) -> str:
    """`acc 0.8123`: a short name and four significant digits (losses near zero keep theirs)."""
    return f"{SHORT_NAMES.get(name, name)} {value:.4g}"


def bar_figures(latest: Mapping[str, float]) -> str:
    """One or two headline figures for the bar (the latest evaluation's score, D's loss)."""
    shown = [next((figure(k, latest[k]) for k in group if k in latest), None) for group in BAR_FIGURES]
    return " ".join(s for s in shown if s)


def evaluation_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """`eval 500/1500: acc 0.8123 F1 0.8011 | control acc 0.7702 F1 0.7650 | +4.2 pt` (the control's figures
    after the GAN's, the accuracy difference last: fits 80 columns)."""
    ours = {k: v for k, v in metrics.items() if not k.startswith(("control_", "delta_"))}
    control = {k.removeprefix("control_"): v for k, v in metrics.items() if k.startswith("control_")}
    parts = [" ".join(figure(k, v) for k, v in ours.items())]
    if control:
        parts.append("control " + " ".join(figure(k, v) for k, v in control.items()))
    if "delta_accuracy" in metrics:
        parts.append(f"{metrics['delta_accuracy'] * 100:+.1f} pt")
    return f"eval {step}/{total}: " + " | ".join(p for p in parts if p)


def clock_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Shows the trainer's `ProgressUpdate`s on `stream` (a bar on a terminal, plain lines elsewhere)."""

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
        self._latest: dict[str, float] = {}
        self._origin: tuple[float, int] | None = None  # (time, step) where this phase's rate is measured from
        self._last_plain = -math.inf
        self.step, self.total = 0, 0
        self.rate: float | None = None  # steps per second in this phase
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

    def __call__(self, update: ProgressUpdate) -> None:
        self.advance(update.step, update.total_steps, update.metrics, evaluation=update.kind == "evaluation")
        if update.message:
            self.line(update.message)

    def advance(self, step: int, total: int, metrics: Mapping[str, Any], *, evaluation: bool = False) -> None:
        now = self._clock()
        moved = step != self.step or self._origin is None
        if self._origin is None or step < self._origin[1]:
            self._origin = (now, step)  # the first report, or a new phase (a resumed run's control) starting over
        elif step > self.step:
            t0, s0 = self._origin
            self.rate = (step - s0) / (now - t0) if now > t0 else self.rate
        self.step, self.total = step, total or self.total
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        self._latest.update(scalars)
        if evaluation and scalars:
            self.line(evaluation_line(step, self.total, scalars))
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=self.total or None, **self._fields())
        elif moved and (now - self._last_plain >= self._every_s or (self.total and step >= self.total)):
            self._last_plain = now  # a line every `every_s`, and one for the last step
            self.line(self.plain_line())

    def _fields(self) -> dict[str, str]:
        eta = (self.total - self.step) / self.rate if self.rate and self.total else None
        return {"rate": f"{self.rate:.1f} step/s" if self.rate else "", "eta": clock_text(eta),
                "figures": bar_figures(self._latest)}

    def plain_line(self) -> str:
        """`step 1150/1500 (77%) 45.3 step/s eta 0:00:07 acc 0.873 D 0.0431`."""
        fields = self._fields()
        share = f" ({self.step / self.total:.0%})" if self.total else ""
        rate = f" {fields['rate']}" if fields["rate"] else ""
        figures = f" {fields['figures']}" if fields["figures"] else ""
        return f"step {self.step}/{self.total or '?'}{share}{rate} eta {fields['eta']}{figures}"

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


# ---------------------------------------------------------------- the finished run


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def ssgan_table(ssgan: Mapping[str, Any], control: Mapping[str, Any] | None) -> list[str]:
    """Accuracy and macro F1 of the GAN's classifier against the control, with the difference in points."""
    rows = [("", "accuracy", "macro F1"),
            ("ssgan", _cell(_num(ssgan.get("accuracy"))), _cell(_num(ssgan.get("macro_f1"))))]
    if control:
        rows.append(("control", _cell(_num(control.get("accuracy"))), _cell(_num(control.get("macro_f1")))))
        diff = []
        for key in ("accuracy", "macro_f1"):
            a, b = _num(ssgan.get(key)), _num(control.get(key))
            diff.append(f"{(a - b) * 100:+.2f} pt" if a is not None and b is not None else "-")
        rows.append(("difference", diff[0], diff[1]))
    return [f"  {a:<11}{b:>10}{c:>11}".rstrip() for a, b, c in rows]


def verdict_line(verdict: Mapping[str, Any], model: str, control: str) -> str:
    """`verdict: the GAN helped (+5.2 pt accuracy, noise ±1.3 pt): use model.pt2`, from metrics.json's verdict."""
    outcome = verdict.get("outcome")
    said = {"helped": "the GAN helped", "hurt": "the GAN hurt", "no_difference": "no difference within noise"}
    delta, margin = _num(verdict.get("delta")), _num(verdict.get("margin"))
    figures = f" ({delta * 100:+.1f} pt {verdict.get('metric', 'accuracy')}, noise ±{margin * 100:.1f} pt)" if (
        delta is not None and margin is not None) else ""
    use = control + " (the supervised control)" if verdict.get("use") == "control" else model
    return f"verdict: {said.get(str(outcome), str(outcome))}{figures}: use {use}"


def headline(method: str, metrics: Mapping[str, Any], run_dir: Path) -> list[str]:
    """The lines printed at the end of `train`: the figures a person ran it for, then where the files are."""
    lines: list[str] = []
    if method == "ssgan":
        lines.append(f"ssgan: {metrics.get('steps')} steps, {metrics.get('labeled_examples')} labeled + "
                     f"{metrics.get('unlabeled_examples')} unlabeled examples, "
                     f"{metrics.get('validation_examples')} validation examples")
        lines += ssgan_table(metrics.get("ssgan") or {}, metrics.get("control"))
        verdict = metrics.get("verdict")
        if isinstance(verdict, dict) and verdict.get("outcome"):
            lines.append(verdict_line(verdict, "model.pt2", "control.pt2"))
        elif metrics.get("control") is None:
            lines.append("no supervised control was run (run_control=false): nothing to compare with")
    else:
        fid, kid = _num(metrics.get("fid")), _num(metrics.get("kid"))
        if fid is None and kid is None:
            lines.append(f"adapt: {metrics.get('steps')} steps; no FID/KID (no evaluator: give --inception or "
                         "--evaluator)")
        else:
            lines.append(f"adapt: {metrics.get('steps')} steps; FID {_cell(fid)}, KID {_cell(kid)} "
                         f"(lower is better; {metrics.get('evaluator')}, against {metrics.get('fid_reference')})")
    lines.append(f"run folder: {run_dir} (every figure in metrics.json; --json prints them)")
    return lines
