"""Early stopping: end a run after `patience` evaluations without improvement of the method's metric.

The metric is the one the service ranks checkpoints by (ganft/repo/checkpoints.py): ssgan's validation
accuracy of the GAN run (higher is better), adapt's FID (lower is better). An evaluation improves when it
beats the best so far by more than `min_delta`; of equal values the earliest stays the best, as in the
service's `result.best_step`. The tracker keeps a copy of the best evaluation's weights (the caller's
`snapshot`), so a run that stops hands back the best step's weights, not the last ones; its whole
state goes into each checkpoint, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ganft_core.config import EarlyStopping


class EarlyStopper:
    def __init__(self, policy: EarlyStopping, *, metric: str, higher_is_better: bool) -> None:
        self.patience, self.min_delta = policy.patience, policy.min_delta
        self.metric, self.higher = metric, higher_is_better
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.since_best = 0  # evaluations since the best one
        self.best_state: dict[str, Any] | None = None  # the caller's snapshot at the best evaluation

    def observe(self, step: int, value: float, snapshot: Callable[[], dict[str, Any]]) -> bool:
        """Record an evaluation's metric; on an improvement take `snapshot()` (True), else count it."""
        if math.isfinite(value) and (self.best_value is None or self._gain(value) > self.min_delta):
            self.best_value, self.best_step, self.since_best = value, step, 0
            self.best_state = snapshot()
            return True
        self.since_best += 1
        return False

    def _gain(self, value: float) -> float:
        assert self.best_value is not None
        return value - self.best_value if self.higher else self.best_value - value

    @property
    def stopped(self) -> bool:
        return self.since_best >= self.patience

    def summary(self, step: int, total: int) -> dict[str, Any]:
        """What metrics.json (and the job's `result`) say about it."""
        out: dict[str, Any] = {
            "stopped_early": self.stopped,
            "early_stopping": {
                "patience": self.patience,
                "min_delta": self.min_delta,
                "metric": self.metric,
                "best_step": self.best_step,
                "best_value": self.best_value,
                "stopped_at_step": step,
            },
        }
        if self.stopped:
            out["stop_reason"] = (
                f"{self.metric} did not improve on {self.best_value:.6g} (step {self.best_step}) "
                f"in {self.since_best} evaluations (patience {self.patience}); stopped at step "
                f"{step} of {total}, the outputs are step {self.best_step}'s weights"
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "since_best": self.since_best,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state:  # a checkpoint of a run without early stopping (e.g. a fork that turned it on)
            return
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.since_best, self.best_state = int(state["since_best"]), state["best_state"]


def copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state_dict (kept on its device)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
