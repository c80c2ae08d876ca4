"""Zhang et al. 2021: bias correction, re-initialization, longer training. Arms: devlin (BERTAdam), adamw, reinit,
long; each on the same independent (WI, DO) seed pairs."""
from __future__ import annotations

import pandas as pd

from ...analysis.failures import failed
from ...analysis.results import NotEnoughData
from ..statistics import risk_difference, spread_reduction, welch
from .base import Claim, Evidence, on_shared_tasks, require_learning, scores_by_task, stacked

SCORE_POINT = 0.01    # stated default: one metric point, the smallest gain the papers' tables resolve
SPREAD_POINT = 0.005  # stated default: half a point of mean absolute deviation
FAILURE_SHARE = 0.05  # stated default: one run in twenty


def failure_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(failed runs, runs): Mosbach et al.'s definition, at or below the majority baseline."""
    return int(failed(frame).sum()), len(frame)


def more_failures(worse: pd.DataFrame, better: pd.DataFrame, worse_name: str, better_name: str) -> Evidence:
    """The failure rate of `worse` above that of `better`, each task a stratum (Mantel-Haenszel weights)."""
    frames, note = require_learning({worse_name: worse, better_name: better}, every=False)
    worse, better = on_shared_tasks(frames[worse_name], frames[better_name])
    tables, parts = [], []
    for task in sorted(set(worse["task"])):
        (events_w, runs_w), (events_b, runs_b) = (failure_counts(worse[worse["task"] == task]),
                                                  failure_counts(better[better["task"] == task]))
        if min(runs_w, runs_b) >= 2:
            tables.append((task, events_w, runs_w, events_b, runs_b))
            parts.append(f"{task} {events_w}/{runs_w} vs {events_b}/{runs_b}")
    if not tables:
        raise NotEnoughData("each arm needs two or more finished runs on a shared task")
    return Evidence(risk_difference(tables), "failure-rate difference per task, pooled with Mantel-Haenszel weights; "
                    "continuity-corrected Wilson bounds combined by MOVER, p by inverting them (one-sided)",
                    f"failed with {worse_name} vs {better_name}: {'; '.join(parts)}{note}")


def _two_arms(first: pd.DataFrame, second: pd.DataFrame, first_name: str, second_name: str, statistic,
              test: str) -> Evidence:
    """`statistic` of first over second on the tasks where both learned (first is arm B of the estimate)."""
    frames, note = require_learning({first_name: first, second_name: second})
    first, second = frames[first_name], frames[second_name]
    return Evidence(statistic(*stacked(second, first, "final")), test,
                    f"{first_name}: {scores_by_task(first)} | {second_name}: {scores_by_task(second)}{note}")


def higher_mean(better: pd.DataFrame, worse: pd.DataFrame, better_name: str, worse_name: str) -> Evidence:
    return _two_arms(better, worse, better_name, worse_name, welch, "difference of mean final dev scores per task "
                     "by Welch's t, pooled over tasks with weights n_A n_B / (n_A + n_B) (one-sided tests)")


def lower_spread(tighter: pd.DataFrame, wider: pd.DataFrame, tighter_name: str, wider_name: str) -> Evidence:
    return _two_arms(tighter, wider, tighter_name, wider_name, spread_reduction, "difference of mean absolute "
                     "deviations from the arm's median (Brown-Forsythe) per task by Welch's t, pooled over tasks "
                     "(one-sided tests)")


CLAIMS = [
    Claim("zhang-bertadam-failures", ("devlin", "adamw"), "Zhang 2021",
          "BERTAdam (no bias correction) fails more often than AdamW",
          "RTE: 48% of 50 BERTAdam runs below 55% accuracy", "failure rate BERTAdam - AdamW",
          lambda d: more_failures(d.devlin(), d.trials("adamw"), "BERTAdam", "AdamW"), smallest=FAILURE_SHARE,
          smallest_source="stated default: one run in twenty"),
    Claim("zhang-bertadam-scores", ("devlin", "adamw"), "Zhang 2021",
          "BERTAdam scores lower than bias-corrected AdamW",
          "bias correction raises the mean on RTE, MRPC, STS-B, CoLA", "mean dev score AdamW - BERTAdam",
          lambda d: higher_mean(d.trials("adamw"), d.devlin(), "AdamW", "BERTAdam"), smallest=SCORE_POINT,
          smallest_source="stated default: one metric point"),
    Claim("zhang-reinit-mean", ("adamw", "reinit"), "Zhang 2021",
          "Re-initializing the top layers and the pooler raises the mean",
          "re-init raises the mean on few-sample tasks", "mean dev score re-init - AdamW",
          lambda d: higher_mean(d.trials("reinit"), d.trials("adamw"), "re-init", "AdamW"), smallest=SCORE_POINT,
          smallest_source="stated default: one metric point"),
    Claim("zhang-reinit-spread", ("adamw", "reinit"), "Zhang 2021",
          "Re-initializing the top layers and the pooler lowers the spread",
          "re-init lowers the std across seeds", "mean absolute deviation AdamW - re-init",
          lambda d: lower_spread(d.trials("reinit"), d.trials("adamw"), "re-init", "AdamW"), smallest=SPREAD_POINT,
          smallest_source="stated default: half a point of mean absolute deviation"),
    Claim("zhang-longer", ("adamw", "long"), "Zhang 2021",
          "Training longer than 3 epochs helps on small data",
          "more iterations raise few-sample scores (RTE: 400 steps at batch 32)", "mean dev score long - 3 epochs",
          lambda d: higher_mean(d.trials("long"), d.trials("adamw"), "long", "3 epochs"), smallest=SCORE_POINT,
          smallest_source="stated default: one metric point"),
]
