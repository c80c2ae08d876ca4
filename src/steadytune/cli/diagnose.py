"""`steadytune diagnose`: why runs failed, from the diagnostics logged while they trained (Mosbach et al.)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..analysis import AnalysisError, load_results
from ..analysis.gradients import diagnosis, gradient_norms, part_order
from ..reporting.plots import gradient_norms_figure, trial_diagnostics_figure
from ..storage.connections import shown_location
from .common import console, finite, fmt_metric, print_table, reports_user_errors


@reports_user_errors
def diagnose(
    store: Annotated[str, typer.Argument(help="Result store (a .db file or a postgresql:// URL), or a trials export "
                                         "(.csv/.parquet).")],
    trial: Annotated[Optional[int], typer.Argument(help="One trial id to look at in detail.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the figures.")] = Path("diagnose"),
    factor: Annotated[float, typer.Option(parser=finite(1.0), help="Flag vanishing gradients when the lower layers' gradient "
                                          "norm falls to 1/FACTOR of its start or below.")] = 100.0,
    early: Annotated[float, typer.Option(parser=finite(0.0, 1.0), help="...within this share of training.")] = 0.3,
) -> None:
    """Flag failed runs, vanishing lower-layer gradients and class collapse; plot gradient norms per layer."""
    results, where = load_results(store), shown_location(store)
    if trial is not None and trial not in set(results.trials["id"]):
        raise AnalysisError(f"{where} has no complete or diverged trial {trial}")
    grads = gradient_norms(results.curves)
    if grads.empty:
        raise AnalysisError(f"{where} holds no diagnostics; train with --log-grads-every K (K > 0)")
    table = diagnosis(results, factor, early)
    shown = table if trial is None else table[table["id"] == trial]
    _print(shown, factor)
    out.mkdir(parents=True, exist_ok=True)
    parts = part_order(grads["part"])
    if trial is None:
        failed = set(table.loc[table["kind"] != "ok", "id"])
        path = out / "gradient-norms.png"
        gradient_norms_figure(grads, failed, parts).savefig(path, dpi=130)
    else:
        row = shown.iloc[0]
        path = out / f"trial-{trial}.png"
        title = (f"trial {trial} ({row['task']}, wi {row['wi_seed']}, do {row['do_seed']}): dev {fmt_metric(row['dev'])},"
                 f" {row['kind']}")
        trial_diagnostics_figure(results.curves[results.curves["trial_id"] == trial], parts, title).savefig(path, dpi=130)
    console.print(f"wrote {path}")


def _print(table, factor: float) -> None:
    shown = Table()
    for column in ("trial", "task", "wi", "do", "dev", "base", "loss", "kind", "grad drop", "flags"):
        shown.add_column(column, justify="left" if column in ("task", "kind", "flags") else "right")
    for row in table.itertuples():
        flags = []
        if row.vanishing is True:
            flags.append("vanishing gradients")
        if row.class_collapse:
            flags.append("class collapse")
        drop = "-" if row.collapse_ratio != row.collapse_ratio else f"{row.collapse_ratio:,.0f}x"
        shown.add_row(str(row.id), row.task, str(row.wi_seed), str(row.do_seed), fmt_metric(row.dev),
                      fmt_metric(row.baseline), fmt_metric(row.final_loss), row.kind, drop, ", ".join(flags))
    print_table(shown, "diagnosis: failed = final dev at or below the majority baseline (base); loss = final training "
                       "loss; grad drop = fall of the lower layers' gradient norm early in training")
    vanished = table[table["vanishing"] == True]  # noqa: E712 (NaN for trials without diagnostics)
    failed = table[table["kind"] != "ok"]
    console.print(f"{len(failed)} of {len(table)} runs failed; {len(vanished)} show vanishing lower-layer gradients "
                  f"(drop >= {factor:g}x), {int((vanished['kind'] != 'ok').sum())} of them failed")
