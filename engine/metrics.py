"""Held-out metrics for a binary classifier, as the field reports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

__all__ = ["BinaryMetrics", "best_f1_threshold", "binary_metrics", "top_decile_lift"]


@dataclass(frozen=True)
class BinaryMetrics:
    rows: int
    positives: int
    roc_auc: float
    pr_auc: float
    brier: float
    threshold: float
    precision: float
    recall: float
    f1: float
    top_decile_lift: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def table(self) -> str:
        """A few aligned lines for the terminal."""
        rows = [
            ("rows (positives)", f"{self.rows} ({self.positives})"),
            ("ROC-AUC", f"{self.roc_auc:.4f}"),
            ("PR-AUC", f"{self.pr_auc:.4f}"),
            ("Brier score", f"{self.brier:.4f}"),
            ("threshold", f"{self.threshold:.4f}"),
            ("precision / recall / F1", f"{self.precision:.3f} / {self.recall:.3f} / {self.f1:.3f}"),
            ("top-decile lift", f"{self.top_decile_lift:.2f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Positive rate among the 10% highest scores over the overall positive rate."""
    n = max(1, int(np.ceil(0.1 * len(y))))
    top = np.argsort(-p, kind="stable")[:n]
    base = float(np.mean(y))
    return float(np.mean(y[top]) / base) if base > 0 else float("nan")


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut-off that maximises F1 on (y, p): chosen on validation rows, never on test rows."""
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    tp = np.cumsum(ys)
    predicted = np.arange(1, len(ys) + 1)
    f1 = 2 * tp / (predicted + ys.sum())
    # Only cut between distinct scores, so the threshold selects exactly the rows counted.
    last_of_tie = np.r_[ps[1:] != ps[:-1], True]
    best = int(np.argmax(np.where(last_of_tie, f1, -1.0)))
    return float(ps[best])


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> BinaryMetrics:
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    precision = tp / max(1, int(pred.sum()))
    recall = tp / max(1, int(y.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BinaryMetrics(
        rows=len(y),
        positives=int(y.sum()),
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        threshold=float(threshold),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        top_decile_lift=top_decile_lift(y, p),
    )
