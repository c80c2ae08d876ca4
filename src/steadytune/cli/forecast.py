"""`steadytune forecast fit|eval`: a failure forecaster from the first steps of stored trials."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.table import Table

from ..forecast.evaluation import FRACTIONS, evaluate, fit_on, held_out_grids, pooled, score
from ..forecast.model import Forecaster, resolve
from ..forecast.policies import compute_to_reach, simulate
from .common import console, finite, print_table, reports_user_errors

forecast_app = typer.Typer(no_args_is_help=True, help="Forecast failing runs (final dev score at or below the "
                           "majority baseline) from what they logged in their first steps.")
Stores = Annotated[list[str], typer.Argument(help="Result stores (.db files or postgresql:// URLs) of finished "
                                             "trials; their trials are pooled.")]
Studies = Annotated[Optional[list[str]], typer.Option(
    "--study", help="Only the trials of this study (repeat for several): a store's grid without its other arms.")]


@forecast_app.command("fit")
@reports_user_errors
def fit_command(stores: Stores,
                fraction: Annotated[float, typer.Option(parser=finite(0.01, 1.0), help="Share of training the forecaster "
                                                        "reads (Dodge et al. cut at 0.2-0.3).")] = 0.2,
                out: Annotated[Path, typer.Option(help="Where to write the forecaster (JSON).")] = Path(
                    "forecaster.json"),
                study: Studies = None) -> None:
    """Fit a forecaster (logistic regression on fixed features) on every finished trial of the stores."""
    trials, curves = pooled(stores, study or ())
    forecaster = fit_on(trials, curves, fraction, f"{len(trials)} trials ({int(trials['failed'].sum())} failed) of "
                        f"{', '.join(sorted(trials['task'].unique()))} from {len(stores)} store(s)")
    forecaster.save(out)
    table = Table("feature", "weight (standardized)", "mean", "scale")
    for name, weight, mean, scale in zip(forecaster.features, forecaster.coef, forecaster.mean, forecaster.scale):
        table.add_row(name, f"{weight:+.3f}", f"{mean:.4g}", f"{scale:.4g}")
    print_table(table, f"forecaster at {fraction:g} of training, fit on {forecaster.fitted_on}: {out}")


@forecast_app.command("eval")
@reports_user_errors
def eval_command(stores: Stores,
                 threshold: Annotated[float, typer.Option(parser=finite(0.0, 1.0), help="Flag a run when P(failed) is at "
                                                          "least this.")] = 0.5,
                 forecaster: Annotated[Optional[str], typer.Option(
                     help="Score this forecaster file ('default': the one that ships with steadytune) on each task of "
                     "the stores, at its own fraction, instead of holding tasks out.")] = None,
                 study: Studies = None) -> None:
    """Hold each task (or, with one task, each store) out in turn: fit on the rest, score on it at 5/10/20/30%."""
    trials, curves = pooled(stores, study or ())
    if forecaster is None:
        frame = evaluate(trials, curves, FRACTIONS, threshold)
        title = f"held-out forecasts over {len(trials)} trials"
    else:
        given = Forecaster.load(resolve(forecaster))
        frame = pd.DataFrame([{"held_out": task, **score(given, own, curves, threshold)}
                              for task, own in trials.groupby("task")])
        title = f"forecaster {forecaster} (fit on {given.fitted_on}) over {len(trials)} trials"
    table = Table("held out" if forecaster is None else "task", "at", "runs", "failed", "flagged", "precision",
                  "recall", "AUC", "saved (perfect)", "saved (fitted)", "good stopped", "note")

    def cell(value, digits: str = ".2f") -> str:
        return "-" if value != value else format(value, digits)
    for row in frame.fillna({"note": ""}).to_dict("records"):
        table.add_row(str(row["held_out"]), f"{row['fraction']:.0%}", str(row["runs"]), str(row.get("failed", "-")),
                      str(row.get("flagged", "-")), cell(row.get("precision", float("nan"))),
                      cell(row.get("recall", float("nan"))), cell(row.get("auc", float("nan"))),
                      cell(row.get("saved_perfect", float("nan")), ".1%"),
                      cell(row.get("saved_fitted", float("nan")), ".1%"), str(row.get("good_stopped", "-")),
                      row["note"])
    print_table(table, f"{title} (flag at P(failed) >= {threshold:g}); saved: share of the grid's compute")


@forecast_app.command("simulate")
@reports_user_errors
def simulate_command(stores: Stores,
                     budget: Annotated[int, typer.Option(min=1, help="Budget in full-trial units.")] = 10,
                     fraction: Annotated[float, typer.Option(parser=finite(0.01, 0.99), help="Where the forecaster (and "
                                                             "Dodge's cut) reads the runs.")] = 0.2,
                     threshold: Annotated[float, typer.Option(parser=finite(0.0, 1.0), help="Flag a run when P(failed) "
                                                              "is at least this.")] = 0.5,
                     study: Studies = None) -> None:
    """Replay full, Dodge, replace and Dodge+replace on recorded grids, without training.

    Each grid is held out from the forecaster it uses. Prints each policy's expected best dev score and failures
    for the budget, and the compute each needs to reach the whole grid's expected best.
    """
    trials, curves = pooled(stores, study or ())
    for held, final, failed, early, flagged in held_out_grids(trials, curves, fraction, threshold):
        table = Table("policy", "expected best", "sd", "failures trained", "cost")
        for row in simulate(final, failed, early, flagged, fraction, budget).itertuples():
            table.add_row(row.policy, f"{row.expected:.4f}", f"{row.sd:.4f}",
                          "-" if row.failures != row.failures else f"{row.failures:.2f}", f"{row.cost:.2f}")
        print_table(table, f"{held}: {len(final)} runs, {int(failed.sum())} failed, {int(flagged.sum())} flagged at "
                           f"{fraction:.0%}; budget {budget} full trials")
        reach = compute_to_reach(final, failed, early, flagged, fraction)
        console.print("compute to reach the whole grid's expected best: " + ", ".join(
            f"{row.policy} {'never' if row.compute_share != row.compute_share else f'{row.compute_share:.0%}'}"
            for row in reach.itertuples()), soft_wrap=True)
