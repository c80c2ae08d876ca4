"""The failure forecaster: logistic regression on standardized features (scikit-learn fits it), kept as plain
JSON (feature names, means, scales, coefficients), never a pickle, and checked when read back.

P(failed) = 1 / (1 + exp(-(b + sum_j w_j (x_j - mean_j) / scale_j))). "Failed" is Mosbach et al.'s: the
final dev score at or below the majority baseline, or a diverged run. Classes are weighted by their
inverse frequency (failures are rare), and the L2 penalty is scikit-learn's default (C = 1).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .features import FEATURES

FORMAT = "steadytune-forecaster-1"
# Fit on real recorded trials by experiments/fit_default_forecaster.py, from the feature rows beside it.
DEFAULT = "default"
DEFAULT_PATH = Path(__file__).with_name("default.json")


class ForecastError(ValueError):
    """A forecaster file that cannot be used, or data it cannot be fit on; the message is one line."""


@dataclass(frozen=True)
class Forecaster:
    fraction: float                  # the share of training whose logs it reads
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: str                   # which trials, in words

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        x = table[list(self.features)].to_numpy(dtype=float)
        z = self.intercept + ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef)
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Forecaster:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ForecastError(f"{path}: not a readable forecaster ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ForecastError(f"{path}: not a steadytune forecaster (format {FORMAT} expected)")
        try:
            features = tuple(str(f) for f in data["features"])
            numbers = {k: tuple(float(v) for v in data[k]) for k in ("mean", "scale", "coef")}
            fraction, intercept = float(data["fraction"]), float(data["intercept"])
        except (KeyError, TypeError, ValueError) as err:
            raise ForecastError(f"{path}: damaged forecaster ({type(err).__name__}: {err})") from None
        values = [fraction, intercept, *numbers["mean"], *numbers["scale"], *numbers["coef"]]
        if (not set(features) <= set(FEATURES) or any(len(v) != len(features) for v in numbers.values())
                or not all(math.isfinite(v) for v in values) or min(numbers["scale"], default=1) <= 0
                or not 0 < fraction <= 1):
            raise ForecastError(f"{path}: damaged forecaster (unknown features, lengths that differ, or values "
                                f"out of range)")
        return cls(fraction, features, numbers["mean"], numbers["scale"], numbers["coef"], intercept,
                   str(data.get("fitted_on", "")))


def resolve(forecaster: str | Path) -> Path:
    """A forecaster file, or the one that ships with steadytune ('default')."""
    return DEFAULT_PATH if str(forecaster) == DEFAULT else Path(forecaster)


def fit(table: pd.DataFrame, failed: pd.Series, fraction: float, fitted_on: str) -> Forecaster:
    """Fit on a feature table (feature_table's rows) and each row's failed label."""
    from sklearn.linear_model import LogisticRegression

    labels = failed.to_numpy(dtype=bool)
    if labels.all() or not labels.any():
        raise ForecastError(f"cannot fit a forecaster on {len(labels)} trials that all "
                            f"{'failed' if labels.all() else 'succeeded'}: it needs both kinds")
    x = table[list(FEATURES)].to_numpy(dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature tells nothing; it keeps weight 0
    model = LogisticRegression(class_weight="balanced").fit((x - mean) / scale, labels)
    return Forecaster(fraction, FEATURES, tuple(mean), tuple(scale), tuple(model.coef_[0]), float(model.intercept_[0]),
                      fitted_on)
