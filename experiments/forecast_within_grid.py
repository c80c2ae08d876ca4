"""Is there a failure signal inside one grid at all? The check behind the forecaster's held-out figures.

`steadytune forecast eval` holds a whole task out: a forecaster fit on one task's grid is scored on another's.
This script asks the easier question, per grid: fit on the grid's other WI seeds (rows of the grid) and score
the held-out row, at 10/20/30% of training; and how Dodge et al.'s signal alone (the dev score's margin over
the majority baseline at that point) ranks the grid's runs. Where these are high and the cross-task figures
low, the signal exists but does not carry from one task to another.

    python experiments/forecast_within_grid.py runs/reproduce-small.db \
        --study reproduce-small-learning-rte-grid --study forecast-sst2-lr1.5e-4-grid
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from steadytune.forecast.evaluation import pooled
from steadytune.forecast.features import feature_table
from steadytune.forecast.model import fit

FRACTIONS = (0.1, 0.2, 0.3)


def within_grid(trials: pd.DataFrame, curves: pd.DataFrame, fraction: float) -> dict:
    table = feature_table(trials, curves, fraction)
    described = trials.set_index("id").loc[table["id"]]
    truth, rows = described["failed"].to_numpy(bool), described["wi_seed"].to_numpy()
    probability = np.empty(len(table))
    for held in np.unique(rows):
        train = rows != held
        forecaster = fit(table[train].reset_index(drop=True), pd.Series(truth[train]), fraction, f"all but WI {held}")
        probability[~train] = forecaster.probability(table[~train].reset_index(drop=True))
    both = 0 < truth.sum() < len(truth)
    return {"at": f"{fraction:.0%}", "runs": len(table), "failed": int(truth.sum()),
            "AUC, WI seed held out": roc_auc_score(truth, probability) if both else np.nan,
            "AUC, dev margin alone": roc_auc_score(truth, -table["dev_margin"]) if both else np.nan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="A store holding complete seed grids.")
    parser.add_argument("--study", dest="studies", action="append", required=True,
                        help="A grid's study name (repeatable); each is checked on its own.")
    args = parser.parse_args()
    rows = []
    for study in args.studies:
        trials, curves = pooled([args.store], [study])
        rows += [{"grid": study, **within_grid(trials, curves, fraction)} for fraction in FRACTIONS]
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
