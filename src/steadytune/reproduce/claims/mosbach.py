"""Mosbach et al. 2021: failures are optimization failures, the simple baseline, the rest is generalization."""
from __future__ import annotations

import pandas as pd

from ...analysis.failures import failed, training_losses
from ...analysis.gradients import vanishing_gradients
from ...analysis.results import NotEnoughData
from ..statistics import pooled_spearman, risk_difference
from .base import Claim, ClaimData, Evidence
from .zhang import lower_spread, more_failures

TRAINED_ARMS = ("devlin", "adamw", "reinit", "long")
GENERALIZATION_MARGIN = 0.5  # |rho| below this: training loss tells little about the dev score


def vanishing_in_failures(data: ClaimData) -> Evidence:
    rows = []
    for arm in TRAINED_ARMS:
        if arm in data.arms:
            results = data.arms[arm]
            flags = vanishing_gradients(results).set_index("id")["vanishing"]
            rows.append(results.trials.assign(failed=failed(results.trials).to_numpy(),
                                              vanishing=results.trials["id"].map(flags)))
    if not rows:
        raise NotEnoughData("no finished runs")
    frame = pd.concat(rows).dropna(subset=["vanishing"])
    bad, good = frame[frame["failed"]], frame[~frame["failed"]]
    if bad.empty or good.empty:
        raise NotEnoughData(f"{len(bad)} failed and {len(good)} successful runs with diagnostics: the comparison "
                            f"needs both")
    events_bad, events_good = int(bad["vanishing"].sum()), int(good["vanishing"].sum())
    estimate = risk_difference(events_bad, len(bad), events_good, len(good))
    return Evidence(estimate, "share of runs whose lower-layer gradient norm fell 100x in the first 30% of training, "
                    "failed - successful runs; Fisher's exact test (one-sided), Newcombe interval",
                    f"vanishing in {events_bad}/{len(bad)} failed vs {events_good}/{len(good)} successful runs")


def loss_does_not_tell(data: ClaimData) -> Evidence:
    results = data.arms.get("grid")
    if results is None:
        raise NotEnoughData("no finished runs of the grid arm")
    frame = results.trials.join(training_losses(results), on="id")
    frame = frame[~failed(frame)]
    estimate, parts = pooled_spearman(frame["final_loss"], frame["final"], frame["task"].to_numpy(),
                                      margin=GENERALIZATION_MARGIN)
    if not parts:
        raise NotEnoughData("needs four or more successful grid runs on a task")
    spread = "; ".join(f"{task}: loss sd {g['final_loss'].std():.3f}, dev sd {g['final'].std():.3f}"
                       for task, g in frame.groupby("task"))
    return Evidence(estimate, "Spearman rho of final training loss with final dev score among successful runs of "
                    "one recipe, Fisher-z pooled over tasks; two one-sided tests against the margin", spread)


CLAIMS = [
    Claim("mosbach-optimization", TRAINED_ARMS, "Mosbach 2021",
          "Failed runs are optimization failures: lower-layer gradients "
          "vanish early", "gradients of failed runs vanish in the lower layers early in training",
          "share with vanishing gradients, failed - successful", vanishing_in_failures, smallest=0.1),
    Claim("mosbach-baseline-std", ("devlin", "long"), "Mosbach 2021",
          "The simple baseline (bias correction, warmup, longer training) "
          "lowers the std against Devlin's recipe", "std RTE 7.2 -> 2.4, MRPC 5.9 -> 0.8, CoLA 25.6 -> 1.0",
          "mean absolute deviation Devlin - baseline",
          lambda d: lower_spread(d.trials("long"), d.devlin(), "baseline", "Devlin"), smallest=0.005),
    Claim("mosbach-baseline-failures", ("devlin", "long"), "Mosbach 2021",
          "The simple baseline fails less often than Devlin's recipe",
          "fewer failed runs on RTE, MRPC, CoLA (25 seeds)", "failure rate Devlin - baseline",
          lambda d: more_failures(d.devlin(), d.trials("long"), "Devlin", "baseline"), smallest=0.05),
    Claim("mosbach-generalization", ("grid",), "Mosbach 2021",
          "The remaining variance is generalization: equal training loss, "
          "different dev scores", "successful runs reach the same training loss, dev scores differ (Mosbach §6)",
          "Spearman rho of training loss with dev score", loss_does_not_tell, smallest=None,
          margin=(-GENERALIZATION_MARGIN, GENERALIZATION_MARGIN)),
]
