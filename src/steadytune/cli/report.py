"""`steadytune report`: every analysis of a store (or its export) as one HTML or Markdown report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..reporting.report import ReportSettings, build_report
from .common import console, err_console, finite, reports_user_errors


@reports_user_errors
def report(
    source: Annotated[str, typer.Argument(help="Result store (a .db file or a postgresql:// URL), or a trials export "
                                          "(.csv/.parquet).")],
    curves: Annotated[Optional[Path], typer.Option("--curves", help="Curves export that goes with a trials export "
                                                   "(default: the trials file's name with 'curves' for 'trials').")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the report into.")] = Path("report"),
    fmt: Annotated[Literal["html", "md"], typer.Option("--format", help="html: one self-contained page; md: "
                                                       "Markdown with PNG files beside it.")] = "html",
    budget: Annotated[Optional[int], typer.Option("--budget", min=1, help="Budget in full runs for the early-stopping "
                                                  "planner (default: a quarter of a typical group, 2..10).")] = None,
    correction: Annotated[str, typer.Option("--correction", help="Multiple-comparison correction of each family of "
                                            "tests: holm (Holm's step-down, controls the family-wise error) or fdr_bh "
                                            "(Benjamini-Hochberg, controls the false discovery rate).")] = "holm",
    interval: Annotated[str, typer.Option("--interval", help="Bootstrap interval of a difference of means: percentile "
                                          "or bca (bias-corrected and accelerated).")] = "percentile",
    confidence: Annotated[float, typer.Option("--confidence", parser=finite(), help="Confidence of intervals and of the almost "
                                              "stochastic order test; tests are read at alpha = 1 - confidence.")] = 0.95,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every resampling (bootstrap, permutations, ASO), so "
                                      "a report is reproducible.")] = 0,
    without_replacement: Annotated[bool, typer.Option("--without-replacement", help="Expected validation performance "
                                                      "from draws without replacement: unbiased for n <= N (Tang et "
                                                      "al. 2020), but noisier; the default, with replacement, ranks "
                                                      "models wrongly less often (Dodge et al. 2021).")] = False,
    study: Annotated[Optional[list[str]], typer.Option("--study", help="Only the trials of this study of the store "
                                                       "(repeat for several), e.g. its seed grids without its other "
                                                       "arms.")] = None,
) -> None:
    """Write an HTML (or Markdown) report: expected performance, seed variance, failures, early stopping, recipes."""
    settings = ReportSettings(budget, correction, interval, confidence, seed, not without_replacement)
    with Progress(SpinnerColumn(), TextColumn("report: {task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        path = build_report(source, out, fmt, curves, settings, progress=lambda title: bar.update(task, description=title),
                            studies=study or ())
    console.print(f"report written to {path}")
