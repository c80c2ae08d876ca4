"""Fit the failure forecaster that ships with steadytune (src/steadytune/forecast/default.json).

Two steps, so that the fit can be re-run from the repository alone:

  python experiments/fit_default_forecaster.py --from runs/reproduce-small.db ... [--study NAME ...]
      reads the finished trials of real stores and writes one row per trial (its features at the forecaster's
      fraction, and whether it failed) to src/steadytune/forecast/default-trials.csv;
  python experiments/fit_default_forecaster.py
      fits the logistic regression (forecast.model.fit) on that CSV and writes default.json.

The rows come from real MiniLM-L6 runs (all-MiniLM-L6-v2, a sentence-embedding checkpoint), so the default
forecaster knows that model at the settings recorded; fit your own (`steadytune forecast fit`) for others.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from steadytune.forecast.evaluation import pooled
from steadytune.forecast.features import FEATURES, feature_table
from steadytune.forecast.model import DEFAULT_PATH, fit

ROWS = DEFAULT_PATH.with_name("default-trials.csv")
FRACTION = 0.2  # Dodge et al. cut at 20-30% of training
DESCRIBING = ["source", "task", "model", "recipe", "lr", "optimizer", "epochs", "wi_seed", "do_seed"]


def rows_from(stores: list[str], studies: list[str]) -> pd.DataFrame:
    trials, curves = pooled(stores, studies)
    table = feature_table(trials, curves, FRACTION).set_index("id")
    described = trials.set_index("id").rename(columns={"cfg.lr": "lr", "cfg.optimizer": "optimizer",
                                                       "cfg.epochs": "epochs"})
    described["source"] = described["source"].map(lambda location: Path(str(location)).name)
    out = described.loc[table.index, DESCRIBING].join(table[["total_steps", "step", *FEATURES]])
    return out.assign(failed=described.loc[table.index, "failed"].astype(int)).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="stores", nargs="+", help="Real stores whose finished trials make the rows.")
    parser.add_argument("--study", dest="studies", action="append", default=[],
                        help="Only the trials of this study (repeatable), e.g. a store's seed grids.")
    args = parser.parse_args()
    if args.stores:
        rows_from(args.stores, args.studies).to_csv(ROWS, index=False, float_format="%.10g")
    rows = pd.read_csv(ROWS)
    tasks = ", ".join(f"{task} {len(own)} ({int(own['failed'].sum())} failed)" for task, own in rows.groupby("task"))
    forecaster = fit(rows, rows["failed"].astype(bool), FRACTION,
                     f"{len(rows)} real MiniLM-L6 trials of {ROWS.name}: {tasks}")
    forecaster.save(DEFAULT_PATH)
    print(f"{DEFAULT_PATH}: {forecaster.fitted_on}")


if __name__ == "__main__":
    main()
