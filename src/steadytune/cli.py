"""The `steadytune` command line: a thin layer over the library.

The flags of `train` are generated from TrialConfig and RunOptions, so every option's default and
help text live in one place (config.py) and the config file accepts exactly the same names.
"""
from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .config import SECTIONS, ConfigError, RunOptions, TrialConfig, build_config, load_config_file
from .recipes import RECIPES, recipe_overrides, resolved_recipe

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measurable, stable fine-tuning of pretrained encoders on small datasets.")
console = Console()
err_console = Console(stderr=True)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input, reported as one line instead of a traceback."""
    from .architecture import UnsupportedArchitecture
    from .data import DataError
    from .models import ModelError
    from .store import StoreError

    return ConfigError, DataError, ModelError, StoreError, UnsupportedArchitecture


def reports_user_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None
    return wrapper


# --- flags generated from the typed config -----------------------------------------------------
def _cli_type(annotation: Any) -> Any:
    """Typer-friendly type for a pydantic field: Literal -> str, X | None -> X; all made optional."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return Optional[str]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _cli_type(inner[0])
    return Optional[annotation]


def _field_parameters(model: type[BaseModel], panels: dict[str, str]) -> list[inspect.Parameter]:
    params = []
    for name, info in model.model_fields.items():
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
        help_text = info.description or ""
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        default = info.default.__str__() if info.default is not None else "none"
        help_text += f" [dim]\\[default: {default}][/]"
        flag = "--" + name.replace("_", "-")
        option = typer.Option(flag, help=help_text, rich_help_panel=panels.get(name, "Run"), show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[_cli_type(info.annotation), option]))
    return params


def with_config_flags(command):
    """Give `command` one flag per TrialConfig/RunOptions field; it receives them as `flags` and `run_flags`."""
    panels = {field: section for section, fields in SECTIONS.items() for field in fields}
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in ("flags", "run_flags")]
    config_params = _field_parameters(TrialConfig, panels)
    run_params = _field_parameters(RunOptions, {})

    @functools.wraps(command)
    def wrapper(**kwargs):
        flags = {p.name: kwargs.pop(p.name) for p in config_params}
        run_flags = {p.name: kwargs.pop(p.name) for p in run_params}
        return command(flags=flags, run_flags=run_flags, **kwargs)

    wrapper.__signature__ = inspect.Signature(own + config_params + run_params)
    return wrapper


def resolve_config(flags: dict[str, Any], config_file: Path | None) -> TrialConfig:
    """defaults < recipe < config file < flags."""
    file_values = load_config_file(config_file) if config_file else {}
    recipe = flags.get("recipe") or file_values.get("recipe")
    return build_config(recipe_overrides(recipe) if recipe else {}, file_values, flags)


def training_progress(description: str) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  best dev {task.fields[best]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err_console)


# --- commands --------------------------------------------------------------------------------------
@app.command()
@reports_user_errors
@with_config_flags
def train(
    store: Annotated[Path, typer.Option(help="SQLite result store (created if missing).", rich_help_panel="Run")] = Path("runs.db"),
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML or TOML file of the same options "
                                                   "(flags override it).", rich_help_panel="Run")] = None,
    *, flags: dict[str, Any], run_flags: dict[str, Any],
) -> None:
    """Run one fine-tuning trial and record it (config, seeds, curves, metrics) in the store."""
    from .store import Store
    from .trial import run_stored

    trial_config = resolve_config(flags, config)
    options = RunOptions(**{k: v for k, v in run_flags.items() if v is not None})
    with Store(store) as db, training_progress("train") as bar:
        task_id = bar.add_task(f"{trial_config.task} {trial_config.model}", total=None, loss=float("nan"), best="-")

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            best = values["best"]
            bar.update(task_id, completed=step, total=total, loss=values["loss"],
                       best="-" if best == float("-inf") else f"{best:.4f}")

        trial_id, outcome = run_stored(trial_config, options, db, progress=on_step)
        bar.stop()
        _print_outcome(db, trial_id, outcome)


def _print_outcome(db, trial_id: int, outcome) -> None:
    curve = db.curves([trial_id])
    dev = curve[(curve.split == "dev")].pivot_table(index=["step", "epoch"], columns="metric", values="value")
    table = Table(title=f"trial {trial_id}: dev curve ({outcome.metric} is tracked)")
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    for metric in dev.columns:
        table.add_column(metric, justify="right")
    for (step, epoch), row in dev.iterrows():
        table.add_row(str(step), f"{epoch:.2f}", *(f"{v:.4f}" for v in row))
    console.print(table)
    best = outcome.best_metrics.get(outcome.metric)
    final = outcome.final_metrics.get(outcome.metric)
    console.print(f"status [bold]{outcome.status}[/]  steps {outcome.steps_done}/{outcome.total_steps}  "
                  f"final {outcome.metric} {_fmt(final)}  best {_fmt(best)} (step {outcome.best_step})  "
                  f"majority baseline {outcome.baseline_metric:.4f}  "
                  f"{outcome.wall_seconds:.0f}s ({outcome.wall_seconds / max(outcome.steps_done, 1):.3f} s/step)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
@reports_user_errors
def runs(store: Annotated[Path, typer.Argument(help="Result store to list.", exists=True, dir_okay=False)]) -> None:
    """Table of the trials in a store: seeds, status, best and final dev metric, baseline, time."""
    from .store import Store

    with Store(store) as db:
        trials = db.trials()
    table = Table(title=f"{store}: {len(trials)} trials")
    for column in ("id", "task", "model", "recipe", "wi", "do", "drop", "status", "steps", "metric", "best",
                   "final", "baseline", "time"):
        table.add_column(column, justify="right" if column not in ("task", "model", "recipe", "status", "metric")
                         else "left")
    for row in trials.itertuples():
        table.add_row(str(row.id), row.task, Path(row.model).name, row.recipe or "-", str(row.wi_seed),
                      str(row.do_seed), str(row.dropout_seed), row.status,
                      f"{row.steps_done or 0}/{row.total_steps or '?'}", row.metric or "-", _fmt_nan(row.best_metric),
                      _fmt_nan(row.final_metric), _fmt_nan(row.baseline_metric),
                      "-" if row.wall_seconds != row.wall_seconds or row.wall_seconds is None else f"{row.wall_seconds:.0f}s")
    console.print(table)


def _fmt_nan(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


@app.command()
@reports_user_errors
def export(
    store: Annotated[Path, typer.Argument(help="Result store to read.", exists=True, dir_okay=False)],
    what: Annotated[str, typer.Option(help="trials (one flat row per trial, config as cfg.* columns) or curves "
                                      "(step, epoch, split, metric, value).")] = "trials",
    format: Annotated[str, typer.Option(help="csv or parquet.")] = "csv",
    out: Annotated[Path, typer.Option(help="Output file.")] = Path("trials.csv"),
) -> None:
    """Export trials or curves to CSV or Parquet for analysis elsewhere."""
    from .store import Store, export as export_frame

    if what not in ("trials", "curves"):
        raise ConfigError(f"--what must be trials or curves, not {what!r}")
    if format not in ("csv", "parquet"):
        raise ConfigError(f"--format must be csv or parquet, not {format!r}")
    with Store(store) as db:
        count = export_frame(db, what, format, out)
    console.print(f"wrote {count} {what} rows to {out}")


@app.command()
def recipes(name: Annotated[Optional[str], typer.Argument(help="Show only this recipe.")] = None) -> None:
    """The named presets and every value each one sets (flags override them one by one)."""
    names = [name] if name else list(RECIPES)
    for recipe in names:
        if recipe not in RECIPES:
            err_console.print(f"[bold red]error:[/] unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
            raise typer.Exit(2)
        summary, overrides = RECIPES[recipe]
        full = resolved_recipe(recipe).model_dump()
        table = Table(title=f"{recipe}: {summary}", title_justify="left", show_header=True)
        table.add_column("option")
        table.add_column("value")
        for section, fields in SECTIONS.items():
            if section == "Data":
                continue
            for field in fields:
                style = "bold" if field in overrides else "dim"
                table.add_row(f"[{style}]--{field.replace('_', '-')}[/]", f"[{style}]{json.dumps(full[field])}[/]")
        console.print(table)
