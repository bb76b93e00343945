"""Classification figures for a run's metrics.json: accuracy, macro P/R/F1, per class, confusion matrix.

Plain numpy (no scikit-learn in the core). Conventions follow scikit-learn's
`precision_recall_fscore_support(average="macro", zero_division=0)`: a class that is never
predicted has precision 0, one that never occurs has recall 0, and the macro average is the
unweighted mean over all `num_classes` classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_int_array(values: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """K×K counts, rows = true class, columns = predicted class."""
    t, p = _as_int_array(y_true), _as_int_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Every figure a user needs to judge a classifier, as plain JSON-ready values.

    Returns `{accuracy, macro_precision, macro_recall, macro_f1, examples,
    per_class: [{class, precision, recall, f1, support}], confusion_matrix: [[int]]}`.
    """
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)  # column sums: how often each class was predicted
    support = cm.sum(axis=1).astype(np.float64)  # row sums: how often each class occurs
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "examples": total,
        "per_class": [
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": cm.tolist(),
    }
