"""The blog's two checks on Zhang et al. (../shared/seeds), re-run on NER with a CRF head.

Reads the store of the studies in examples/ner-wnut17.yaml and writes the tables of the README:
  python experiments/ner_blog_checks.py runs/ner-wnut17.db --out docs/ner/blog-checks.md

The blog claimed, on a 400-sentence NER task with BERT+CRF:
  1. bias-corrected Adam reaches BERTAdam's training loss in half the steps, and scores slightly better;
  2. re-initializing the top layers converges 30-40% faster, at about the same score.

Rules, fixed in this file before any run of the experiment had finished:
  - The training loss is smoothed by a trailing mean over one epoch of steps.
  - The threshold of an lr is the median, over the BERTAdam seeds at that lr, of the smoothed loss at their
    last step ("the loss BERTAdam reaches at its end").
  - Steps to the threshold: the first step whose smoothed loss is at or below it. A run that never reaches it
    counts with its total steps, which flatters it, and the table says how many did not.
  - Ratios are per seed pair (same WI, DO and dropout seeds): AdamW / BERTAdam, re-init / none (both AdamW).
    Their mean and 95% t interval over seeds come from scipy.stats.ttest_1samp; F1 differences from ttest_rel.
  - Verdict on a speed claim with claimed ratio r (0.5 for "half the steps", 0.7 for "30-40% faster"):
    holds when the interval lies below 1 and its lower end is at or below r; does not hold when its lower end
    is above r; otherwise inconclusive at this N.
  - Verdict on a score claim: "slightly better" holds when the F1 difference's interval lies above 0 and does
    not hold when it lies below 0; "about the same" holds when the interval lies within +-0.02 F1 and does not
    hold when it excludes 0; otherwise inconclusive at this N.
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from steadytune.analysis.convergence import final_smoothed_loss, steps_to_loss
from steadytune.storage.store import Store

SAME_SCORE = 0.02


def arm_of(row: pd.Series) -> str:
    if row["cfg.optimizer"] == "bertadam":
        return "BERTAdam"
    layers = int(row["cfg.reinit_layers"])
    return f"AdamW + re-init top {layers}" if layers else "AdamW"


def interval(values: np.ndarray, against: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean and 95% t interval of `values` (of `values - against`, paired, when given)."""
    if against is None:
        result = stats.ttest_1samp(values, 0.0)
        mean = float(np.mean(values))
    else:
        result = stats.ttest_rel(values, against)
        mean = float(np.mean(values - against))
    low, high = result.confidence_interval(0.95)
    return mean, float(low), float(high)


def speed_verdict(low: float, high: float, claimed: float) -> str:
    if high < 1 and low <= claimed:
        return "holds"
    if low > claimed:
        return "does not hold"
    return "inconclusive at this N"


def score_verdict(low: float, high: float, claim: str) -> str:
    if claim == "slightly better":
        return "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive at this N"
    if -SAME_SCORE <= low and high <= SAME_SCORE:
        return "holds"
    return "does not hold" if low > 0 or high < 0 else "inconclusive at this N"


def load(store_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(store_path, readonly=True) as store:
        trials, curves = store.trials(), store.curves()
    trials = trials[(trials["task"] == "ner") & (trials["status"] == "complete")].copy()
    trials["arm"] = trials.apply(arm_of, axis=1)
    trials["steps_per_epoch"] = (trials["total_steps"] / trials["cfg.epochs"]).round().astype(int)
    return trials, curves[curves["trial_id"].isin(trials["id"])]


def fmt(mean: float, low: float, high: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def tables(trials: pd.DataFrame, curves: pd.DataFrame) -> str:
    lines = []
    for lr, at_lr in trials.groupby("cfg.lr", sort=False):
        window = int(at_lr["steps_per_epoch"].iloc[0])
        bert = at_lr[at_lr["arm"] == "BERTAdam"]
        if bert.empty:
            continue
        threshold = float(final_smoothed_loss(curves[curves["trial_id"].isin(bert["id"])], window).median())
        reached = steps_to_loss(curves[curves["trial_id"].isin(at_lr["id"])], threshold, window)
        at_lr = at_lr.assign(reached=at_lr["id"].map(reached),
                             steps=at_lr["id"].map(reached).fillna(at_lr["total_steps"].astype(float)))
        lines += [f"### lr {lr:g}: {len(at_lr)} runs, threshold {threshold:.3f} (smoothed over {window} steps)", "",
                  "| arm | seeds | steps to threshold (mean, range) | not reached | final dev F1 (mean ± sd) | "
                  "best dev F1 (mean ± sd) |", "|---|---|---|---|---|---|"]
        for arm, group in at_lr.groupby("arm", sort=True):
            lines.append(f"| {arm} | {len(group)} | {group['steps'].mean():.0f} ({group['steps'].min():.0f}–"
                         f"{group['steps'].max():.0f}) | {int(group['reached'].isna().sum())} | "
                         f"{group['final_metric'].mean():.3f} ± {group['final_metric'].std():.3f} | "
                         f"{group['best_metric'].mean():.3f} ± {group['best_metric'].std():.3f} |")
        lines += ["", "| claim | arms (per seed pair) | pairs | step ratio [95% CI] | verdict | F1 difference "
                  "[95% CI] | verdict |", "|---|---|---|---|---|---|---|"]
        checks = [("AdamW reaches BERTAdam's loss in half the steps, and scores slightly better", "AdamW", "BERTAdam",
                   0.5, "slightly better")]
        checks += [("re-init converges 30–40% faster, at about the same score", arm, "AdamW", 0.7, "about the same")
                   for arm in sorted(set(at_lr["arm"])) if arm.startswith("AdamW + re-init")]
        for claim, arm, base, claimed, score_claim in checks:
            seeds = ["wi_seed", "do_seed", "dropout_seed"]
            pairs = at_lr[at_lr["arm"] == arm].merge(at_lr[at_lr["arm"] == base], on=seeds, suffixes=("", "_base"))
            if len(pairs) < 2:
                continue
            ratio = interval((pairs["steps"] / pairs["steps_base"]).to_numpy())
            diff = interval(pairs["final_metric"].to_numpy(), pairs["final_metric_base"].to_numpy())
            lines.append(f"| {claim} | {arm} / {base} | {len(pairs)} | {fmt(*ratio)} | "
                         f"{speed_verdict(ratio[1], ratio[2], claimed)} | {fmt(*diff, digits=3)} | "
                         f"{score_verdict(diff[1], diff[2], score_claim)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, help="Also write the tables to this Markdown file.")
    args = parser.parse_args()
    trials, curves = load(args.store)
    if trials.empty:
        raise SystemExit(f"{args.store}: no complete NER trials")
    text = tables(trials, curves)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rules = __doc__.split("Rules, fixed", 1)[1].split("\n", 1)[1]
        args.out.write_text(f"# The blog's two checks on Zhang et al., re-run on NER\n\nFrom {args.store.name}, by "
                            f"experiments/ner_blog_checks.py. MiniLM-L6 (all-MiniLM-L6-v2, a sentence-embedding "
                            f"checkpoint) with a CRF head on 400 WNUT-17 sentences. Rules, fixed before any run had "
                            f"finished:\n\n```\n{textwrap.dedent(rules).strip()}\n```\n\n{text}\n")


if __name__ == "__main__":
    main()
