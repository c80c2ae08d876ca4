"""Per-example instability: which examples flip between seeds (Du & Nguyen, ACL 2023).

Two arms with the same spread of dev accuracy can differ a lot in how many predictions change from one
seed to the next, and the spread of a score hides most of that churn. From the predictions every trial
stores (store.Predictions), per task and arm, over the runs of that arm that saw the same dev examples:

- flip rate of an example: the share of pairs of runs that predict it differently, sum over classes c of
  1 - k_c (k_c - 1) / (R (R - 1)) for k_c of the R runs predicting c: an unbiased estimate of the chance that
  two random seeds disagree on it, so arms with different numbers of runs compare fairly;
- pairwise disagreement: the mean flip rate, which equals the mean over pairs of runs of the share of
  examples they predict differently;
- Fleiss' kappa across the runs (statsmodels' `fleiss_kappa`, the reference): agreement beyond chance;
- how many runs get each example right (a histogram), and the examples no run and every run gets right.

Two arms of a task are compared on the same examples by a permutation test that moves whole runs between the
arms: the runs are the independent units (their seeds), not the examples, which every run of an arm shares.
A test over examples (Wilcoxon on per-example flip rates) rejected in 68-70% of replications where both arms
came from one process. Corrected over the task's pairs like every family in the report. Classification only:
regression predictions do not flip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import fleiss_kappa

from .compare import CORRECTIONS, adjust_pvalues
from .results import NotEnoughData, Results


@dataclass(frozen=True)
class ArmPredictions:
    """The runs of one task and arm that share a dev set: runs x examples of class ids, and the gold labels."""

    task: str
    arm: str
    trial_ids: list[int]
    predictions: np.ndarray  # (runs, examples), int
    gold: np.ndarray         # (examples,), int

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.gold[None, :]


def arm_predictions(results: Results, split: str = "dev", point: str = "final") -> list[ArmPredictions]:
    """Per task and arm, the runs with stored predictions of `split` at `point`, grouped by the examples they
    saw (the gold labels); groups of fewer than 2 runs are left out. Regression tasks are left out."""
    table = results.predictions
    if table.empty:
        raise NotEnoughData("no per-example predictions recorded (trials record them since this version)")
    chosen = table[(table["split"] == split) & table["point"].isin([point, "gold"])].sort_values("example")
    arrays = {key: frame["value"].to_numpy() for key, frame in chosen.groupby(["trial_id", "point"])}
    arms = []
    for (task, arm), frame in results.trials.groupby(["task", "arm"], sort=True):
        if str(frame["metric"].iloc[0]) in ("pearson", "spearman"):
            continue
        by_gold: dict[bytes, list[tuple[int, np.ndarray]]] = {}
        golds: dict[bytes, np.ndarray] = {}
        for trial_id in frame["id"]:
            gold, predicted = arrays.get((trial_id, "gold")), arrays.get((trial_id, point))
            if gold is None or predicted is None or predicted.size != gold.size:
                continue
            key = gold.astype(np.int64).tobytes()
            golds[key] = gold.astype(np.int64)
            by_gold.setdefault(key, []).append((int(trial_id), predicted.astype(np.int64)))
        for key, runs in by_gold.items():
            if len(runs) >= 2:
                arms.append(ArmPredictions(task, arm, [t for t, _ in runs], np.stack([p for _, p in runs]), golds[key]))
    if not arms:
        raise NotEnoughData("per-example instability needs a classification task with two or more runs of one arm "
                            "that recorded predictions")
    return arms


def flip_rates(predictions: np.ndarray) -> np.ndarray:
    """Per example, the share of pairs of runs (rows) that predict it differently."""
    runs = predictions.shape[0]
    counts = _class_counts(predictions)
    return 1 - (counts * (counts - 1)).sum(axis=1) / (runs * (runs - 1))


def _class_counts(predictions: np.ndarray) -> np.ndarray:
    """(examples, classes): how many runs predict each class for each example."""
    classes = int(predictions.max()) + 1
    return np.stack([(predictions == c).sum(axis=0) for c in range(max(classes, 2))], axis=1)


def instability_table(arms: list[ArmPredictions]) -> pd.DataFrame:
    """One row per task and arm: runs, examples, sd of accuracy over runs, pairwise disagreement, Fleiss' kappa,
    and the shares of examples every run and no run gets right."""
    rows = []
    for arm in arms:
        right = arm.correct.sum(axis=0)
        runs = len(arm.trial_ids)
        flips = flip_rates(arm.predictions)
        rows.append({"task": arm.task, "arm": arm.arm, "runs": runs, "examples": arm.gold.size,
                     "accuracy sd": float(arm.correct.mean(axis=1).std(ddof=1)),
                     "pairwise disagreement": float(flips.mean()),
                     "Fleiss kappa": float(fleiss_kappa(_class_counts(arm.predictions), method="fleiss")),
                     "examples that flip": float((flips > 0).mean()),
                     "every run right": float((right == runs).mean()),
                     "no run right": float((right == 0).mean())})
    return pd.DataFrame(rows)


def right_counts(arms: list[ArmPredictions]) -> pd.DataFrame:
    """Long format for the histogram: task, arm, runs, runs right (0..runs), examples."""
    rows = []
    for arm in arms:
        runs = len(arm.trial_ids)
        counts = np.bincount(arm.correct.sum(axis=0), minlength=runs + 1)
        rows += [{"task": arm.task, "arm": arm.arm, "runs": runs, "runs right": k, "examples": int(n)}
                 for k, n in enumerate(counts)]
    return pd.DataFrame(rows)


def extreme_examples(arms: list[ArmPredictions], shown: int = 20) -> pd.DataFrame:
    """Per task and arm, the indices (in the dev set's order) of the examples no run and every run gets right."""
    rows = []
    for arm in arms:
        right = arm.correct.sum(axis=0)
        for label, mask in (("no run right", right == 0), ("every run right", right == len(arm.trial_ids))):
            indices = np.flatnonzero(mask)
            listed = ", ".join(map(str, indices[:shown])) + (f", ... ({indices.size - shown} more)"
                                                              if indices.size > shown else "")
            rows.append({"task": arm.task, "arm": arm.arm, "examples": label, "count": int(indices.size),
                         "indices": listed or "-"})
    return pd.DataFrame(rows)


def _disagreements(predictions: np.ndarray) -> np.ndarray:
    """(runs, runs): the share of examples two runs predict differently."""
    return (predictions[:, None, :] != predictions[None, :, :]).mean(axis=2)


def churn_permutation_p(first: np.ndarray, second: np.ndarray, n_perm: int = 9999, seed: int = 0) -> float:
    """Two-sided p of mean flip rate (first) - mean flip rate (second) against every split of the pooled runs into
    arms of the same sizes (exact when there are at most n_perm splits, else n_perm random ones, +1 as scipy)."""
    pooled = np.concatenate([first, second])
    matrix, runs, size = _disagreements(pooled), len(pooled), len(first)

    def churn(members: np.ndarray) -> float:  # the mean flip rate is the mean disagreement over pairs of runs
        block = matrix[np.ix_(members, members)]
        return float(block.sum() / (len(members) * (len(members) - 1)))

    def statistic(members: np.ndarray) -> float:
        rest = np.setdiff1d(np.arange(runs), members)
        return churn(members) - churn(rest)

    observed = abs(statistic(np.arange(size)))
    if math.comb(runs, size) <= n_perm:
        null = np.array([abs(statistic(np.array(c))) for c in combinations(range(runs), size)])
        return float(np.mean(null >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    null = np.array([abs(statistic(rng.permutation(runs)[:size])) for _ in range(n_perm)])
    return float((np.sum(null >= observed - 1e-12) + 1) / (n_perm + 1))


def compare_churn(arms: list[ArmPredictions], correction: str = "holm") -> pd.DataFrame:
    """Pairs of arms of a task on the same examples: mean flip rate of each, and a permutation test over runs of their
    difference, corrected over the task's pairs. Arms of fewer than 2 runs each cannot be compared."""
    rows = []
    for task in sorted({arm.task for arm in arms}):
        of_task = [arm for arm in arms if arm.task == task]
        task_rows = []
        for first, second in combinations(of_task, 2):
            if first.gold.shape != second.gold.shape or not np.array_equal(first.gold, second.gold):
                continue
            a, b = flip_rates(first.predictions), flip_rates(second.predictions)
            task_rows.append({"task": task, "arm A": first.arm, "arm B": second.arm, "runs A": len(first.trial_ids),
                              "runs B": len(second.trial_ids), "mean flip rate A": float(a.mean()),
                              "mean flip rate B": float(b.mean()), "A - B": float(a.mean() - b.mean()),
                              "permutation p (runs)": churn_permutation_p(first.predictions, second.predictions)})
        for row, adjusted in zip(task_rows, adjust_pvalues([r["permutation p (runs)"] for r in task_rows], correction)):
            row[f"p ({CORRECTIONS[correction]})"] = adjusted
        rows += task_rows
    if not rows:
        raise NotEnoughData("comparing churn needs two arms of one task evaluated on the same examples")
    return pd.DataFrame(rows)
