"""`steadytune runs` and `steadytune export`: what is in a store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from ..config import ConfigError
from ..store import Store, export as export_frame
from .common import console, fmt_metric, reports_user_errors

STORE_ARGUMENT = typer.Argument(help="Result store (SQLite file).", exists=True, dir_okay=False)


@reports_user_errors
def runs(store: Annotated[Path, STORE_ARGUMENT]) -> None:
    """Table of the trials in a store: seeds, status, best and final dev metric, baseline, time."""
    with Store(store) as db:
        trials = db.trials()
    table = Table(title=f"{store}: {len(trials)} trials")
    left = ("task", "model", "recipe", "status", "metric")
    for column in ("id", "study", "task", "model", "recipe", "wi", "do", "drop", "status", "steps", "metric", "best",
                   "final", "baseline", "time"):
        table.add_column(column, justify="left" if column in left else "right")
    for row in trials.itertuples():
        table.add_row(str(row.id), "-" if pd.isna(row.study_id) else str(int(row.study_id)), row.task,
                      Path(row.model).name, row.recipe or "-", str(row.wi_seed), str(row.do_seed),
                      str(row.dropout_seed), row.status, f"{0 if pd.isna(row.steps_done) else int(row.steps_done)}/{'?' if pd.isna(row.total_steps) else int(row.total_steps)}",
                      row.metric or "-", fmt_metric(row.best_metric), fmt_metric(row.final_metric),
                      fmt_metric(row.baseline_metric),
                      "-" if pd.isna(row.wall_seconds) else f"{row.wall_seconds:.0f}s")
    console.print(table)


@reports_user_errors
def export(
    store: Annotated[Path, STORE_ARGUMENT],
    what: Annotated[str, typer.Option(help="trials (one flat row per trial, config as cfg.* columns) or curves "
                                      "(step, epoch, split, metric, value).")] = "trials",
    format: Annotated[str, typer.Option(help="csv or parquet.")] = "csv",
    out: Annotated[Path, typer.Option(help="Output file.")] = Path("trials.csv"),
) -> None:
    """Export trials or curves to CSV or Parquet for analysis elsewhere."""
    if what not in ("trials", "curves"):
        raise ConfigError(f"--what must be trials or curves, not {what!r}")
    if format not in ("csv", "parquet"):
        raise ConfigError(f"--format must be csv or parquet, not {format!r}")
    with Store(store) as db:
        count = export_frame(db, what, format, out)
    console.print(f"wrote {count} {what} rows to {out}")
