"""Mosbach et al. 2021: failures are optimization failures, the simple baseline, the rest is generalization."""
from __future__ import annotations

import pandas as pd

from ...analysis.failures import failed, training_losses
from ...analysis.gradients import vanishing_gradients
from ...analysis.results import NotEnoughData
from ..statistics import pooled_spearman, risk_difference
from .base import Claim, ClaimData, Evidence
from .zhang import FAILURE_SHARE, SPREAD_POINT, lower_spread, more_failures

TRAINED_ARMS = ("devlin", "adamw", "reinit", "long")
GENERALIZATION_MARGIN = 0.5  # |rho| below this: training loss tells little about the dev score
# Mosbach et al. Table 1, RTE: std 7.2 -> 2.4 points; the mean absolute deviation of a normal is 0.8 std.
PAPER_SPREAD_DROP = 0.8 * (0.072 - 0.024)


def vanishing_in_failures(data: ClaimData) -> Evidence:
    rows = []
    for arm in TRAINED_ARMS:
        if arm in data.arms:
            results = data.arms[arm]
            flags = vanishing_gradients(results).set_index("id")["vanishing"]
            rows.append(results.trials.assign(failed=failed(results.trials).to_numpy(),
                                              vanishing=results.trials["id"].map(flags)))
    if not rows:
        raise NotEnoughData("no finished runs" + data.why_untrained(*TRAINED_ARMS))
    frame = pd.concat(rows).dropna(subset=["vanishing"])
    tables, parts = [], []
    for task, group in frame.groupby("task", sort=True):
        bad, good = group[group["failed"]], group[~group["failed"]]
        if len(bad) and len(good):
            tables.append((task, int(bad["vanishing"].sum()), len(bad), int(good["vanishing"].sum()), len(good)))
            parts.append(f"{task} {tables[-1][1]}/{len(bad)} failed vs {tables[-1][3]}/{len(good)} successful")
        else:
            parts.append(f"{task}: {len(bad)} failed and {len(good)} successful runs, left out")
    if not tables:
        raise NotEnoughData("no task has both failed and successful runs with diagnostics: " + "; ".join(parts))
    return Evidence(risk_difference(tables), "share of runs whose lower-layer gradient norm fell 100x in the first 30% "
                    "of training, failed - successful runs per task, Mantel-Haenszel pooled; corrected Wilson bounds by "
                    "MOVER (one-sided tests)", "vanishing in " + "; ".join(parts))


def loss_does_not_tell(data: ClaimData) -> Evidence:
    results = data.arms.get("grid")
    if results is None:
        raise NotEnoughData("no finished runs of the grid arm" + data.why_untrained("grid"))
    frame = results.trials.join(training_losses(results), on="id")
    frame = frame[~failed(frame)]
    estimate, parts = pooled_spearman(frame["final_loss"], frame["final"], frame["task"].to_numpy())
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
          "share with vanishing gradients, failed - successful", vanishing_in_failures, smallest=0.1,
          smallest_source="stated default: one run in ten more"),
    Claim("mosbach-baseline-std", ("devlin", "long"), "Mosbach 2021",
          "The simple baseline (bias correction, warmup, longer training) "
          "lowers the std against Devlin's recipe", "std RTE 7.2 -> 2.4, MRPC 5.9 -> 0.8, CoLA 25.6 -> 1.0",
          "mean absolute deviation Devlin - baseline",
          lambda d: lower_spread(d.trials("long"), d.devlin(), "baseline", "Devlin"), smallest=SPREAD_POINT,
          smallest_source="stated default: half a point of mean absolute deviation", paper_effect=PAPER_SPREAD_DROP),
    Claim("mosbach-baseline-failures", ("devlin", "long"), "Mosbach 2021",
          "The simple baseline fails less often than Devlin's recipe",
          "fewer failed runs on RTE, MRPC, CoLA (25 seeds)", "failure rate Devlin - baseline",
          lambda d: more_failures(d.devlin(), d.trials("long"), "Devlin", "baseline"), smallest=FAILURE_SHARE,
          smallest_source="stated default: one run in twenty"),
    Claim("mosbach-generalization", ("grid",), "Mosbach 2021",
          "The remaining variance is generalization: equal training loss, "
          "different dev scores", "successful runs reach the same training loss, dev scores differ (Mosbach §6)",
          "Spearman rho of training loss with dev score", loss_does_not_tell,
          margin=(-GENERALIZATION_MARGIN, GENERALIZATION_MARGIN), paper_effect=0.0,
          smallest_source="stated default: |rho| < 0.5, a correlation short of Cohen's 'large'"),
]
