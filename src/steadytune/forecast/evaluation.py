"""How well a forecaster fit on some grids tells the failures of a grid it never saw.

Trials of several stores are pooled; each group (a task, or a store when there is one task) is held out
in turn: the forecaster is fit on the others at a fraction f of training and scored on it. Per held-out
group and fraction: precision and recall of the flag P(failed) >= threshold, the AUC, and the compute each
policy would save, in shares of the group's full-trial compute: a perfect forecaster stops exactly the
failing runs at f (saving (1 - f) of each), the fitted one stops the runs it flags, including good runs
it wrongly flags (counted as `good_stopped`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.failures import failed
from ..analysis.results import is_export, load_results
from ..storage.connections import shown_location
from ..storage.store import Store
from .features import feature_table
from .model import Forecaster, ForecastError, fit

FRACTIONS = (0.05, 0.10, 0.20, 0.30)


def pooled(stores: list[Path | str], studies: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Result trials (with `source` and `failed`) and their curves from several stores, with ids made unique;
    with `studies`, only the trials of the studies of those names (in the stores that have them)."""
    names = {store: _study_names(store) for store in stores} if studies else {}
    missing = sorted(set(studies).difference(*names.values()))
    if missing:
        raise ForecastError(f"no store holds study {', '.join(missing)}")
    trials, curves, offset = [], [], 0
    for store in stores:
        chosen = [name for name in studies if name in names[store]]
        if studies and not chosen:
            continue
        results = load_results(store, studies=chosen)
        own = results.trials.assign(source=shown_location(store), failed=failed(results.trials))
        trials.append(own.assign(id=own["id"] + offset))
        curves.append(results.curves.assign(trial_id=results.curves["trial_id"] + offset))
        offset += int(results.all_trials["id"].max()) + 1
    return pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True)


def _study_names(store: Path | str) -> set[str]:
    if is_export(store):
        return set()
    with Store(store, readonly=True) as opened:
        return set(opened.study_names().values())


def fit_on(trials: pd.DataFrame, curves: pd.DataFrame, fraction: float, fitted_on: str) -> Forecaster:
    table = feature_table(trials, curves, fraction)
    return fit(table, trials.set_index("id").loc[table["id"], "failed"].reset_index(drop=True), fraction, fitted_on)


def holdout_groups(trials: pd.DataFrame) -> pd.Series:
    if trials["task"].nunique() >= 2:
        return trials["task"]
    if trials["source"].nunique() >= 2:
        return trials["source"]
    raise ForecastError("holding a grid out needs trials of two tasks or two stores")


def evaluate(trials: pd.DataFrame, curves: pd.DataFrame, fractions=FRACTIONS, threshold: float = 0.5) -> pd.DataFrame:
    """Per held-out group and fraction: a forecaster fit on the other groups, scored on it."""
    groups, rows = holdout_groups(trials), []
    for held in sorted(groups.unique()):
        train, test = trials[groups != held], trials[groups == held]
        for fraction in fractions:
            try:
                forecaster = fit_on(train, curves, fraction, f"all but {held}")
            except ForecastError as err:
                rows.append({"held_out": held, "fraction": fraction, "runs": len(test), "note": str(err)})
                continue
            rows.append({"held_out": held, **score(forecaster, test, curves, threshold)})
    return pd.DataFrame(rows)


def score(forecaster: Forecaster, trials: pd.DataFrame, curves: pd.DataFrame, threshold: float = 0.5) -> dict:
    """How a given forecaster tells the failures of these trials, at its own fraction."""
    from sklearn.metrics import roc_auc_score

    table = feature_table(trials, curves, forecaster.fraction)
    truth = trials.set_index("id").loc[table["id"], "failed"].to_numpy(dtype=bool)
    probability = forecaster.probability(table)
    flagged = probability >= threshold
    rest = 1 - table["step"].to_numpy() / table["total_steps"].to_numpy()
    return {"fraction": forecaster.fraction, "runs": len(trials), "failed": int(truth.sum()),
            "flagged": int(flagged.sum()),
            "precision": (truth & flagged).sum() / flagged.sum() if flagged.any() else np.nan,
            "recall": (truth & flagged).sum() / truth.sum() if truth.any() else np.nan,
            "auc": roc_auc_score(truth, probability) if 0 < truth.sum() < len(truth) else np.nan,
            "saved_perfect": rest[truth].sum() / len(trials), "saved_fitted": rest[flagged].sum() / len(trials),
            "good_stopped": int((flagged & ~truth).sum()), "note": ""}


def held_out_grids(trials: pd.DataFrame, curves: pd.DataFrame, fraction: float, threshold: float = 0.5):
    """Per held-out group: its runs' final scores, failed labels, dev scores at `fraction` and the flags of a
    forecaster fit on the other groups: what the policy simulator replays."""
    from ..analysis.early import scores_at
    from ..analysis.results import dev_trajectory

    groups = holdout_groups(trials)
    trajectory = dev_trajectory(trials, curves)
    for held in sorted(groups.unique()):
        train, test = trials[groups != held], trials[groups == held]
        forecaster = fit_on(train, curves, fraction, f"all but {held}")
        table = feature_table(test, curves, fraction)
        own = trajectory[trajectory["trial_id"].isin(test["id"])]
        early = (scores_at(own, [fraction]).reindex(test["id"])[fraction].to_numpy() if not own.empty
                 else np.full(len(test), np.nan))
        yield (held, test["final"].to_numpy(float), test["failed"].to_numpy(bool), early,
               forecaster.probability(table) >= threshold)
