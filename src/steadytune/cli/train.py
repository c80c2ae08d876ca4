"""`steadytune train`: one trial, recorded in the store, with its dev curve printed."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..store import Store, TrialOutcome
from ..trial import run_stored
from .common import (console, fmt_metric, reports_user_errors, resolve_config, resolve_run_options, training_progress,
                     with_config_flags)


@reports_user_errors
@with_config_flags
def train(
    store: Annotated[Path, typer.Option(help="SQLite result store (created if missing).", rich_help_panel="Run")] = Path("runs.db"),
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML or TOML file of the same options "
                                                   "(flags override it).", rich_help_panel="Run")] = None,
    *, flags: dict[str, Any], run_flags: dict[str, Any],
) -> None:
    """Run one fine-tuning trial and record it (config, seeds, curves, metrics) in the store."""
    trial_config = resolve_config(flags, config)
    options = resolve_run_options(run_flags)
    with Store(store) as db, training_progress() as bar:
        task_id = bar.add_task(f"{trial_config.task} {Path(trial_config.model).name}", total=None,
                               loss=float("nan"), best="-")

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            best = values["best"]
            bar.update(task_id, completed=step, total=total, loss=values["loss"],
                       best="-" if best == float("-inf") else f"{best:.4f}")

        trial_id, outcome = run_stored(trial_config, options, db, progress=on_step)
        bar.stop()
        print_outcome(db, trial_id, outcome)


def print_outcome(db: Store, trial_id: int, outcome: TrialOutcome) -> None:
    curve = db.curves([trial_id])
    dev = curve[curve.split == "dev"].pivot_table(index=["step", "epoch"], columns="metric", values="value")
    table = Table(title=f"trial {trial_id}: dev curve ({outcome.metric} is tracked)")
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    for metric in dev.columns:
        table.add_column(metric, justify="right")
    for (step, epoch), row in dev.iterrows():
        table.add_row(str(step), f"{epoch:.2f}", *(f"{v:.4f}" for v in row))
    console.print(table)
    per_step = outcome.wall_seconds / max(outcome.steps_done, 1)
    console.print(f"status [bold]{outcome.status}[/]  steps {outcome.steps_done}/{outcome.total_steps}  "
                  f"final {outcome.metric} {fmt_metric(outcome.final_metrics.get(outcome.metric))}  "
                  f"best {fmt_metric(outcome.best_metrics.get(outcome.metric))} (step {outcome.best_step})  "
                  f"majority baseline {outcome.baseline_metric:.4f}  "
                  f"{outcome.wall_seconds:.0f}s ({per_step:.3f} s/step incl. evaluation)")
