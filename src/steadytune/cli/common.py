"""What the commands share: consoles, one-line errors, and flags generated from the typed config.

The flags of `train` and `study` are generated from TrialConfig and RunOptions, so every option's
default and help text live in one place (config.py) and config files accept exactly the same names.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import (SECTIONS, ConfigError, RunOptions, TrialConfig, build_config, format_validation_error,
                      load_config_file)
from ..recipes import recipe_overrides

console = Console()
err_console = Console(stderr=True)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input, reported as one line instead of a traceback."""
    from ..analysis import AnalysisError
    from ..architecture import UnsupportedArchitecture
    from ..checkpoints import CheckpointError
    from ..data import DataError
    from ..landscape.evaluation import LandscapeError
    from ..models import ModelError
    from ..store import StoreError

    return (AnalysisError, CheckpointError, ConfigError, DataError, LandscapeError, ModelError, StoreError,
            UnsupportedArchitecture)


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


def resolve_run_options(run_flags: dict[str, Any]) -> RunOptions:
    try:
        return RunOptions(**{k: v for k, v in run_flags.items() if v is not None})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def training_progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}  best dev {task.fields[best]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err_console)


def fmt_metric(value: float | None) -> str:
    """A metric for tables: 4 decimals, '-' when missing (None or NaN)."""
    return "-" if value is None or pd.isna(value) else f"{value:.4f}"
