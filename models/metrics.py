"""Scores for a class map against labels (-1 = unlabelled, ignored). Plain numpy, JSON-ready results."""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts over labelled cells."""
    keep = truth >= 0
    idx = truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(truth: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, object]:
    cm = confusion(truth, pred, len(classes))
    support = cm.sum(axis=1)
    recall = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    return {
        "overall_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "per_class_recall": recall,
        "support": {c: int(s) for c, s in zip(classes, support, strict=True)},
        "confusion_matrix": cm.tolist(),  # rows: true class, columns: predicted class
    }


def binary_report(truth: np.ndarray, pred: np.ndarray, positive: int) -> dict[str, float]:
    """Precision, recall and F1 of one class over labelled cells."""
    keep = truth >= 0
    t, p = truth[keep] == positive, pred[keep] == positive
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": float((t == p).mean()),
            "tp": tp, "fp": fp, "fn": fn}
