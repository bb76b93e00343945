"""What an ssgan run reports: evaluation scalars, the deltas against the control, curves.png's panels."""

from __future__ import annotations

import math
from typing import Any


def curve_panels(history: dict[str, list[list[float]]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """curves.png's panels from the run's history (kept in checkpoints, so complete across resumes)."""
    log_rows, eval_rows = history["log"], history["eval"]
    return {"losses": {"D": [(r[0], r[1]) for r in log_rows], "G": [(r[0], r[2]) for r in log_rows],
                       "control": [(r[0], r[3]) for r in log_rows]},
            "validation accuracy": {"ssgan": [(r[0], r[1]) for r in eval_rows],
                                    "control": [(r[0], r[2]) for r in eval_rows]}}


def deltas(figures: dict[str, Any]) -> dict[str, float | None]:
    """ssgan minus control, for accuracy and macro F1 (None without a control)."""
    if figures.get("control") is None:
        return {"delta_accuracy": None, "delta_macro_f1": None}
    s, c = figures["ssgan"], figures["control"]
    return {"delta_accuracy": s["accuracy"] - c["accuracy"], "delta_macro_f1": s["macro_f1"] - c["macro_f1"]}


def headline(figures: dict[str, Any]) -> dict[str, float]:
    """The scalars of an evaluation that progress reports carry."""
    s = figures["ssgan"]
    out = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    if figures.get("control") is not None:
        c = figures["control"]
        out |= {"control_accuracy": c["accuracy"], "control_macro_f1": c["macro_f1"],
                "delta_accuracy": s["accuracy"] - c["accuracy"]}
    return out


def history_row(step: int, scalars: dict[str, float]) -> list[float]:
    """One `history["eval"]` row: step, ssgan accuracy, control accuracy (NaN without a control)."""
    return [step, scalars["accuracy"], scalars.get("control_accuracy", math.nan)]
