"""Seed soups (Wortsman et al. 2022): average the final weights of an arm's runs instead of picking the best.

The ingredients are an arm's complete trials whose final weights were kept (`--keep-weights`). Two soups:
- uniform: the mean of every ingredient's weights;
- greedy: ingredients in order of their dev score, best first, each kept only if the soup's dev score does
  not fall with it (Wortsman et al.'s recipe).

Dev chooses, so with `--split-dev` trials each soup is scored on the test half that nothing chose on, and
compared there with the best single run and with E[max of n] of the arm's runs (n = the ingredients): is
averaging the seeds worth more than picking the best? Without a test half the comparison is on dev, which
flatters whatever was chosen on it, and the table says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import RunOptions, TrialConfig
from ..storage.store import Store
from ..training.checkpoints import check_recorded, list_checkpoints, load_checkpoint
from ..training.evaluation import evaluate_with_predictions
from ..training.records import TrialStatus
from .expected import expected_max
from .results import AnalysisError, load_results


@dataclass(frozen=True)
class Ingredient:
    trial_id: int
    config: TrialConfig
    dev: float
    test: float | None
    weights: Path


def _final_scores(trials: pd.DataFrame, curves: pd.DataFrame, split: str) -> pd.Series:
    """Per trial id: its primary metric at its last evaluation on `split`."""
    primary = trials.set_index("id")["metric"]
    rows = curves[(curves["split"] == split) & (curves["metric"] == curves["trial_id"].map(primary))]
    return rows.sort_values("step").groupby("trial_id")["value"].last()


def ingredients(store: Path, arm: str, task: str | None = None) -> list[Ingredient]:
    """The complete trials of `arm` (and `task`) with kept final weights, best dev score first."""
    results = load_results(store)
    trials = results.trials[(results.trials["arm"] == arm) & (results.trials["status"] == TrialStatus.COMPLETE)]
    if task is not None:
        trials = trials[trials["task"] == task]
    if trials.empty:
        arms = ", ".join(sorted(results.trials["arm"].unique()))
        raise AnalysisError(f"no complete trials of arm {arm!r}" + (f" on {task}" if task else "") + f"; arms: {arms}")
    if trials["task"].nunique() > 1:
        raise AnalysisError(f"arm {arm!r} ran on {', '.join(sorted(trials['task'].unique()))}: name one with --task")
    test = _final_scores(trials, results.curves, "test")
    found = []
    with Store(store, readonly=True) as db:
        since = db.files_recorded_since()
        for row in trials.itertuples():
            steps = list_checkpoints(db.layout.snapshots(row.trial_key))
            if not steps or max(steps) != row.steps_done:
                continue
            check_recorded(steps[max(steps)], db.recorded_hash(steps[max(steps)]), row.started_at < since)
            config = TrialConfig(**db.trial_config(int(row.id))[0])
            found.append(Ingredient(int(row.id), config, float(row.final), test.get(row.id), steps[max(steps)]))
    if len(found) < 2:
        raise AnalysisError(f"arm {arm!r} has {len(found)} trial(s) with kept final weights; a soup needs two or "
                            f"more (run the study with --keep-weights)")
    return sorted(found, key=lambda ingredient: -ingredient.dev)


def average(weights: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The elementwise mean of parameter sets with the same names and shapes."""
    names = set(weights[0])
    if any(set(w) != names for w in weights):
        raise AnalysisError("the ingredients' weights hold different parameters: not one architecture")
    return {name: torch.stack([w[name].float() for w in weights]).mean(0).to(weights[0][name].dtype)
            for name in weights[0]}


class SoupEvaluator:
    """One model of the arm's architecture (the first ingredient's config: pretrained encoder, adapters if any)
    that takes a parameter set and scores it on the dev set and the test half, as the trials do."""

    def __init__(self, config: TrialConfig, options: RunOptions, store: Path):
        from ..training.trial import Trial

        self.trial = Trial(config, options, store)
        self.names = {name for name, p in self.trial.model.named_parameters() if p.requires_grad}

    def __call__(self, weights: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        model, trial = self.trial.model, self.trial
        missing = self.names - set(weights)
        unknown = set(weights) - set(dict(model.named_parameters()))
        if missing or unknown:
            raise AnalysisError(f"the kept weights do not fit the model ({len(missing)} missing, {len(unknown)} "
                                f"unknown parameters)")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in weights:
                    param.copy_(weights[name])
        scores = [evaluate_with_predictions(model, data, trial.task, trial.config.eval_batch_size, trial.device,
                                            trial.pad_token_id)[0][trial.task.metric]
                  for data in (trial.inputs.dev, trial.inputs.test) if data is not None]
        return scores[0], (scores[1] if len(scores) > 1 else None)


def soups(items: list[Ingredient], evaluate: SoupEvaluator) -> pd.DataFrame:
    """Best single run, uniform soup and greedy soup: dev score (what chose), test score, ingredients."""
    weights = [load_checkpoint(item.weights) for item in items]
    rows = [{"model": f"best single run (trial {items[0].trial_id})", "ingredients": 1,
             "dev": items[0].dev, "test": items[0].test}]
    dev, test = evaluate(average(weights))
    rows.append({"model": "uniform soup", "ingredients": len(items), "dev": dev, "test": test})
    chosen = [0]
    best_dev, best_test = items[0].dev, items[0].test  # the trial's own scores: a soup of one is the model itself
    for index in range(1, len(items)):
        candidate_dev, candidate_test = evaluate(average([weights[k] for k in chosen + [index]]))
        if candidate_dev >= best_dev:
            chosen.append(index)
            best_dev, best_test = candidate_dev, candidate_test
    rows.append({"model": f"greedy soup (trials {', '.join(str(items[k].trial_id) for k in chosen)})",
                 "ingredients": len(chosen), "dev": best_dev, "test": best_test})
    scored = "test" if items[0].test is not None else "dev"
    scores = np.array([getattr(item, scored) for item in items], dtype=float)
    for n in sorted({1, len(chosen), len(items)}):
        rows.append({"model": f"E[max of {n}] single runs ({scored})", "ingredients": n,
                     scored: float(expected_max(scores, n=[n])["expected"].iloc[0])})
    return pd.DataFrame(rows, columns=["model", "ingredients", "dev", "test"])
