"""`steadytune train`: one trial, recorded in the store, with its dev curve printed."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..config import ConfigError
from ..storage.store import Store, TrialOutcome, store_folder_made
from ..studies.single import run_stored
from ..training.trial import Trial
from .common import (
    RECONNECT_MINUTES,
    STORE_HELP,
    ReconnectMinutes,
    console,
    err_console,
    escape,
    fmt_metric,
    print_table,
    progress_bar,
    reports_user_errors,
    resolve_config,
    resolve_run_options,
    stop_bar,
    with_config_flags,
)


@reports_user_errors
@with_config_flags
def train(
    store: Annotated[str, typer.Option(help=STORE_HELP, rich_help_panel="Run")] = "runs.db",
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML or TOML file of the same options "
                                                   "(flags override it).", rich_help_panel="Run")] = None,
    reconnect_minutes: ReconnectMinutes = RECONNECT_MINUTES,
    *, flags: dict[str, Any], run_flags: dict[str, Any],
) -> None:
    """Run one fine-tuning trial and record it (config, seeds, curves, metrics) in the store.

    A config already complete in the store is not run again (trials are deterministic): its result is shown.
    """
    trial_config = resolve_config(flags, config)
    options = resolve_run_options(run_flags)
    if options.pack > 1:
        raise ConfigError("--pack trains several seeds as one: it applies to `steadytune study run`")
    bar = progress_bar("loss {task.fields[loss]:.4f}  best dev {task.fields[best]}")
    task_id = None

    def on_step(step: int, total: int, values: dict[str, float]) -> None:
        nonlocal task_id
        if task_id is None:  # the bar appears once training runs, never over an input error
            bar.start()
            task_id = bar.add_task(f"{trial_config.task} {Path(trial_config.model).name}", total=total,
                                   loss=float("nan"), best="-")
        best = values["best"]
        bar.update(task_id, completed=step, total=total, loss=values["loss"],
                   best="-" if best == float("-inf") else f"{best:.4f}")

    with Store(store_folder_made(store), reconnect_seconds=60 * reconnect_minutes) as db:
        try:
            trial_id, outcome, reused = run_stored(trial_config, options, db, progress=on_step,
                                                   on_prepared=lambda trial: _notes(trial))
        finally:
            stop_bar(bar)
        if reused:
            console.print(f"trial {trial_id} of {db.label} already holds this config's result (trials are deterministic);"
                          f" not run again", soft_wrap=True)
        print_outcome(db, trial_id, outcome)


def _notes(trial: Trial) -> None:
    for note in trial.inputs.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", markup=True, soft_wrap=True)


def print_outcome(db: Store, trial_id: int, outcome: TrialOutcome) -> None:
    curve = db.curves([trial_id])
    dev = curve[curve.split == "dev"].pivot_table(index=["step", "epoch"], columns="metric", values="value")
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    for metric in dev.columns:
        table.add_column(metric, justify="right")
    for (step, epoch), row in dev.iterrows():
        table.add_row(str(step), f"{epoch:.2f}", *(f"{v:.4f}" for v in row))
    print_table(table, f"trial {trial_id}: dev curve ({outcome.metric} is tracked)")
    per_step = outcome.wall_seconds / max(outcome.steps_done, 1)
    console.print(f"status [bold]{escape(outcome.status)}[/]  steps {outcome.steps_done}/{outcome.total_steps}  "
                  f"final {escape(outcome.metric)} {fmt_metric(outcome.final_metrics.get(outcome.metric))}  "
                  f"best {fmt_metric(outcome.best_metrics.get(outcome.metric))} (step {outcome.best_step})  "
                  f"majority baseline {fmt_metric(outcome.baseline_metric)}  "
                  f"{outcome.wall_seconds:.0f}s ({per_step:.3f} s/step incl. evaluation)", markup=True)
