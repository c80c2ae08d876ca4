"""Metrics against values computed by hand on small arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest

from steadytune.data.metrics import compute_metrics, primary
from steadytune.data.tasks import custom_task, get_task

LABELS = np.array([1, 1, 1, 0, 0, 1])
PREDS = np.array([1, 0, 1, 0, 1, 1])  # TP=3, FN=1, TN=1, FP=1


def test_accuracy_only_for_rte():
    assert compute_metrics(get_task("rte"), PREDS, LABELS) == {"accuracy": pytest.approx(4 / 6)}


def test_mrpc_f1_and_accuracy():
    metrics = compute_metrics(get_task("mrpc"), PREDS, LABELS)
    precision, recall = 3 / 4, 3 / 4
    assert metrics == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(2 * precision * recall / (precision + recall))}
    assert primary(get_task("mrpc"), metrics) == metrics["f1"]


def test_cola_mcc():
    metrics = compute_metrics(get_task("cola"), PREDS, LABELS)
    tp, tn, fp, fn = 3, 1, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics["mcc"] == pytest.approx(mcc) and metrics["accuracy"] == pytest.approx(4 / 6)
    assert primary(get_task("cola"), metrics) == pytest.approx(0.25)


def test_constant_predictions_are_zero_not_nan():
    cola = compute_metrics(get_task("cola"), np.ones(6, dtype=int), LABELS)
    assert cola["mcc"] == 0.0
    mrpc = compute_metrics(get_task("mrpc"), np.zeros(6, dtype=int), LABELS)
    assert mrpc["f1"] == 0.0
    stsb = compute_metrics(get_task("stsb"), np.full(4, 2.5), np.array([0.0, 1.0, 4.0, 5.0]))
    assert stsb == {"pearson": 0.0, "spearman": 0.0}
    diverged = compute_metrics(get_task("stsb"), np.array([np.nan, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 4.0, 5.0]))
    assert diverged == {"pearson": 0.0, "spearman": 0.0}


def test_stsb_pearson_spearman():
    labels = np.array([0.0, 1.0, 2.0, 3.0])
    preds = np.array([0.0, 1.0, 2.0, 4.0])
    x, y = preds - preds.mean(), labels - labels.mean()
    pearson = (x @ y) / math.sqrt((x @ x) * (y @ y))
    metrics = compute_metrics(get_task("stsb"), preds.astype(np.float32), labels.astype(np.float32))
    assert metrics["pearson"] == pytest.approx(pearson, rel=1e-6)
    assert metrics["spearman"] == pytest.approx(1.0)  # same ranks
    assert primary(get_task("stsb"), metrics) == metrics["pearson"]


def test_custom_task_metrics():
    assert set(compute_metrics(custom_task(["a", "b"], "mcc"), PREDS, LABELS)) == {"accuracy", "mcc"}
    three = compute_metrics(custom_task(["a", "b", "c"]), np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    assert three == {"accuracy": 0.75}


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        compute_metrics(get_task("rte"), PREDS[:3], LABELS)
    with pytest.raises(ValueError):
        compute_metrics(get_task("rte"), np.array([]), np.array([]))
