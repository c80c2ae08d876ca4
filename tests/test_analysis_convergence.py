"""Steps to a training-loss threshold, against a direct computation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steadytune.analysis.convergence import final_smoothed_loss, steps_to_loss


def curves_of(runs: dict[int, list[float]]) -> pd.DataFrame:
    rows = [(trial, step, epoch, "train", "loss", value)
            for trial, values in runs.items() for step, value in enumerate(values, start=1) for epoch in [step / 10]]
    noise = [(trial, 1, 0.1, "dev", "f1", 0.0) for trial in runs]  # other curves are ignored
    return pd.DataFrame(rows + noise, columns=["trial_id", "step", "epoch", "split", "metric", "value"])


def direct(values: list[float], threshold: float, window: int) -> float:
    for end in range(window, len(values) + 1):
        if sum(values[end - window:end]) / window <= threshold:
            return float(end)
    return float("nan")


def test_steps_to_loss_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    runs = {trial: list(np.exp(-np.linspace(0, 3, 60) * rng.uniform(0.3, 1.5)) + rng.normal(0, 0.05, 60))
            for trial in range(1, 7)}
    curves = curves_of(runs)
    for window in (1, 5, 10):
        for threshold in (0.9, 0.5, 0.2):
            found = steps_to_loss(curves, threshold, window)
            for trial, values in runs.items():
                assert found[trial] == pytest.approx(direct(values, threshold, window), nan_ok=True)


def test_hand_computed_case():
    curves = curves_of({7: [5, 4, 3, 2, 1, 1], 8: [5, 5, 5, 5, 5, 5]})
    # Trailing means over 2 steps: 4.5 3.5 2.5 1.5 1.0 (trial 7); never below 5 (trial 8).
    reached = steps_to_loss(curves, 2.5, 2)
    assert reached[7] == 4 and np.isnan(reached[8])
    assert final_smoothed_loss(curves, 2).to_dict() == {7: 1.0, 8: 5.0}
    with pytest.raises(ValueError):
        steps_to_loss(curves, 1.0, 0)
