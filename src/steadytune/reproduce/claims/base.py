"""A claim: one finding of one paper, the arms it needs, its test, and the thresholds of its verdict rule.

Everything that decides a verdict is a field here, fixed before any data is read: the effect's
orientation (positive when the paper is right), the null the p-value tests against, and the smallest
effect that would still count as the paper's (`smallest`), below which a confident interval says
*does not hold*. An equivalence claim ("comparable", "no relation") carries a margin instead.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...analysis.results import NotEnoughData, Results
from ..statistics import Estimate


@dataclass(frozen=True)
class Evidence:
    estimate: Estimate
    test: str   # the test in words
    ours: str   # our figures in words


@dataclass
class ClaimData:
    """The result trials of one setting, per arm, with their scores and curves; and the Hao measurements."""

    setting: str
    tasks: list[str]
    arms: dict[str, Results]
    measures: pd.DataFrame = field(default_factory=pd.DataFrame)  # arm, task, wi_seed and landscapes.MEASURES
    untrained: dict[str, dict[str, str]] = field(default_factory=dict)  # arm -> task -> why it was not trained

    def trials(self, arm: str) -> pd.DataFrame:
        if arm not in self.arms:
            raise NotEnoughData(f"no finished runs of the {arm} arm" + self.why_untrained(arm))
        return self.arms[arm].trials

    def devlin(self) -> pd.DataFrame:
        return self.trials("devlin")

    def why_untrained(self, *arms: str) -> str:
        """'; rte: the model does not learn rte at any candidate lr' for the tasks these arms were not trained on."""
        reasons = {task: reason for arm in arms for task, reason in self.untrained.get(arm, {}).items()}
        return "".join(f" ({reason})" for _, reason in sorted(reasons.items()))


@dataclass(frozen=True)
class Claim:
    key: str
    arms: tuple[str, ...]  # the arms its evaluation reads; `plan` counts a claim's cost over them
    paper: str
    text: str
    figure: str            # the paper's figure, as published
    effect: str            # what the effect measures, oriented so that > 0 means the paper is right
    evaluate: Callable[[ClaimData], Evidence]
    null: float = 0.0      # p tests effect <= null
    smallest: float | None = 0.0  # does not hold when the interval lies below this
    margin: tuple[float, float] | None = None  # equivalence claims: holds inside, does not hold wholly outside
    revised: str = ""      # a rule changed after data was seen: what changed, and why

    def rule(self) -> str:
        if self.margin is not None:
            low, high = self.margin
            return (f"holds if the effect lies within [{low:g}, {high:g}] (two one-sided tests, Holm p < 0.05); "
                    f"does not hold if its 95% interval lies wholly outside")
        return (f"holds if effect > {self.null:g} (one-sided, Holm p < 0.05); does not hold if its 95% interval "
                f"lies below {self.smallest:g}")


def require_learning(*frames: pd.DataFrame) -> None:
    """Score comparisons need something learned: a claim about scores says nothing when every run of every arm it
    compares sits at or below the majority baseline."""
    from ...analysis.failures import failed

    if all(frame.empty or failed(frame).all() for frame in frames):
        raise NotEnoughData("no run beats the majority baseline: nothing learned to compare")


def scores_by_task(frame: pd.DataFrame, score: str = "final") -> str:
    """'rte 0.612±0.031 (n=5), sst2 ...': mean ± sd per task, for the table's 'ours' column."""
    parts = []
    for task, group in frame.groupby("task", sort=True):
        values = group[score].to_numpy(dtype=float)
        sd = values.std(ddof=1) if len(values) > 1 else float("nan")
        parts.append(f"{task} {values.mean():.3f}±{sd:.3f} (n={len(values)})")
    return "; ".join(parts)


def on_shared_tasks(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of two arms on the tasks both have: a task one arm lacks would tilt a pooled comparison."""
    shared = set(a["task"]) & set(b["task"])
    return a[a["task"].isin(shared)], b[b["task"].isin(shared)]


def stacked(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values, in_b, strata (task) of two arms, for the two-arm tests; tasks that lack either arm are left out."""
    a, b = on_shared_tasks(a, b)
    if a.empty or b.empty or min(a.groupby("task").size().min(), b.groupby("task").size().min()) < 2:
        raise NotEnoughData("each arm needs two or more finished runs on a shared task")
    values = np.concatenate([a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)])
    in_b = np.concatenate([np.zeros(len(a), dtype=bool), np.ones(len(b), dtype=bool)])
    strata = np.concatenate([a["task"].to_numpy(), b["task"].to_numpy()])
    keep = np.isfinite(values)
    return values[keep], in_b[keep], strata[keep]
