"""`steadytune runs` and `steadytune export`: what is in a store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich import box
from rich.table import Table

from ..config import ConfigError
from ..storage.store import Store
from ..storage.store import export as export_frame
from ..training.records import TrialStatus
from .common import console, fmt_metric, print_table, progress_bar, reports_user_errors

# Existence is checked by Store, whose one-line error keeps a long path whole (typer's error box would wrap it).
STORE_ARGUMENT = typer.Argument(help="Result store: a SQLite file, or a postgresql:// URL.")


@reports_user_errors
def runs(store: Annotated[str, STORE_ARGUMENT],
         study: Annotated[Optional[list[str]], typer.Option("--study", help="Only this study's trials "
                                                            "(repeatable).")] = None) -> None:
    """Table of the trials in a store: seeds, status, best and final dev metric, baseline, time."""
    with Store(store, readonly=True) as db:
        trials, label = db.trials(), db.label
        if study:
            ids = {number: name for number, name in db.study_names().items() if name in study}
            missing = sorted(set(study) - set(ids.values()))
            if missing:
                raise ConfigError(f"{label}: no study named {missing[0]!r} (`steadytune studies {label}` lists them)")
            trials = trials[trials["study_id"].isin(list(ids))].reset_index(drop=True)
    # Columns that are the same for every trial go in the heading, so the table fits an 80-column terminal.
    # The heading is one line that is never wrapped: a long store path must stay whole, whatever the width.
    shared = {column: trials[column].unique() for column in ("study_id", "task", "model", "recipe", "metric")}
    shared = {column.removesuffix("_id"): values[0] for column, values in shared.items() if len(values) == 1}
    heading = f"{label}: {len(trials)} trials" + "".join(
        f", {column} {Path(value).name if column == 'model' else value}"
        for column, value in shared.items() if not pd.isna(value))
    console.print(heading)
    for note in store_notes(trials):
        console.print(f"note: {note}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = ["id", "study", "task", "model", "recipe", "wi/do/drop", "status", "steps", "metric", "best", "final",
               "base", "time"]
    for column in (c for c in columns if c not in shared):
        table.add_column(column, justify="left" if column in ("task", "model", "recipe", "status", "metric")
                         else "right")
    for row in trials.itertuples():
        cells = {"id": str(row.id), "study": _count(row.study_id, "-"), "task": row.task,
                 "model": Path(row.model).name, "recipe": "-" if pd.isna(row.recipe) else row.recipe,
                 "wi/do/drop": f"{row.wi_seed}/{row.do_seed}/{row.dropout_seed}", "status": row.status,
                 "steps": f"{_count(row.steps_done, '0')}/{_count(row.total_steps, '?')}", "metric": "-" if pd.isna(row.metric) else row.metric,
                 "best": fmt_metric(row.best_metric), "final": fmt_metric(row.final_metric),
                 "base": fmt_metric(row.baseline_metric),
                 "time": "-" if pd.isna(row.wall_seconds) else f"{row.wall_seconds:.0f}s"}
        table.add_row(*(cells[c] for c in columns if c not in shared))
    print_table(table)


def store_notes(trials: pd.DataFrame) -> list[str]:
    """What a reader of the store should know: one config run more than once, and mixed thread counts."""
    from ..analysis.results import duplicate_results, thread_mix

    notes = []
    duplicates = duplicate_results(trials)
    if duplicates:
        notes.append(f"{duplicates} result(s) repeat a trial key already recorded; analyses count each key once")
    mix = thread_mix(trials)
    if mix:
        notes.append(mix)
    return notes


def _count(value, missing: str) -> str:
    return missing if pd.isna(value) else str(int(value))


@reports_user_errors
def export(
    store: Annotated[str, STORE_ARGUMENT],
    what: Annotated[str, typer.Option(help="trials (one flat row per trial, config as cfg.* columns), curves "
                                      "(step, epoch, split, metric, value) or predictions (per example: split, point "
                                      "final/best/gold, step, example, value).")] = "trials",
    format: Annotated[str, typer.Option(help="csv or parquet.")] = "csv",
    out: Annotated[Path, typer.Option(help="Output file.")] = Path("trials.csv"),
    to: Annotated[Optional[str], typer.Option(help="Instead of a file, push every finished trial to a tracker: "
                                              "mlflow[=TRACKING_URI], one run per trial with its config, seeds and "
                                              "curves (default URI: MLflow's own). Trials pushed before are "
                                              "skipped.")] = None,
) -> None:
    """Export trials, curves or per-example predictions to CSV or Parquet for analysis elsewhere, or push the
    finished trials to MLflow (--to mlflow)."""
    if to is not None:
        if (what, format, out) != ("trials", "csv", Path("trials.csv")):
            raise ConfigError("--to pushes every finished trial to a tracker; --what, --format and --out apply to "
                              "files")
        _push(store, to)
        return
    if what not in ("trials", "curves", "predictions"):
        raise ConfigError(f"--what must be trials, curves or predictions, not {what!r}")
    if format not in ("csv", "parquet"):
        raise ConfigError(f"--format must be csv or parquet, not {format!r}")
    with Store(store, readonly=True) as db:
        count = export_frame(db, what, format, out)
    console.print(f"wrote {count} {what} rows to {out}")


def _push(store: str, to: str) -> None:
    from ..config import mlflow_tracking_uri
    from ..studies.trackers import export_to_mlflow, parse_track

    try:
        targets = parse_track(to)
    except ValueError as err:
        raise ConfigError(str(err).replace("--track", "--to")) from None
    if len(targets) != 1 or targets[0].kind != "mlflow":
        raise ConfigError("--to takes mlflow[=TRACKING_URI]; TensorBoard logs are written while trials run (--track)")
    try:
        import mlflow  # noqa: F401 - only to say what is missing before any work
    except ImportError:
        raise ConfigError("--to mlflow needs MLflow: pip install 'steadytune[trackers]'") from None
    target = targets[0]
    with Store(store, readonly=True) as db, progress_bar() as bar:
        task = bar.add_task("to MLflow", total=None)
        pushed, skipped = export_to_mlflow(db, target.target, lambda done, total: bar.update(task, completed=done,
                                                                                           total=total))
    console.print(f"pushed {pushed} trial(s) to MLflow ({mlflow_tracking_uri(target.target)}); {skipped} were "
                  f"there already", soft_wrap=True)


@reports_user_errors
def studies(store: Annotated[str, STORE_ARGUMENT]) -> None:
    """The studies in a store: their trials by status, their drivers alive, and whether they are cancelled."""
    from ..studies.status import study_status

    with Store(store, readonly=True) as db:
        found, label = study_status(db), db.label
    console.print(f"{label}: {len(found)} studies", soft_wrap=True, markup=False)
    table = Table("id", "study", "planned", "complete", "running", "queued", "failed", "drivers", "",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for s in found:
        table.add_row(str(s.study_id), s.name, str(s.planned), str(s.count(TrialStatus.COMPLETE)),
                      str(len(s.running)), str(s.queued), str(s.count(TrialStatus.FAILED)), str(len(s.drivers)),
                      "cancelled" if s.cancelled else "")
    print_table(table)
