"""`steadytune landscape line|surface|layers`: loss landscapes of stored trials (Hao et al., Mosbach et al., Li et al.).

The trials must have been trained with --save-checkpoints K; every finished grid cell is kept in the
store, so an interrupted command resumes where it stopped when run again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import typer
from rich.progress import Progress
from rich.table import Table

from ..config import ConfigError, RunOptions
from ..landscape.analyses import layer_curves, line, surface
from ..landscape.plotting import layer_figure, line_figure, surface_3d_figure, surface_figure
from ..landscape.sources import EvaluationSettings, TrialSnapshots
from ..storage.store import Store
from .common import console, finite, fmt_metric, print_table, progress_bar, reports_user_errors

landscape_app = typer.Typer(no_args_is_help=True, help="Loss landscapes of stored trials: 1-D lines, 2-D surfaces "
                            "with the training trajectory, layer-group rollback. Train with --save-checkpoints first.")

StoreArg = Annotated[Path, typer.Argument(help="Result store holding the trials.")]
Trials = Annotated[list[int], typer.Argument(help="Trial ids (see `steadytune runs`); several are drawn side by side.")]
Range = Annotated[tuple[float, float], typer.Option("--range", parser=finite(), help="Range of the coefficients a (and b).")]
Out = Annotated[Path, typer.Option("--out", help="Folder for the figures (PNG) and tables (CSV).")]
TrainExamples = Annotated[int, typer.Option(min=1, help="Fixed subset of the trial's training data to evaluate on.",
                                            rich_help_panel="Evaluation")]
DevExamples = Annotated[int, typer.Option(min=1, help="Fixed subset of the trial's dev set (all of it if larger).",
                                          rich_help_panel="Evaluation")]
SubsetSeed = Annotated[int, typer.Option(help="Seed of the subsets' draw.", rich_help_panel="Evaluation")]
BatchSize = Annotated[int, typer.Option(min=1, help="Examples per forward pass (sorted by length, so small batches pad little).", rich_help_panel="Evaluation")]
PointsPerPass = Annotated[int, typer.Option(min=1, help="Parameter points evaluated in one vmapped forward pass "
                                            "(bigger matrix products; memory grows with it).",
                                            rich_help_panel="Evaluation")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.", rich_help_panel="Evaluation")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads (default: all cores).",
                                                rich_help_panel="Evaluation")]


def _settings(train_examples: int, dev_examples: int, subset_seed: int, batch_size: int, points_per_pass: int,
              device: str, threads: int | None) -> EvaluationSettings:
    return EvaluationSettings(train_examples, dev_examples, subset_seed, batch_size, points_per_pass,
                              RunOptions(device=device, threads=threads))


def _coefficients(bounds: tuple[float, float], points: int) -> np.ndarray:
    low, high = bounds
    if not low < high:
        raise ConfigError(f"--range: {low} is not below {high}")
    # Rounded so that 0 and 1 are hit exactly when the spacing allows, and the store's keys are stable.
    return np.round(np.linspace(low, high, points), 10)


def _tracker(bar: Progress, description: str):
    task_id = bar.add_task(description, total=None)
    return lambda done, total: bar.update(task_id, completed=done, total=total)


def _save(figure, path: Path) -> None:
    figure.savefig(path, dpi=130)
    console.print(f"wrote {path}")


@landscape_app.command("line")
@reports_user_errors
def line_command(store: StoreArg, trials: Trials, bounds: Range = (-0.5, 1.5),
                 points: Annotated[int, typer.Option(min=2, help="Points along the line.")] = 21,
                 out: Out = Path("landscape"), train_examples: TrainExamples = 256, dev_examples: DevExamples = 256,
                 subset_seed: SubsetSeed = 0, batch_size: BatchSize = 32, points_per_pass: PointsPerPass = 1,
                 device: Device = "auto", threads: Threads = None) -> None:
    """1-D: loss and dev metric along θ0 + a(θ1 − θ0), from each trial's start to its end (Hao et al.)."""
    settings = _settings(train_examples, dev_examples, subset_seed, batch_size, points_per_pass, device, threads)
    a_values = _coefficients(bounds, points)
    out.mkdir(parents=True, exist_ok=True)
    lines = {}
    with Store(store, create=False) as db, progress_bar() as bar:
        for trial_id in trials:
            snapshots = TrialSnapshots.load(db, trial_id)
            frame = line(db, snapshots, a_values, settings, _tracker(bar, f"line, trial {trial_id}"))
            frame.drop(columns=["j", "b"]).to_csv(out / f"line-trial-{trial_id}.csv", index=False)
            lines[snapshots.label()] = frame
    _save(line_figure(lines, _metric_name(snapshots)), out / "line.png")


@landscape_app.command("surface")
@reports_user_errors
def surface_command(store: StoreArg, trials: Trials,
                    directions: Annotated[Literal["hao", "mosbach", "random"], typer.Option(
                        help="hao: d1 = end − start, d2 = a run on another task (--other) − start, scaled to d1's "
                        "norm. mosbach: d1 = this (failed) run − pretrained, d2 = a successful run (--other) − "
                        "pretrained. random: two filter-normalized Gaussian directions around the end (Li et al.).")] = "hao",
                    other: Annotated[Optional[list[str]], typer.Option(
                        help="The second run for each trial, in the same order (hao, mosbach): '--other 2,4' or "
                        "'--other 2 --other 4'.")] = None,
                    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
                    bounds: Range = (-0.5, 1.5),
                    grid: Annotated[int, typer.Option(min=2, help="Grid points per axis (grid x grid cells).")] = 21,
                    out: Out = Path("landscape"), train_examples: TrainExamples = 256,
                    dev_examples: DevExamples = 256, subset_seed: SubsetSeed = 0, batch_size: BatchSize = 32,
                    points_per_pass: PointsPerPass = 1, device: Device = "auto", threads: Threads = None) -> None:
    """2-D: training-loss and dev-error surfaces L(θ0 + a d1 + b d2), the trajectory projected on the plane."""
    others = _trial_ids(other or [])
    if directions != "random" and len(others) != len(trials):
        raise ConfigError(f"--directions {directions} needs one --other trial per trial, in the same order "
                          f"({len(trials)} trials, {len(others)} --other; write --other 2,4 for two)")
    settings = _settings(train_examples, dev_examples, subset_seed, batch_size, points_per_pass, device, threads)
    values = _coefficients(bounds, grid)
    out.mkdir(parents=True, exist_ok=True)
    surfaces = {}
    with Store(store, create=False) as db, progress_bar() as bar:
        for k, trial_id in enumerate(trials):
            snapshots = TrialSnapshots.load(db, trial_id)
            second = TrialSnapshots.load(db, others[k]) if directions != "random" else None
            found = surface(db, snapshots, directions, second, seed, values, values, settings,
                            _tracker(bar, f"{directions} surface, trial {trial_id}"))
            found.cells.to_csv(out / f"surface-{directions}-trial-{trial_id}.csv", index=False)
            found.trajectory.to_csv(out / f"trajectory-{directions}-trial-{trial_id}.csv", index=False)
            surfaces[snapshots.label()] = found
            worst = found.trajectory["residual"].max()
            console.print(f"trial {trial_id}: trajectory of {len(found.trajectory)} snapshots, at most "
                          f"{worst:.0%} of a snapshot's displacement lies off the plane")
    metric = _metric_name(snapshots)
    _save(surface_figure(surfaces, metric), out / f"surface-{directions}.png")
    _save(surface_3d_figure(surfaces), out / f"surface-{directions}-3d.png")


@landscape_app.command("layers")
@reports_user_errors
def layers_command(store: StoreArg, trial: Annotated[int, typer.Argument(help="Trial id.")],
                   points: Annotated[int, typer.Option(min=2, help="Points from 0 (rolled back) to 1 (fine-tuned).")] = 11,
                   out: Out = Path("landscape"), train_examples: TrainExamples = 256,
                   dev_examples: DevExamples = 256, subset_seed: SubsetSeed = 0, batch_size: BatchSize = 32,
                   points_per_pass: PointsPerPass = 1, device: Device = "auto", threads: Threads = None) -> None:
    """Layer groups (Hao et al.): roll low / middle / high thirds back to their start, and move each alone."""
    settings = _settings(train_examples, dev_examples, subset_seed, batch_size, points_per_pass, device, threads)
    out.mkdir(parents=True, exist_ok=True)
    with Store(store, create=False) as db, progress_bar() as bar:
        snapshots = TrialSnapshots.load(db, trial)
        curves, table = layer_curves(db, snapshots, _coefficients((0.0, 1.0), points), settings,
                                     _tracker(bar, f"layer groups, trial {trial}"))
    curves.to_csv(out / f"layers-trial-{trial}.csv", index=False)
    table.to_csv(out / f"rollback-trial-{trial}.csv", index=False)
    metric = _metric_name(snapshots)
    shown = Table()
    for column in ("group rolled back", "holds", "train loss", "Δ train loss", f"dev {metric}", f"Δ dev {metric}"):
        shown.add_column(column, justify="left" if column in ("group rolled back", "holds") else "right")
    for row in table.itertuples():
        shown.add_row(row.group, row.holds, fmt_metric(row.train_loss), f"{row.delta_train_loss:+.4f}",
                      fmt_metric(row.dev_metric), f"{row.delta_dev_metric:+.4f}")
    print_table(shown, f"{snapshots.label()}: one group rolled back to its start values (none = fine-tuned)")
    _save(layer_figure(curves, metric, snapshots.label()), out / f"layers-trial-{trial}.png")


def _trial_ids(values: list[str]) -> list[int]:
    try:
        return [int(part) for value in values for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--other takes trial ids, got {', '.join(values)}") from None


def _metric_name(snapshots: TrialSnapshots) -> str:
    from ..training.inputs import resolve_task

    return resolve_task(snapshots.config).metric
