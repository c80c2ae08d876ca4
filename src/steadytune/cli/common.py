"""What the commands share: consoles, one-line errors, and flags generated from the typed config.

The flags of `train` and `study` are generated from TrialConfig and RunOptions, so every option's
default and help text live in one place (config.py) and config files accept exactly the same names.

Everything printed may carry user strings (paths, study and task names, values read back from a
store), so the consoles treat text as text: no rich markup or emoji codes unless a call asks for
markup (and then escapes what it interpolates, with `escape`), and control characters such as ANSI
escapes are shown as U+FFFD instead of reaching the terminal.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
import signal
import threading
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import pandas as pd
import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import (
    SECTIONS,
    ConfigError,
    RunOptions,
    TrialConfig,
    build_config,
    check_keys,
    format_validation_error,
    load_config_file,
)
from ..recipes import recipe_overrides

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """`text` with control characters (ANSI escapes, bells, carriage returns) replaced, one for one, by U+FFFD."""
    return _CONTROL.sub("\ufffd", str(text))


def escape(text: object) -> str:
    """A user string to interpolate into rich markup: control characters replaced and markup escaped."""
    return escape_markup(clean(text))


class SafeConsole(Console):
    """A console for untrusted text: plain by default, control characters never written."""

    def __init__(self, **kwargs):
        # soft_wrap: lines are never broken by the console (the terminal wraps them), so a long path or name
        # stays whole and what is printed does not depend on the terminal's width.
        super().__init__(markup=False, emoji=False, highlight=False, soft_wrap=True, **kwargs)

    def render_str(self, text: str, **kwargs):
        return super().render_str(clean(text), **kwargs)


console = SafeConsole()


class FiniteFloat(click.FloatRange):
    """A float flag that refuses NaN and +-inf (click's float takes them, and its bounds let NaN through)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.types.FloatParamType.convert(self, value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def finite(min: float | None = None, max: float | None = None) -> Callable[[str], float]:  # noqa: A002
    """The parser of a float flag, with optional inclusive bounds: `typer.Option(parser=finite(0, 1))`. Its errors
    name the flag (click adds it) and say what is wrong in one line."""
    kind = FiniteFloat(min=min, max=max)

    def parse(value: str) -> float:
        if isinstance(value, float):  # a default
            return value
        try:
            return kind(value)
        except click.BadParameter as err:  # reported against the flag, as typer reports a value it cannot parse
            raise PydanticCustomError("float_flag", "{reason}", {"reason": err.message}) from None
    parse.__name__ = "float"  # what --help shows as the flag's type
    return parse
STORE_HELP = ("Result store: a SQLite file (created if missing), or a PostgreSQL database, "
              "postgresql://USER@HOST/DB[?files=DIR], that drivers on several machines share (DIR: where checkpoints "
              "and autosaved states go, on a filesystem they all see).")
err_console = SafeConsole(stderr=True)
RECONNECT_MINUTES = 5.0
ReconnectMinutes = Annotated[float, typer.Option(
    parser=finite(0.0), help="With a PostgreSQL store: how long to wait for a lost database (restarted, stopped, the "
    "network cut), reconnecting with backoff, before giving up in one line; 0: give up at once.",
    rich_help_panel="Run")]


def print_table(table, heading: str | None = None) -> None:
    """A table at its natural width even on a narrower terminal, so no cell is cut or folded, after its heading
    on a line of its own (a table's title would be wrapped to the table's width): what a reader, or a test,
    sees does not depend on the terminal's width."""
    if heading is not None:
        console.print(heading)
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    SafeConsole(width=max(console.width, natural), file=console.file).print(table)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input or by the environment (a full disk), reported as one line instead of a traceback."""
    from ..analysis import AnalysisError
    from ..errors import CheckpointError, DataError, TrialError
    from ..forecast.model import ForecastError
    from ..landscape.evaluation import LandscapeError
    from ..models.architecture import UnsupportedArchitecture
    from ..models.loading import ModelError
    from ..storage.store import StoreError
    from ..training.state_file import StateFileError

    return (AnalysisError, CheckpointError, ConfigError, DataError, ForecastError, LandscapeError, ModelError, StateFileError,
            StoreError, TrialError, UnsupportedArchitecture)


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (what SLURM sends on preemption, what `kill` sends) is handled as Ctrl-C: the trial autosaved, the
    claims released, what was kept recorded, one line; without this Python dies at once with the trial 'running'."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def reports_user_errors(command):
    """One line for the errors users cause or meet, and for Ctrl-C; exit codes 2 and 130."""
    from ..errors import Interrupted

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_ctrl_c():
                return command(*args, **kwargs)
        except Interrupted as err:
            err_console.print(f"[bold yellow]{escape(err)}[/]", markup=True, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            err_console.print("[bold yellow]interrupted: nothing more was written[/]", markup=True)
            raise typer.Exit(130) from None
        except _user_errors() as err:
            err_console.print(f"[bold red]error:[/] {escape(err)}", markup=True, soft_wrap=True)
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
        if _cli_type(info.annotation) == Optional[bool]:  # every boolean gets both forms: --x turns it on, --no-x off
            flag = f"{flag}/--no-{name.replace('_', '-')}"
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
    check_keys(file_values, TrialConfig.model_fields, str(config_file))
    recipe = flags.get("recipe") or file_values.get("recipe")
    given = {name for name, value in flags.items() if value is not None}
    try:
        return build_config(recipe_overrides(recipe) if recipe else {}, file_values, flags,
                            flags=given if config_file else None)
    except ConfigError as err:
        if config_file and not str(err).startswith("--"):  # a key of the file, not a flag: name the file
            raise ConfigError(f"{config_file}: {err}") from None
        raise


def resolve_run_options(run_flags: dict[str, Any]) -> RunOptions:
    try:
        return RunOptions(**{k: v for k, v in run_flags.items() if v is not None})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def progress_bar(*fields: str) -> Progress:
    """A bar whose description (a user string: task, model, trial) is shown as plain text, then `fields`."""
    return Progress(TextColumn("{task.description}", markup=False, style="bold"), BarColumn(), MofNCompleteColumn(),
                    *(TextColumn(text, markup=False) for text in fields), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=err_console)


def stop_bar(bar: Progress) -> None:
    """Stop a bar that was started; stopping one that never was prints an empty line before the error it follows."""
    if bar.live.is_started:
        bar.stop()


def fmt_metric(value: float | None) -> str:
    """A metric for tables: 4 decimals, '-' when missing (None or NaN)."""
    return "-" if value is None or pd.isna(value) else f"{value:.4f}"
