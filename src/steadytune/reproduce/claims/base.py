"""A claim: one finding of one paper, the arms it needs, its test, and the thresholds of its verdict rule.

Everything that decides a verdict is a field here, fixed before any data is read: the effect's
orientation (positive when the paper is right), the null that "holds" tests against, and the smallest
effect that would still count as the paper's (`smallest`, the SESOI, with its source), which "does not
hold" tests against. An equivalence claim ("comparable", "no relation") carries a margin instead.

Arms must learn before they are compared: on each task, a score or spread comparison needs a run of every
arm it compares to beat the majority baseline by LEARNS_MARGIN, and a failure-rate comparison needs one of
its two arms to. A task that fails this is left out, and a row left with no task says why.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...analysis.results import NotEnoughData, Results
from ..statistics import Estimate

LEARNS_MARGIN = 0.05  # a run learns when its final dev score beats the majority baseline by this much


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
        return f" ({'; '.join(reason for _, reason in sorted(reasons.items()))})" if reasons else ""


@dataclass(frozen=True)
class Claim:
    key: str
    arms: tuple[str, ...]  # the arms its evaluation reads; `plan` counts a claim's cost over them
    paper: str
    text: str
    figure: str            # the paper's figure, as published
    effect: str            # what the effect measures, oriented so that > 0 means the paper is right
    evaluate: Callable[[ClaimData], Evidence]
    null: float = 0.0      # "holds" tests effect <= null
    smallest: float = 0.0  # the SESOI: "does not hold" tests effect >= this
    smallest_source: str = ""  # where the SESOI (or the margin) comes from: a figure of the paper or a stated default
    margin: tuple[float, float] | None = None  # equivalence claims: holds inside, does not hold outside
    paper_effect: float | None = None  # the paper's own effect on this scale, where it gives one (for power)
    revised: str = ""      # a rule changed after data was seen: what changed, and why

    def rule(self) -> str:
        if self.margin is not None:
            low, high = self.margin
            return (f"holds if the effect lies within [{low:g}, {high:g}] (two one-sided tests); does not hold if it "
                    f"lies outside (one-sided test in each direction, the smaller p doubled); Holm p < 0.05")
        return (f"holds if effect > {self.null:g}; does not hold if effect < {self.smallest:g} (each one-sided, "
                f"Holm p < 0.05)")


def learns(frame: pd.DataFrame) -> bool:
    """Some run beats the majority baseline by LEARNS_MARGIN (the lr check's rule for one run)."""
    return bool((frame["final"] >= frame["baseline_metric"] + LEARNS_MARGIN).any())


def learning_tasks(frames: dict[str, pd.DataFrame], every: bool = True) -> tuple[list[str], list[str]]:
    """(tasks where every arm learns, or with every=False at least one; reasons for the tasks left out)."""
    tasks = sorted(set.intersection(*(set(frame["task"]) for frame in frames.values())))
    kept, reasons = [], []
    for task in tasks:
        silent = [name for name, frame in frames.items() if not learns(frame[frame["task"] == task])]
        if (silent and every) or len(silent) == len(frames):
            reasons.append(f"{task}: {' and '.join(silent)} did not learn (no run {LEARNS_MARGIN:g} above the "
                           f"majority baseline)")
        else:
            kept.append(task)
    return kept, reasons


def require_learning(frames: dict[str, pd.DataFrame], every: bool = True) -> tuple[dict[str, pd.DataFrame], str]:
    """The frames cut to the tasks where the arms learned, and a note of the tasks left out; NotEnoughData when no
    task is left."""
    kept, reasons = learning_tasks(frames, every)
    if not kept:
        raise NotEnoughData("; ".join(reasons) or "the arms share no task")
    note = f" (left out: {'; '.join(reasons)})" if reasons else ""
    return {name: frame[frame["task"].isin(kept)] for name, frame in frames.items()}, note


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
    """values, in_b, strata (task) of two arms, for the two-arm tests; tasks where either arm has fewer than two
    finite values are left out."""
    a, b = on_shared_tasks(a[np.isfinite(a[column].to_numpy(dtype=float))],
                           b[np.isfinite(b[column].to_numpy(dtype=float))])
    sizes = pd.concat([a.groupby("task").size(), b.groupby("task").size()], axis=1).min(axis=1)
    tasks = set(sizes[sizes >= 2].index)
    a, b = a[a["task"].isin(tasks)], b[b["task"].isin(tasks)]
    if a.empty or b.empty:
        raise NotEnoughData("each arm needs two or more finished runs on a shared task")
    values = np.concatenate([a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)])
    in_b = np.concatenate([np.zeros(len(a), dtype=bool), np.ones(len(b), dtype=bool)])
    strata = np.concatenate([a["task"].to_numpy(), b["task"].to_numpy()])
    return values, in_b, strata
