"""Zhang et al. 2021: bias correction, re-initialization, longer training. Arms: devlin (BERTAdam), adamw, reinit,
long; each on the same independent (WI, DO) seed pairs."""
from __future__ import annotations

import pandas as pd

from ...analysis.failures import failed
from ...analysis.results import NotEnoughData
from ..statistics import risk_difference, spread_reduction, two_arm
from .base import Claim, Evidence, on_shared_tasks, require_learning, scores_by_task, stacked


def failure_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(failed runs, runs): Mosbach et al.'s definition, at or below the majority baseline."""
    return int(failed(frame).sum()), len(frame)


def more_failures(worse: pd.DataFrame, better: pd.DataFrame, worse_name: str, better_name: str) -> Evidence:
    """The failure rate of `worse` above that of `better`, pooled over the tasks both arms ran."""
    worse, better = on_shared_tasks(worse, better)
    (events_w, runs_w), (events_b, runs_b) = failure_counts(worse), failure_counts(better)
    if min(runs_w, runs_b) < 2:
        raise NotEnoughData("each arm needs two or more finished runs")
    estimate = risk_difference(events_w, runs_w, events_b, runs_b)
    return Evidence(estimate, "failure-rate difference: Fisher's exact test (one-sided), Newcombe interval; tasks "
                    "pooled (those both arms ran)", f"failed {events_w}/{runs_w} with {worse_name} vs {events_b}/{runs_b} with {better_name}")


def higher_mean(better: pd.DataFrame, worse: pd.DataFrame, better_name: str, worse_name: str) -> Evidence:
    require_learning(better, worse)
    estimate = two_arm(*stacked(worse, better, "final"))
    return Evidence(estimate, "difference of mean final dev scores, averaged over tasks; permutation test within "
                    "tasks (one-sided), stratified bootstrap interval",
                    f"{better_name}: {scores_by_task(better)} | {worse_name}: {scores_by_task(worse)}")


def lower_spread(tighter: pd.DataFrame, wider: pd.DataFrame, tighter_name: str, wider_name: str) -> Evidence:
    require_learning(tighter, wider)
    estimate = two_arm(*stacked(wider, tighter, "final"), statistic=spread_reduction)
    return Evidence(estimate, "difference of mean absolute deviations from the arm's median (Brown-Forsythe), "
                    "averaged over tasks; permutation test within tasks (one-sided), stratified bootstrap interval",
                    f"{tighter_name}: {scores_by_task(tighter)} | {wider_name}: {scores_by_task(wider)}")


CLAIMS = [
    Claim("zhang-bertadam-failures", ("devlin", "adamw"), "Zhang 2021",
          "BERTAdam (no bias correction) fails more often than AdamW",
          "RTE: 48% of 50 BERTAdam runs below 55% accuracy", "failure rate BERTAdam - AdamW",
          lambda d: more_failures(d.devlin(), d.trials("adamw"), "BERTAdam", "AdamW"), smallest=0.05),
    Claim("zhang-bertadam-scores", ("devlin", "adamw"), "Zhang 2021",
          "BERTAdam scores lower than bias-corrected AdamW",
          "bias correction raises the mean on RTE, MRPC, STS-B, CoLA", "mean dev score AdamW - BERTAdam",
          lambda d: higher_mean(d.trials("adamw"), d.devlin(), "AdamW", "BERTAdam"), smallest=0.01),
    Claim("zhang-reinit-mean", ("adamw", "reinit"), "Zhang 2021",
          "Re-initializing the top layers and the pooler raises the mean",
          "re-init raises the mean on few-sample tasks", "mean dev score re-init - AdamW",
          lambda d: higher_mean(d.trials("reinit"), d.trials("adamw"), "re-init", "AdamW"), smallest=0.01),
    Claim("zhang-reinit-spread", ("adamw", "reinit"), "Zhang 2021",
          "Re-initializing the top layers and the pooler lowers the spread",
          "re-init lowers the std across seeds", "mean absolute deviation AdamW - re-init",
          lambda d: lower_spread(d.trials("reinit"), d.trials("adamw"), "re-init", "AdamW"), smallest=0.005),
    Claim("zhang-longer", ("adamw", "long"), "Zhang 2021",
          "Training longer than 3 epochs helps on small data",
          "more iterations raise few-sample scores (RTE: 400 steps at batch 32)", "mean dev score long - 3 epochs",
          lambda d: higher_mean(d.trials("long"), d.trials("adamw"), "long", "3 epochs"), smallest=0.01),
]
