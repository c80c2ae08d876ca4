"""`steadytune soup`: uniform and greedy soups of an arm's runs against picking the best run."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..analysis.soup import SoupEvaluator, ingredients, soups
from ..config import RunOptions
from .common import console, fmt_metric, print_table, reports_user_errors


@reports_user_errors
def soup(
    store: Annotated[Path, typer.Argument(help="Result store whose trials kept their final weights (--keep-weights).")],
    arm: Annotated[str, typer.Option(help="The arm whose runs are the ingredients, as `steadytune report` names it "
                                     "(e.g. 'devlin2019' or 'mosbach2021 lr=1e-04').")],
    task: Annotated[Optional[str], typer.Option(help="The task, when the arm ran on several.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the table as CSV here.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads.")] = None,
) -> None:
    """Average the final weights of an arm's runs (Wortsman et al. 2022): the uniform soup and the greedy soup
    (best dev score first, each run kept if dev does not fall), scored on the test half of --split-dev trials
    and set against the best single run and the expected best of as many single runs."""
    items = ingredients(store, arm, task)
    evaluate = SoupEvaluator(items[0].config, RunOptions(device=device, threads=threads), store)
    table = soups(items, evaluate)
    metric = evaluate.trial.task.metric
    shown = Table()
    for column in ("model", "ingredients", f"dev {metric}", f"test {metric}"):
        shown.add_column(column, justify="left" if column == "model" else "right")
    for row in table.itertuples():
        shown.add_row(row.model, str(row.ingredients), fmt_metric(row.dev), fmt_metric(row.test))
    where = "test half" if items[0].test is not None else "dev set (no test half: run with --split-dev to score soups on data nothing chose on)"
    print_table(shown, f"soups of {len(items)} runs of {arm}; compared on the {where}")
    if out is not None:
        table.to_csv(out, index=False)
        console.print(f"wrote {out}")
