"""Running a reproduction: the lr check, every arm's study, the landscape measurements; then the data per setting.

Everything goes to one store and every step resumes: studies skip finished trials, the lr check reads
its finished runs back, and landscape measurements are kept once computed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from ..analysis.results import build_results
from ..config import RunOptions
from ..storage.store import Store
from ..studies.executors import Executor
from ..studies.runner import StudyEvents, StudyRunner
from ..studies.spec import StudySpec, expand
from ..training.inputs import load_raw, resolve_task
from ..training.ordering import total_steps
from ..training.records import RESULT_STATUSES, TrialStatus
from .claims import CLAIMS, ClaimData
from .claims.base import LEARNS_MARGIN
from .design import PUBLISHED_LR, Arm, Scale, arm_spec, arms, lr_candidates_for, lr_check_spec, trial_keys
from .landscapes import measure, recorded

SETTINGS = ("published", "learning")


@dataclass(frozen=True)
class LrChoice:
    """The lr check of one task: the smallest candidate whose run learned; None while unfinished or when none did."""

    task: str
    lr: float | None
    learned: bool
    tried: tuple[tuple[float, float | None, float | None], ...]  # (lr, final dev score, majority baseline)

    @property
    def finished(self) -> bool:
        return all(score is not None for _, score, _ in self.tried)

    def describe(self) -> str:
        tried = ", ".join(f"{lr:g}: {'-' if score is None else f'{score:.3f}'}" for lr, score, _ in self.tried)
        if not self.finished:
            return f"{self.task}: lr check not finished ({tried})"
        if not self.learned:
            return (f"{self.task}: no candidate lr learns, so this task gives no answer (final dev score at each lr: "
                    f"{tried})")
        return f"{self.task}: lr {self.lr:g} (final dev score at each lr: {tried})"

    def reason(self, what: str = "the model") -> str | None:
        """Why an arm at this choice is not trained, or None when it is."""
        if not self.finished:
            return f"{what} lr check on {self.task} is not finished"
        if not self.learned:
            return f"{what} does not learn {self.task} at any candidate lr"
        return None


@dataclass(frozen=True)
class ModelFacts:
    layers: int
    hidden_size: int
    parameters: int

    def describe(self) -> str:
        return f"{self.layers} layers, hidden size {self.hidden_size}, {self.parameters / 1e6:.1f}M parameters"


Lrs = dict[str, dict[str, float | None]]  # setting (or "scratch") -> task -> lr, None where no arm is trained


@dataclass
class Reproduction:
    model: str
    tasks: list[str]
    scale: Scale
    claims: list[str]
    settings: list[str]
    common: dict[str, Any] = field(default_factory=dict)  # trial config shared by every run (glue_dir, ...)

    @cached_property
    def facts(self) -> ModelFacts:
        import torch
        from transformers import AutoConfig, AutoModel

        from ..models.loading import ModelError, resolve_model

        path = resolve_model(self.model)
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise ModelError(f"--model {self.model}: cannot read its configuration ({path}): {first}") from None
        with torch.device("meta"):  # counts parameters without allocating or loading them
            parameters = sum(p.numel() for p in AutoModel.from_config(config).parameters())
        return ModelFacts(int(config.num_hidden_layers), int(config.hidden_size), int(parameters))

    def arms(self) -> dict[str, Arm]:
        needed = {arm for key in self.claims for arm in CLAIMS[key].arms}
        return {name: arm for name, arm in arms(self.scale, self.facts.layers).items() if name in needed}

    def base(self) -> dict[str, Any]:
        return {**self.common, "model": self.model}

    def lr_candidates(self) -> tuple[float, ...]:
        return lr_candidates_for(self.scale, self.facts.hidden_size)

    def needs_scratch(self) -> bool:
        return any(arm.own_lr for arm in self.arms().values())

    def lr_checks(self) -> list[StudySpec]:
        """The fine-tuning lr check (learning setting) and the from-scratch one (when a claim reads that arm)."""
        checks = []
        if "learning" in self.settings:
            checks += [lr_check_spec(self.scale, task, lr, self.base()) for task in self.tasks
                       for lr in self.lr_candidates()]
        if self.needs_scratch():
            checks += [lr_check_spec(self.scale, task, lr, self.base(), scratch=True) for task in self.tasks
                       for lr in self.scale.scratch_lr_candidates]
        return checks

    def studies(self, lrs: Lrs) -> list[tuple[str, str, Arm, StudySpec]]:
        """(setting, task, arm, spec) of every arm whose lr is known; the from-scratch arm at its own lr."""
        out = []
        for setting in self.settings:
            for task in self.tasks:
                for arm in self.arms().values():
                    lr = lrs.get("scratch" if arm.own_lr else setting, {}).get(task)
                    if lr is not None:
                        out.append((setting, task, arm, arm_spec(arm, self.scale, task, lr, setting, self.base())))
        return out


def _choices(store: Store | None, reproduction: Reproduction, candidates: tuple[float, ...],
             scratch: bool) -> dict[str, LrChoice]:
    trials = store.trials() if store is not None else pd.DataFrame(columns=["trial_key", "status"])
    done = trials[trials["status"].isin(RESULT_STATUSES)].drop_duplicates("trial_key").set_index("trial_key")
    choices = {}
    for task in reproduction.tasks:
        tried = []
        for lr in candidates:
            key = trial_keys(lr_check_spec(reproduction.scale, task, lr, reproduction.base(), scratch))[0]
            row = done.loc[key] if key in done.index else None
            if row is None:
                tried.append((lr, None, None))
                continue
            # A diverged run, or one whose metric is undefined, scores the majority baseline: it did not learn.
            baseline = float(row["baseline_metric"])
            score = float(row["final_metric"]) if row["status"] == TrialStatus.COMPLETE and pd.notna(row["final_metric"]) \
                else baseline
            tried.append((lr, score, baseline))
        learning = [lr for lr, score, baseline in tried if score is not None and score >= baseline + LEARNS_MARGIN]
        finished = all(score is not None for _, score, _ in tried)
        choices[task] = LrChoice(task, learning[0] if finished and learning else None, bool(learning), tuple(tried))
    return choices


def lr_choices(store: Store | None, reproduction: Reproduction) -> dict[str, LrChoice]:
    """Per task, the smallest candidate lr whose fine-tuning lr-check run learns; none when no candidate does."""
    return _choices(store, reproduction, reproduction.lr_candidates(), scratch=False)


def scratch_lr_choices(store: Store | None, reproduction: Reproduction) -> dict[str, LrChoice]:
    """Per task, the smallest candidate lr at which a run from random weights learns within the scratch budget."""
    return _choices(store, reproduction, reproduction.scale.scratch_lr_candidates, scratch=True)


def learning_rates(store: Store | None, reproduction: Reproduction) -> Lrs:
    lrs: Lrs = {}
    if "published" in reproduction.settings:
        lrs["published"] = {task: PUBLISHED_LR for task in reproduction.tasks}
    if "learning" in reproduction.settings:
        lrs["learning"] = {task: choice.lr for task, choice in lr_choices(store, reproduction).items()}
    if reproduction.needs_scratch():
        lrs["scratch"] = {task: choice.lr for task, choice in scratch_lr_choices(store, reproduction).items()}
    return lrs


def finished_keys(store: Store | None) -> set[str]:
    """The trial keys some study of the store has finished (complete or diverged)."""
    if store is None:
        return set()
    trials = store.trials()
    return set(trials.loc[trials["status"].isin(RESULT_STATUSES), "trial_key"])


def missing_trials(store: Store, reproduction: Reproduction) -> int:
    """How many trials of the design (at the lrs known so far) the store has not finished."""
    finished = finished_keys(store)
    planned = {key for spec in reproduction.lr_checks() for key in trial_keys(spec)}
    planned |= {key for *_, spec in reproduction.studies(learning_rates(store, reproduction)) for key in trial_keys(spec)}
    return len(planned - finished)


def untrained_reasons(store: Store | None, reproduction: Reproduction) -> dict[str, dict[str, str]]:
    """Per setting (and "scratch"), the tasks whose arms are not trained, with the reason in words."""
    reasons: dict[str, dict[str, str]] = {}
    if "learning" in reproduction.settings:
        reasons["learning"] = {task: reason for task, choice in lr_choices(store, reproduction).items()
                               if (reason := choice.reason()) is not None}
    if reproduction.needs_scratch():
        reasons["scratch"] = {task: reason for task, choice in scratch_lr_choices(store, reproduction).items()
                              if (reason := choice.reason("the from-scratch model")) is not None}
    return reasons


def task_facts(store: Store, reproduction: Reproduction) -> pd.DataFrame:
    """Per task: its metric, training examples used, dev examples, and the majority baseline its runs recorded."""
    from ..config import TrialConfig

    trials = store.trials()
    rows = []
    for task in reproduction.tasks:
        config = TrialConfig(**{**reproduction.base(), "task": task})
        train, dev = load_raw(config, resolve_task(config))
        # Any trial of the task with both recorded (a store may hold others: running, failed, of older schemas).
        ran = trials[(trials["task"] == task) & pd.to_numeric(trials["baseline_metric"], errors="coerce").notna()
                     & trials["metric"].notna()]
        limit = reproduction.scale.max_train
        rows.append({"task": task, "metric": str(ran["metric"].iloc[0]) if len(ran) else "",
                     "training examples": len(train) if limit is None else min(limit, len(train)),
                     "dev examples": len(dev),
                     "majority baseline": float(ran["baseline_metric"].iloc[0]) if len(ran) else float("nan")})
    return pd.DataFrame(rows)


def plan_steps(spec: StudySpec, skip: set[str] | frozenset[str] = frozenset()) -> int:
    """Training steps of a study if every trial ran fully, leaving out the trials whose keys are in `skip`."""
    steps, seen = 0, {}
    for trial in expand(spec):
        config = trial.config
        if config.trial_key() in skip:
            continue
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
        kind = "from-scratch lr check" if spec.config.get("from_scratch") else "lr check"
        progress.on_stage(f"{kind}: {spec.tasks[0]} at lr {spec.config['lr']:g}")
        StudyRunner(spec, store, options, executor).run(progress.events)
    choices = lr_choices(store, reproduction)
    lrs = learning_rates(store, reproduction)
    for setting, task, arm, spec in reproduction.studies(lrs):
        missing = missing_pairs(spec, store, arm.snapshots)
        if missing is not None:
            progress.on_stage(f"{setting} lr {spec.config['lr']:g}, {task}: {arm.name} ({arm.description})")
            arm_options = options.model_copy(update={"save_checkpoints": 2}) if arm.snapshots else options
            StudyRunner(missing, store, arm_options, executor).run(progress.events)
        if arm.snapshots:
            _measure_arm(store, spec, reproduction.scale, options, progress)
    return choices


def missing_pairs(spec: StudySpec, store: Store, snapshots: bool = False) -> StudySpec | None:
    """A paired arm's spec cut to the pairs whose trial no study of the store has finished (None: all are): the
    devlin arm's first pairs are grid cells, trained in the grid's study. A crossed grid, or an arm trained with
    snapshots (another study's run of the same key has none to measure), is returned whole: its study skips
    what it has finished itself."""
    if not spec.seed_pairs or snapshots:
        return spec
    finished = finished_keys(store)
    pairs = [(trial.config.wi_seed, trial.config.do_seed) for trial in expand(spec)
             if trial.config.trial_key() not in finished]
    if not pairs:
        return None
    return spec.model_copy(update={"wi_seeds": [wi for wi, _ in pairs], "do_seeds": [do for _, do in pairs]})


def _measure_arm(store: Store, spec: StudySpec, scale: Scale, options: RunOptions, progress: Progress) -> None:
    """Measure the arm's runs from their snapshots: the trials of the arm's own study, which trained them with
    snapshots (an lr check's run can have the same trial key, and no snapshots)."""
    trials = store.trials()
    own = {study_id for study_id, name in store.study_names().items() if name == spec.study_name()}
    trials = trials[trials["study_id"].isin(own)]
    for key in trial_keys(spec):
        rows = trials[(trials["trial_key"] == key) & (trials["status"] == TrialStatus.COMPLETE)]
        if rows.empty or recorded(store, key, scale) is not None:
            continue
        progress.on_stage(f"landscape measurements of trial {int(rows['id'].iloc[0])}")
        measure(store, int(rows["id"].iloc[0]), scale, options, progress.on_measure)


def claim_data(store: Store, reproduction: Reproduction) -> dict[str, ClaimData]:
    """Per setting, the finished trials of each arm (found by their trial keys) and the Hao measurements."""
    trials, lrs = store.trials(), learning_rates(store, reproduction)
    curves, reasons = store.curves(), untrained_reasons(store, reproduction)
    data = {}
    for setting in reproduction.settings:
        per_arm: dict[str, list[str]] = {}
        per_task_keys: dict[str, dict[str, list[str]]] = {}
        measures: list[dict] = []
        unmeasured: dict[tuple[str, str], str] = {}
        for _, task, arm, spec in [s for s in reproduction.studies(lrs) if s[0] == setting]:
            keys = trial_keys(spec)
            per_arm.setdefault(arm.name, []).extend(keys)
            per_task_keys.setdefault(arm.name, {})[task] = keys
            if arm.snapshots:
                finished = trials[trials["trial_key"].isin(keys) & (trials["status"] == TrialStatus.COMPLETE)]
                measured = []
                for row in finished.drop_duplicates("trial_key").itertuples():
                    values = recorded(store, row.trial_key, reproduction.scale)
                    if values is not None:
                        measured.append({"arm": arm.name, "task": row.task, "wi_seed": row.wi_seed, **values})
                if len(measured) < len(keys):
                    unmeasured[(arm.name, task)] = f"{arm.name} on {task}: {len(measured)} of {len(keys)} runs measured"
                else:
                    measures += measured
        unfinished: dict[str, dict[str, str]] = {}
        arms_results = {}
        for name, keys in per_arm.items():
            # One run per trial key: a key trained again in another study (devlin's grid cells, before it reused
            # them) gives the same run, bit for bit, and is one unit.
            chosen = trials[trials["trial_key"].isin(keys)].sort_values("id")
            done = chosen["status"].isin(RESULT_STATUSES)
            chosen = pd.concat([chosen[done].drop_duplicates("trial_key"),
                                chosen[~done & ~chosen["trial_key"].isin(chosen.loc[done, "trial_key"])]])
            # An arm is read on a task only once every run the design names there has finished: a verdict from
            # the first runs of a study still training would be read as the result.
            finished = chosen[chosen["status"].isin(RESULT_STATUSES)]
            for task, planned in per_task_keys[name].items():
                done = int(finished["trial_key"].isin(planned).sum())
                if done < len(planned) or (name, task) in unmeasured:
                    unfinished.setdefault(name, {})[task] = (
                        f"{name} on {task}: {done} of {len(planned)} runs finished" if done < len(planned)
                        else unmeasured[name, task])
                    chosen = chosen[~chosen["trial_key"].isin(planned)]
            if chosen["status"].isin(RESULT_STATUSES).any():
                arms_results[name] = build_results(chosen, curves[curves["trial_id"].isin(chosen["id"])])
        untrained = {arm: {**reasons.get("scratch" if spec_arm.own_lr else setting, {}), **unfinished.get(arm, {})}
                     for arm, spec_arm in reproduction.arms().items()}
        data[setting] = ClaimData(setting, reproduction.tasks, arms_results, pd.DataFrame(measures), untrained)
    return data
