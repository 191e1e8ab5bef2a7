"""Held-out metrics for a binary classifier, as the field reports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

__all__ = [
    "BinaryMetrics",
    "DetectionMetrics",
    "FraudMetrics",
    "best_f1_threshold",
    "binary_metrics",
    "card_precision_at_k",
    "detection_metrics",
    "fraud_metrics",
    "threshold_at_fpr",
    "top_decile_lift",
]


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


@dataclass(frozen=True)
class DetectionMetrics:
    """An anomaly detector on labelled rows: ranking quality, and what its alert threshold catches."""

    rows: int
    attacks: int
    roc_auc: float
    pr_auc: float
    threshold: float
    false_positive_rate: float
    detection_rate: float
    precision: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("rows (attacks)", f"{self.rows} ({self.attacks})"),
            ("ROC-AUC", f"{self.roc_auc:.4f}"),
            ("PR-AUC", f"{self.pr_auc:.4f}"),
            ("alert threshold", f"{self.threshold:.5g}"),
            ("false-positive rate", f"{self.false_positive_rate:.4f}"),
            ("detection rate (recall)", f"{self.detection_rate:.4f}"),
            ("precision", f"{self.precision:.4f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def threshold_at_fpr(normal_scores: np.ndarray, fpr: float) -> float:
    """The smallest score cut-off that alerts on at most ``fpr`` of ``normal_scores`` (alert: score >= cut).

    >>> threshold_at_fpr(np.arange(100.0), 0.05)
    95.0
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if len(s) == 0:
        msg = "no normal rows to calibrate the alert threshold on"
        raise ValueError(msg)
    allowed = int(np.floor(fpr * len(s)))  # normal rows that may score at or above the cut
    if allowed <= 0:
        return float(np.nextafter(s[-1], np.inf))
    cut = s[len(s) - allowed]
    # Ties at the cut would alert on more rows than allowed: move above them.
    if np.sum(s >= cut) > allowed:
        cut = np.nextafter(cut, np.inf)
    return float(cut)


def detection_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> DetectionMetrics:
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    alert = score >= threshold
    tp = int(np.sum(alert & (y == 1)))
    fp = int(np.sum(alert & (y == 0)))
    return DetectionMetrics(
        rows=len(y),
        attacks=int(y.sum()),
        roc_auc=float(roc_auc_score(y, score)),
        pr_auc=float(average_precision_score(y, score)),
        threshold=float(threshold),
        false_positive_rate=fp / max(1, int((y == 0).sum())),
        detection_rate=tp / max(1, int(y.sum())),
        precision=tp / max(1, int(alert.sum())),
    )


@dataclass(frozen=True)
class FraudMetrics:
    """Transaction-level ranking and card precision@k (the mean over days of the share of compromised cards
    among the ``k`` cards ranked highest that day, cards found on earlier days left out)."""

    rows: int
    frauds: int
    roc_auc: float
    average_precision: float
    card_precision_at_k: float
    k: int
    days: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("transactions (frauds)", f"{self.rows:,} ({self.frauds:,})"),
            ("ROC-AUC", f"{self.roc_auc:.4f}"),
            ("average precision", f"{self.average_precision:.4f}"),
            (f"card precision@{self.k} ({self.days} days)", f"{self.card_precision_at_k:.4f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def card_precision_at_k(day: np.ndarray, card: np.ndarray, y: np.ndarray, p: np.ndarray, *, k: int = 100) -> float:
    """Card precision@k as the Fraud Detection Handbook computes it: per day, each card scored by its
    highest transaction score; the share of compromised cards among the top ``k``; cards detected on an
    earlier day are left out of later days; the mean over days.

    >>> card_precision_at_k(np.array([0, 0, 0, 1]), np.array([1, 2, 3, 3]), np.array([1, 0, 1, 1]),
    ...                     np.array([0.9, 0.8, 0.1, 0.5]), k=2)
    0.5
    """
    detected: set[object] = set()
    shares = []
    for d in np.unique(day):
        on_day = day == d
        best: dict[object, tuple[float, int]] = {}
        for c, label, score in zip(card[on_day].tolist(), y[on_day].tolist(), p[on_day].tolist(), strict=True):
            if c in detected:
                continue
            prev = best.get(c)
            best[c] = (max(score, prev[0]), max(label, prev[1])) if prev else (score, label)
        top = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        found = [c for c, (_, label) in top if label]
        detected.update(found)
        shares.append(len(found) / k)
    return float(np.mean(shares)) if shares else float("nan")


def fraud_metrics(day: np.ndarray, card: np.ndarray, y: np.ndarray, p: np.ndarray, *, k: int = 100) -> FraudMetrics:
    y = np.asarray(y, dtype=np.int64)
    return FraudMetrics(
        rows=len(y),
        frauds=int(y.sum()),
        roc_auc=float(roc_auc_score(y, p)),
        average_precision=float(average_precision_score(y, p)),
        card_precision_at_k=card_precision_at_k(day, card, y, p, k=k),
        k=k,
        days=len(np.unique(day)),
    )
