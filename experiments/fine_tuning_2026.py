"""The 2026 fine-tuning runs of examples/sst2-2026.yaml: LoRA's seeds, R3F and NoisyTune, seed soups.

Reads the store of those studies and writes the README's tables:
  python experiments/fine_tuning_2026.py runs/sst2-2026.db --out docs/fine-tuning-2026/results.md

- Variance components of the final dev score: full fine-tuning over WI x DO, LoRA over adapter seed x DO
  (analysis.variance, balanced ANOVA estimators).
- R3F and NoisyTune against Devlin's recipe with the same WI seeds and DO 1 (the full grid's first
  column): mean and sd, difference with a 95% bootstrap interval and a permutation p (analysis.compare).
- Soups of the full fine-tuning grid's runs (soup.py): uniform and greedy, scored on the test half.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from steadytune.analysis import bootstrap_diff_ci, load_results, permutation_test
from steadytune.analysis.soup import SoupEvaluator, ingredients, soups
from steadytune.analysis.variance import adapter_seeds_as_first_factor, variance_components
from steadytune.config import RunOptions


def markdown(frame: pd.DataFrame) -> str:
    cells = frame.astype(object).map(lambda v: ("—" if v != v else f"{v:.4f}") if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = load_results(args.store)
    trials = results.trials
    full = trials[(trials["cfg.adapter"] == "none") & (trials["cfg.r3f"] == 0) & (trials["cfg.noisytune"] == 0)]
    lora = trials[(trials["cfg.adapter"] == "lora") & (trials["cfg.adapter_seed"].notna())]
    sections = ["# Fine-tuning as people do it in 2026: MiniLM-L6 on 1,000 SST-2 examples", "",
                "all-MiniLM-L6-v2 is a sentence-embedding checkpoint, not BERT-large. Final dev accuracy (the dev "
                "half of SST-2's dev set); the soups are scored on the other half.", ""]
    rows = []
    for name, frame in (("full fine-tuning (WI x DO)", full), ("LoRA (adapter seed x DO)", lora)):
        grid = adapter_seeds_as_first_factor(frame)
        first = "adapter seed" if grid.attrs.get("adapter_factor") else "WI"
        components = variance_components(grid).set_index("component")
        rows.append({"arm": name, "runs": len(frame), "lr": f"{frame['cfg.lr'].iloc[0]:g}",
                     "mean": frame["final"].mean(), "sd": frame["final"].std(),
                     "first factor": first, "sd first factor": components.loc["WI", "sd"],
                     "sd DO": components.loc["DO", "sd"], "sd residual": components.loc["residual", "sd"],
                     "share first factor": components.loc["WI", "share"], "share DO": components.loc["DO", "share"]})
    table = pd.DataFrame(rows)
    sections += ["## Seed variance: full fine-tuning against LoRA", "", markdown(table), ""]
    devlin = full[full["do_seed"] == 1]
    rows = []
    for name, column, value in (("R3F (lambda 1)", "cfg.r3f", 1.0), ("NoisyTune (0.15)", "cfg.noisytune", 0.15)):
        arm = trials[trials[column] == value]
        low, high = bootstrap_diff_ci(arm["final"], devlin["final"])
        rows.append({"arm": name, "runs": len(arm), "mean": arm["final"].mean(), "sd": arm["final"].std(),
                     "Devlin mean": devlin["final"].mean(), "Devlin sd": devlin["final"].std(),
                     "difference": arm["final"].mean() - devlin["final"].mean(), "95% CI low": low,
                     "95% CI high": high, "permutation p": permutation_test(arm["final"], devlin["final"])})
    sections += ["## R3F and NoisyTune against Devlin's recipe (same WI seeds, DO 1)", "",
                 markdown(pd.DataFrame(rows)), ""]
    items = ingredients(args.store, full["arm"].iloc[0], "sst2")
    evaluate = SoupEvaluator(items[0].config, RunOptions(device="cpu"), args.store)
    sections += [f"## Seed soups of the {len(items)} full fine-tuning runs (test half)", "",
                 markdown(soups(items, evaluate)), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
