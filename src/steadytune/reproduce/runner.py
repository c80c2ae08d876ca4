"""Running a reproduction: the lr check, every arm's study, the landscape measurements; then the data per setting.

Everything goes to one store and every step resumes: studies skip finished trials, the lr check reads
its finished runs back, and landscape measurements are kept once computed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..analysis.results import build_results
from ..config import RunOptions
from ..inputs import load_raw, resolve_task
from ..ordering import total_steps
from ..store import Store
from ..study import Executor, StudyEvents, StudyRunner, StudySpec, expand
from .claims import CLAIMS, ClaimData
from .design import PUBLISHED_LR, Arm, Scale, arm_spec, arms, lr_check_spec, trial_keys
from .landscapes import measure, recorded

SETTINGS = ("published", "learning")
LEARNS_MARGIN = 0.05  # a run learns when its final dev score beats the majority baseline by this much


@dataclass(frozen=True)
class LrChoice:
    task: str
    lr: float | None
    learned: bool
    tried: tuple[tuple[float, float | None, float | None], ...]  # (lr, final dev score, majority baseline)

    def describe(self) -> str:
        tried = ", ".join(f"{lr:g}: {'-' if score is None else f'{score:.3f}'}" for lr, score, _ in self.tried)
        if self.lr is None:
            return f"{self.task}: lr check not finished ({tried})"
        verdict = "learns" if self.learned else "no candidate learned; the best is used"
        return f"{self.task}: lr {self.lr:g} ({verdict}; final dev score at each lr: {tried})"


@dataclass
class Reproduction:
    model: str
    tasks: list[str]
    scale: Scale
    claims: list[str]
    settings: list[str]
    common: dict[str, Any] = field(default_factory=dict)  # trial config shared by every run (glue_dir, ...)

    def num_layers(self) -> int:
        from transformers import AutoConfig

        from ..models import resolve_model

        return int(AutoConfig.from_pretrained(resolve_model(self.model)).num_hidden_layers)

    def arms(self) -> dict[str, Arm]:
        needed = {arm for key in self.claims for arm in CLAIMS[key].arms}
        return {name: arm for name, arm in arms(self.scale, self.num_layers()).items() if name in needed}

    def base(self) -> dict[str, Any]:
        return {**self.common, "model": self.model}

    def lr_checks(self) -> list[StudySpec]:
        if "learning" not in self.settings:
            return []
        return [lr_check_spec(self.scale, task, lr, self.base()) for task in self.tasks
                for lr in self.scale.lr_candidates]

    def studies(self, lrs: dict[str, dict[str, float | None]]) -> list[tuple[str, str, Arm, StudySpec]]:
        """(setting, task, arm, spec) of every arm whose lr is known."""
        out = []
        for setting in self.settings:
            for task in self.tasks:
                lr = lrs.get(setting, {}).get(task)
                if lr is None:
                    continue
                for arm in self.arms().values():
                    out.append((setting, task, arm, arm_spec(arm, self.scale, task, lr, setting, self.base())))
        return out


def lr_choices(store: Store | None, reproduction: Reproduction) -> dict[str, LrChoice]:
    """Per task, the smallest candidate lr whose lr-check run learns (or the best one when none does)."""
    trials = store.trials() if store is not None else pd.DataFrame(columns=["trial_key", "status"])
    done = trials[trials["status"].isin(("complete", "diverged"))].drop_duplicates("trial_key").set_index("trial_key")
    choices = {}
    for task in reproduction.tasks:
        tried = []
        for lr in reproduction.scale.lr_candidates:
            key = trial_keys(lr_check_spec(reproduction.scale, task, lr, reproduction.base()))[0]
            row = done.loc[key] if key in done.index else None
            if row is None:
                tried.append((lr, None, None))
                continue
            # A diverged run, or one whose metric is undefined, scores the majority baseline: it did not learn.
            baseline = float(row["baseline_metric"])
            score = float(row["final_metric"]) if row["status"] == "complete" and pd.notna(row["final_metric"]) \
                else baseline
            tried.append((lr, score, baseline))
        if any(score is None for _, score, _ in tried):
            choices[task] = LrChoice(task, None, False, tuple(tried))
            continue
        learning = [lr for lr, score, baseline in tried if score >= baseline + LEARNS_MARGIN]
        best = max(tried, key=lambda t: t[1])[0]
        choices[task] = LrChoice(task, learning[0] if learning else best, bool(learning), tuple(tried))
    return choices


def learning_rates(store: Store | None, reproduction: Reproduction) -> dict[str, dict[str, float | None]]:
    lrs: dict[str, dict[str, float | None]] = {}
    if "published" in reproduction.settings:
        lrs["published"] = {task: PUBLISHED_LR for task in reproduction.tasks}
    if "learning" in reproduction.settings:
        lrs["learning"] = {task: choice.lr for task, choice in lr_choices(store, reproduction).items()}
    return lrs


def plan_steps(spec: StudySpec) -> int:
    """Training steps of a study if every trial ran fully."""
    steps, seen = 0, {}
    for trial in expand(spec):
        config = trial.config
        if config.task not in seen:
            train, _ = load_raw(config, resolve_task(config))
            seen[config.task] = len(train) if config.max_train is None else min(config.max_train, len(train))
        steps += total_steps(seen[config.task], config.batch_size, config.epochs, config.max_steps)
    return steps


@dataclass
class Progress:
    """Callbacks for the command's display."""

    on_stage: Callable[[str], None] = lambda text: None
    events: StudyEvents = field(default_factory=StudyEvents)
    on_measure: Callable[[int, int], None] = lambda done, total: None


def run(reproduction: Reproduction, store: Store, options: RunOptions, executor: Executor,
        progress: Progress | None = None) -> dict[str, LrChoice]:
    """Train what is missing: the lr check, then every arm in every setting, then the landscape measurements."""
    progress = progress or Progress()
    for spec in reproduction.lr_checks():
        progress.on_stage(f"lr check: {spec.tasks[0]} at lr {spec.config['lr']:g}")
        StudyRunner(spec, store, options, executor).run(progress.events)
    choices = lr_choices(store, reproduction)
    lrs = learning_rates(store, reproduction)
    for setting, task, arm, spec in reproduction.studies(lrs):
        progress.on_stage(f"{setting} lr {spec.config['lr']:g}, {task}: {arm.name} ({arm.description})")
        arm_options = options.model_copy(update={"save_checkpoints": 2}) if arm.snapshots else options
        StudyRunner(spec, store, arm_options, executor).run(progress.events)
        if arm.snapshots:
            _measure_arm(store, spec, reproduction.scale, options, progress)
    return choices


def _measure_arm(store: Store, spec: StudySpec, scale: Scale, options: RunOptions, progress: Progress) -> None:
    trials = store.trials()
    for key in trial_keys(spec):
        rows = trials[(trials["trial_key"] == key) & (trials["status"] == "complete")]
        if rows.empty or recorded(store, key, scale) is not None:
            continue
        progress.on_stage(f"landscape measurements of trial {int(rows['id'].iloc[0])}")
        measure(store, int(rows["id"].iloc[0]), scale, options, progress.on_measure)


def claim_data(store: Store, reproduction: Reproduction) -> dict[str, ClaimData]:
    """Per setting, the finished trials of each arm (found by their trial keys) and the Hao measurements."""
    trials, lrs = store.trials(), learning_rates(store, reproduction)
    curves = store.curves()
    data = {}
    for setting in reproduction.settings:
        per_arm: dict[str, list[str]] = {}
        measures = []
        for _, task, arm, spec in [s for s in reproduction.studies(lrs) if s[0] == setting]:
            keys = trial_keys(spec)
            per_arm.setdefault(arm.name, []).extend(keys)
            if arm.snapshots:
                finished = trials[trials["trial_key"].isin(keys) & (trials["status"] == "complete")]
                for row in finished.drop_duplicates("trial_key").itertuples():
                    values = recorded(store, row.trial_key, reproduction.scale)
                    if values is not None:
                        measures.append({"arm": arm.name, "task": row.task, "wi_seed": row.wi_seed, **values})
        arms_results = {}
        for name, keys in per_arm.items():
            chosen = trials[trials["trial_key"].isin(keys)]
            if chosen["status"].isin(("complete", "diverged")).any():
                arms_results[name] = build_results(chosen, curves[curves["trial_id"].isin(chosen["id"])])
        data[setting] = ClaimData(setting, reproduction.tasks, arms_results, pd.DataFrame(measures))
    return data
