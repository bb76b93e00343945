"""The headline of a finished run, as text: what `python -m ganft_core train` prints at the end, and the
figures part of `ganft jobs watch`'s summary (ganft/cli_watch.py), so both say it the same way. Every
line fits 80 columns (run folders and ids aside). Standard library only (the `ganft` client uses it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def ssgan_table(ssgan: Mapping[str, Any], control: Mapping[str, Any] | None) -> list[str]:
    """Accuracy and macro F1 of the GAN's classifier against the control, with the difference in points."""
    rows = [
        ("", "accuracy", "macro F1"),
        ("ssgan", _cell(_num(ssgan.get("accuracy"))), _cell(_num(ssgan.get("macro_f1")))),
    ]
    if control:
        rows.append(("control", _cell(_num(control.get("accuracy"))), _cell(_num(control.get("macro_f1")))))
        diff = []
        for key in ("accuracy", "macro_f1"):
            a, b = _num(ssgan.get(key)), _num(control.get(key))
            diff.append(f"{(a - b) * 100:+.2f} pt" if a is not None and b is not None else "-")
        rows.append(("difference", diff[0], diff[1]))
    return [f"  {a:<11}{b:>10}{c:>11}".rstrip() for a, b, c in rows]


VERDICT_SAID = {"helped": "the GAN helped", "hurt": "the GAN hurt", "no_difference": "no difference within noise"}


def verdict_line(verdict: Mapping[str, Any]) -> str:
    """`verdict: the GAN helped (+5.2 ± 1.3 pt accuracy): use model.pt2` from metrics.json's verdict: the
    difference with its noise margin, and the artifact to use (control.pt2, the supervised control, when the
    GAN did not help and the control scored higher)."""
    outcome = str(verdict.get("outcome"))
    delta, margin = _num(verdict.get("delta")), _num(verdict.get("margin"))
    figures = f" ({delta * 100:+.1f} ± {margin * 100:.1f} pt {verdict.get('metric', 'accuracy')})" if (
        delta is not None and margin is not None) else ""  # fmt: skip
    return f"verdict: {VERDICT_SAID.get(outcome, outcome)}{figures}: use {verdict_artifact(verdict)}"


def verdict_artifact(verdict: Mapping[str, Any] | None) -> str:
    """The exported model the verdict says to use: control.pt2 or model.pt2."""
    return "control.pt2" if isinstance(verdict, Mapping) and verdict.get("use") == "control" else "model.pt2"


def ssgan_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The table of the GAN against its control and the verdict line (or why there is none)."""
    control = metrics.get("control")
    lines = ssgan_table(metrics.get("ssgan") or {}, control if isinstance(control, Mapping) else None)
    verdict = metrics.get("verdict")
    if isinstance(verdict, Mapping) and verdict.get("outcome"):
        lines.append(verdict_line(verdict))
    elif not isinstance(control, Mapping):
        lines.append("no supervised control was run (run_control=false): nothing to compare with")
    else:  # a result from before verdicts
        lines.append("no verdict in this result (an older job): compare the figures above")
    return lines


def adapt_lines(metrics: Mapping[str, Any], *, no_evaluator: str) -> list[str]:
    """FID and KID with what they were measured with, or `no_evaluator` (how to get an evaluator) and why."""
    fid, kid = _num(metrics.get("fid")), _num(metrics.get("kid"))
    if fid is None and kid is None:
        return ["no FID/KID: the run had no evaluator network", f"  ({no_evaluator})"]
    lines = [f"  FID {_cell(fid)}   KID {_cell(kid)}   (lower is better)"]
    if metrics.get("evaluator"):
        lines.append(f"  features: {metrics['evaluator']}; against: {metrics.get('fid_reference')}")
    return lines


def headline(method: str, metrics: Mapping[str, Any], run_dir: Path) -> list[str]:
    """The lines printed at the end of `train`: the figures a person ran it for, then where the files are."""
    if method == "ssgan":
        lines = [f"ssgan: {metrics.get('steps')} steps; {metrics.get('labeled_examples')} labeled, "
                 f"{metrics.get('unlabeled_examples')} unlabeled, {metrics.get('validation_examples')} validation "
                 "examples"]  # fmt: skip
        lines += ssgan_lines(metrics)
    else:
        lines = [f"adapt: {metrics.get('steps')} steps"]
        lines += adapt_lines(metrics, no_evaluator="give --inception WEIGHTS or --evaluator MODEL")
    lines.append(f"run folder: {run_dir}  (every figure: metrics.json, or --json)")
    return lines
