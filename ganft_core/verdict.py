"""Did the GAN help? The verdict of an ssgan run against its supervised-only control.

Both classifiers are scored on the same validation examples, so the comparison is paired: only
the examples where exactly one of them is right move the difference. With b = examples only the GAN
gets right and c = examples only the control gets right, the accuracy difference is (b - c) / n and,
under "no difference", its standard error is sqrt(b + c) / n (McNemar's test, normal form). The
margin is two standard errors (about 95%), and never less than one example (1 / n): a difference
inside it is "no_difference".
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

Outcome = Literal["helped", "no_difference", "hurt"]


def accuracy_margin(correct_gan: np.ndarray, correct_control: np.ndarray) -> float:
    """Two paired standard errors of the accuracy difference (at least 1/n); boolean (N,) arrays."""
    n = max(1, len(correct_gan))
    discordant = int(np.sum(correct_gan != correct_control))
    return max(2.0 * math.sqrt(discordant) / n, 1.0 / n)


def verdict(y_true: Any, pred_gan: Any, pred_control: Any) -> dict[str, Any]:
    """The `verdict` object of metrics.json from validation labels and both runs' predicted classes."""
    y = np.asarray(y_true)
    right_gan, right_control = np.asarray(pred_gan) == y, np.asarray(pred_control) == y
    acc_gan, acc_control = float(right_gan.mean()), float(right_control.mean())
    delta = acc_gan - acc_control
    margin = accuracy_margin(right_gan, right_control)
    outcome: Outcome = "helped" if delta > margin else "hurt" if delta < -margin else "no_difference"
    use = "control" if outcome == "hurt" or (outcome == "no_difference" and delta < 0) else "model"
    figures = f"accuracy {acc_gan:.2%} vs {acc_control:.2%} for the supervised control ({delta * 100:+.1f} points"
    figures += f", noise ±{margin * 100:.1f} on {len(y)} validation examples)"
    message = {
        "helped": f"the GAN helped: {figures}; use model.*",
        "no_difference": f"no difference within noise: {figures}; use {use}.*",
        "hurt": f"the GAN hurt: {figures}; use the control (control.*) instead",
    }[outcome]
    return {"outcome": outcome, "metric": "accuracy", "ssgan": acc_gan, "control": acc_control,
            "delta": delta, "margin": margin, "use": use, "message": message}
