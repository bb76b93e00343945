"""A training run's progress for a person, shared by `python -m ganft_core train` (fed the trainer's
`ProgressUpdate`s) and `ganft jobs watch` / `ganft demo` (fed a job's events, in ganft/cli_watch.py).

On a terminal it is rich's progress bar: a live line at the bottom, sized to the terminal's width,
that other lines print above (each evaluation, status change and log message is its own line), and
nothing but the final frame is left behind. The bar carries step/total, steps per second, ETA and one
or two headline figures, never every metric. rich rather than tqdm: tqdm squeezes the bar to make room
for its postfix and prints above it only through its own `write`, where rich lays out columns to the
terminal's width and lets anything print above the live line. Off a terminal (a log file, a pipe) it
prints a plain line every `every_s` seconds instead of redrawing: no carriage-return frames.

Imports only rich and the standard library (the `ganft` client uses it without torch).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self, TextIO

if TYPE_CHECKING:
    from ganft_core.train import ProgressUpdate

PLAIN_EVERY_S = 10.0  # default seconds between plain progress lines off a terminal
SHORT_NAMES = {
    "accuracy": "acc", "macro_f1": "F1", "control_accuracy": "control acc", "control_macro_f1": "control F1",
    "loss_d": "D", "loss_g": "G", "loss_control": "control", "fid": "FID", "kid": "KID", "augment_p": "p",
}  # fmt: skip
BAR_FIGURES = (("accuracy", "fid"), ("loss_d",))  # the bar shows the first present of each group
HEADLINE_FIRST = ("accuracy", "macro_f1", "fid", "kid")  # an evaluation line starts with these, then the rest
FRACTIONS = {"accuracy", "macro_f1"}  # in [0, 1]: four decimals, so lines after lines keep their columns


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among `metrics` (NaN, None, strings and lists left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def figure(name: str, value: float) -> str:
    """`acc 0.8100`, `D 0.0431`: a short name, and four decimals for accuracy and F1, four significant
    digits for anything else (losses near zero keep theirs)."""
    shown = f"{value:.4f}" if name.removeprefix("control_") in FRACTIONS else f"{value:.4g}"
    return f"{SHORT_NAMES.get(name, name)} {shown}"


def figures_text(metrics: Mapping[str, Any]) -> str:
    """`acc 0.8123 F1 0.8011 | control acc 0.7702 F1 0.7650 | +4.2 pt`, `FID 105.3 KID 1.16 p 0.16`: the
    headline figures first, the control's after the GAN's and the accuracy difference last (an evaluation
    line fits 80 columns)."""
    shown = scalars(metrics)
    first = [k for k in HEADLINE_FIRST if k in shown]
    shown = {k: shown[k] for k in [*first, *(k for k in shown if k not in first)]}
    ours = {k: v for k, v in shown.items() if not k.startswith(("control_", "delta_"))}
    control = {k.removeprefix("control_"): v for k, v in shown.items() if k.startswith("control_")}
    parts = [" ".join(figure(k, v) for k, v in ours.items())]
    if control:
        parts.append("control " + " ".join(figure(k, v) for k, v in control.items()))
    if "delta_accuracy" in shown:
        parts.append(f"{shown['delta_accuracy'] * 100:+.1f} pt")
    return " | ".join(p for p in parts if p)


def clock_text(seconds: float | None) -> str:
    """`0:01:05`, or `-:--:--` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A run's progress on `stream` (default stderr): a bar on a terminal, a plain line every `every_s`
    seconds elsewhere. Call it with the trainer's `ProgressUpdate`s, or drive `advance`/`evaluation`/`line`."""

    measures_rate = True  # steps/s measured here between reports; False: only the rate the caller passes

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
        self._origin: tuple[float, int] | None = None  # (time, step) this phase's measured rate starts from
        self._last_plain = -math.inf
        self.step, self.total = 0, 0
        self.rate: float | None = None  # steps per second (given by the caller, or measured here)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, update: ProgressUpdate) -> None:
        """A trainer's report: an evaluation prints its line, anything else moves the bar."""
        if update.kind == "evaluation":
            self.evaluation(update.step, update.total_steps, update.metrics)
        else:
            self.advance(update.step, update.total_steps, update.metrics)
        if update.message:
            self.line(update.message)

    def evaluation(self, step: int, total: int, metrics: Mapping[str, Any]) -> None:
        """`eval 500/1500: acc 0.8123 F1 0.8011 | control acc ...` as its own line; the figures join the bar's."""
        shown = scalars(metrics)
        self._latest.update(shown)
        if shown:
            self.line(f"eval {step}/{total or self.total}: {figures_text(shown)}")
            if self._bar is not None:
                self._bar.update(self._task, **self._fields())  # the bar's headline figure is the new score

    def advance(self, step: int, total: int, metrics: Mapping[str, Any], rate: float | None = None) -> None:
        """Move to `step` of `total` with the latest `metrics`. The rate is `rate` (steps/s) when given, else
        measured from this phase's first report (a step going back, as a control's phase, starts over)."""
        now = self._clock()
        moved = step != self.step or self._origin is None
        if self._origin is None or step < self._origin[1]:
            self._origin = (now, step)
        elif self.measures_rate and step > self.step:
            t0, s0 = self._origin
            self.rate = (step - s0) / (now - t0) if now > t0 else self.rate
        if isinstance(rate, int | float) and rate > 0:
            self.rate = float(rate)
        self.step, self.total = step, total or self.total
        self._latest.update(scalars(metrics))
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=self.total or None, **self._fields())
        elif moved and (now - self._last_plain >= self._every_s or (self.total and step >= self.total)):
            self._last_plain = now  # a line every `every_s`, and one for the last step
            self.line(self.plain_line())

    def _fields(self) -> dict[str, str]:
        eta = (self.total - self.step) / self.rate if self.rate and self.total else None
        shown = [next((figure(k, self._latest[k]) for k in group if k in self._latest), "") for group in BAR_FIGURES]
        return {"rate": f"{self.rate:.1f} step/s" if self.rate else "", "eta": clock_text(eta),
                "figures": " ".join(s for s in shown if s)}  # fmt: skip

    def plain_line(self) -> str:
        """`step 1150/1500 (77%) 45.3 step/s eta 0:00:07 acc 0.8730 D 0.0431`."""
        f = self._fields()
        share = f" ({self.step / self.total:.0%})" if self.total else ""
        parts = (f"step {self.step}/{self.total or '?'}{share}", f["rate"], f"eta {f['eta']}", f["figures"])
        return " ".join(p for p in parts if p)

    def line(self, text: str) -> None:
        """A line above the bar, wrapped at word boundaries to the terminal's width (or just a line, off one)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
