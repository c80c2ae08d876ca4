"""Two more recorded grids for the failure forecaster (issue #39): MiniLM-L6 on MRPC and CoLA.

all-MiniLM-L6-v2 is a sentence-embedding checkpoint, not BERT. Each grid: WI seeds 1-5 x DO seeds 1-5, 1,000
training examples, 3 epochs, 10 dev evaluations per epoch (Devlin's recipe otherwise), at an lr where some runs fail
and some learn. The lr comes from a short check recorded in the same store (study `forecast-<task>-lr-check`): WI
seeds 1-3 at DO 1 at each candidate lr. The rule, fixed before the check ran:
- a run learns when its final dev score beats the majority baseline by 0.05, and fails when it ends at or below the
  baseline (Mosbach et al.'s failed run, analysis/failures.py);
- among the candidates with at least one run that learns and one that fails, the one whose failures are closest to
  half its runs, ties to the smaller lr;
- where no candidate has both, the largest lr at which some run learns (failures then come from the grid's seeds).

    python experiments/forecast_grids.py --glue-dir ../shared/data/glue --store runs/forecast-grids.db --workers 2

Everything is a study in the store, so running the same command again resumes where it stopped.
"""
from __future__ import annotations

import argparse
import sys

import steadytune
from steadytune.analysis.failures import failed

CANDIDATES = (5e-5, 1e-4, 2e-4)
LEARNS_MARGIN = 0.05
SETTINGS = {"model": "minilm-l6", "max_train": 1000, "epochs": 3, "evals_per_epoch": 10}


def chosen_lr(check, candidates=CANDIDATES) -> tuple[float | None, str]:
    """The grid's lr from the check's trials (one row per run, with `cfg.lr`), and why, in words."""
    rows = []
    for lr in candidates:
        runs = check[check["cfg.lr"] == lr]
        learned = int((runs["final"] >= runs["baseline_metric"] + LEARNS_MARGIN).sum())
        rows.append((lr, len(runs), learned, int(failed(runs).sum())))
    mixed = [(abs(bad - n / 2), lr) for lr, n, learned, bad in rows if learned and bad]
    summary = "; ".join(f"lr {lr:g}: {n} runs, {learned} learned, {bad} failed" for lr, n, learned, bad in rows)
    if mixed:
        return min(mixed)[1], f"{summary} -> the most even mix of failures and learners"
    learning = [lr for lr, _, learned, _ in rows if learned]
    if learning:
        return max(learning), f"{summary} -> no lr mixes both: the largest that learns"
    return None, f"{summary} -> no candidate learns: no grid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--store", default="runs/forecast-grids.db")
    parser.add_argument("--tasks", default="mrpc,cola")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    options = {"threads": 1} if args.workers > 1 else {}
    for task in args.tasks.split(","):
        check_name = f"forecast-{task}-lr-check"
        for lr in CANDIDATES:
            steadytune.run_study({"name": f"{check_name}-{lr:g}", "tasks": [task], "wi_seeds": "1-3", "do_seeds": "1",
                                  "config": {**SETTINGS, "glue_dir": args.glue_dir, "lr": lr}},
                                 store=args.store, options=options, workers=args.workers)
        check = steadytune.open_store(args.store, studies=[f"{check_name}-{lr:g}" for lr in CANDIDATES]).trials
        lr, why = chosen_lr(check)
        print(f"{task}: {why}", flush=True)
        if lr is None:
            continue
        summary = steadytune.run_study({"name": f"forecast-{task}-lr{lr:g}-grid", "tasks": [task], "wi_seeds": "1-5",
                                        "do_seeds": "1-5", "config": {**SETTINGS, "glue_dir": args.glue_dir, "lr": lr}},
                                       store=args.store, options=options, workers=args.workers)
        print(f"{task}: grid {summary.study}: {summary.trials} trials, {summary.ran} run now", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
