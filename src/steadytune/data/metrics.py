"""GLUE metrics: accuracy, binary F1, Matthews correlation, Pearson/Spearman correlation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

if TYPE_CHECKING:
    from .tasks import TaskSpec


def _correlation(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    # A constant (or non-finite, i.e. diverged) predictor carries no information: score it 0, not NaN.
    if not np.all(np.isfinite(predictions)) or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(fn(predictions, labels)[0])


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                    sentence_offsets: np.ndarray | None = None) -> dict[str, float]:
    """The task's metrics of `predictions` (class ids, or floats for regression) against `labels`. A tagging task's
    are per word, sentence after sentence, and `sentence_offsets` says where each sentence starts."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equal-length non-empty 1-d arrays, got {predictions.shape} and {labels.shape}")
    if task.tagging:
        from ..tagging.scoring import tagging_metrics  # seqeval is only needed here

        if sentence_offsets is None or sentence_offsets[-1] != len(labels):
            raise ValueError("a tagging task's metrics need the offsets of its sentences")
        return tagging_metrics(task.label_names, predictions, labels, sentence_offsets)
    if task.is_regression:
        predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
        return {
            "pearson": _correlation(pearsonr, predictions, labels),
            "spearman": _correlation(spearmanr, predictions, labels),
        }
    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    if task.metric == "f1" or task.name == "mrpc":
        metrics["f1"] = float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))
    if task.metric == "mcc" or task.name == "cola":
        metrics["mcc"] = float(matthews_corrcoef(labels, predictions))
    return metrics


def primary(task: TaskSpec, metrics: dict[str, float]) -> float:
    """The task's headline metric (the one model selection and reports use)."""
    return metrics[task.metric]
