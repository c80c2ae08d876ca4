"""What a study runs: its spec (tasks x recipes x WI seeds x DO seeds, and a policy), and the trials it expands to.

A study is identified by its spec: its name is a hash of the spec unless one is given, so running the same spec
again resumes it. Nothing here imports torch: a spec is checked and planned before any model loads.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..analysis.early_stopping import EarlyStop
from ..config import TrialConfig, build_config, check_keys, format_validation_error, load_config_file
from ..data.tasks import canonical_task_name
from ..errors import ConfigError
from ..recipes import recipe_overrides

STUDY_KEYS = ("name", "tasks", "recipes", "wi_seeds", "do_seeds", "adapter_seeds", "seed_pairs", "early_stop", "policy",
              "forecaster", "forecast_threshold")
POLICY_KEYS = ("policy", "forecaster", "forecast_threshold")
ONLINE = "online"  # --forecaster online: the study fits its own forecaster as its runs complete


def parse_seeds(value: Any) -> list[int]:
    """'1-25', '1,3,5', '1-3,7', 4, or a list of ints; ranges run upwards and no seed is listed twice."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a seed")
    if isinstance(value, int):
        return [value]
    seeds: list[int] = []
    parts = value if isinstance(value, list) else str(value).replace(" ", "").split(",")
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            seeds.append(part)
            continue
        low, dash, high = str(part).partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{str(part)!r} is not a seed or a range of seeds (write e.g. '1-25', '1,3,5' or '1-3,7')")
        if dash and int(high) < int(low):
            raise ValueError(f"range {part!r} runs backwards; write {high}-{low}")
        seeds += list(range(int(low), int(high) + 1)) if dash else [int(low)]
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"seed(s) {', '.join(map(str, repeated))} listed more than once")
    if not seeds:
        raise ValueError("no seeds given")
    return seeds


class StudySpec(BaseModel):
    """What a study runs. `config` holds TrialConfig values shared by all trials (model, data, epochs, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(None, description="Study name; default: derived from the spec's content.")
    tasks: list[str] = Field(["rte"], description="Tasks to run.")
    recipes: list[str | None] = Field([None], description="Recipes to compare (none = the defaults).")
    wi_seeds: list[int] = Field([1], description="Weight-initialization seeds.")
    do_seeds: list[int] = Field([1], description="Data-order seeds.")
    adapter_seeds: list[int] | None = Field(None, description="Adapter seeds (with --adapter lora), a third grid "
                                            "factor; default: each trial's WI seed.")
    seed_pairs: bool = Field(False, description="Pair the WI and DO seeds in order, (wi[0], do[0]), (wi[1], do[1]), "
                             "...: independent seed pairs instead of the crossed grid.")
    early_stop: str | None = Field(None, description="start=T,fraction=F,keep=P (Dodge et al.), per task x recipe.")
    policy: Literal["full", "dodge", "replace", "dodge+replace"] = Field(
        "full", description="full: every trial to the end. dodge: Dodge et al.'s cut (--early-stop). replace: each "
        "trial to the forecaster's fraction; one it flags is stored as forecast-stopped and the next unused WI seed "
        "takes its place. dodge+replace: Dodge's cut, where a trial the forecaster flags is forecast-stopped and "
        "never continued. A spec with --early-stop and no policy is dodge.")
    forecaster: str | None = Field(None, description="For --policy replace or dodge+replace: 'online' (replace's "
                                   "default): the study fits its own on its complete runs and acts once it passes a "
                                   "self-check; a file from `steadytune forecast fit`; or 'default', the one that "
                                   "ships with steadytune.")
    forecast_threshold: float = Field(0.5, gt=0, le=1, description="Flag a trial when P(failed) is at least this.")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig values for every trial.")

    @field_validator("wi_seeds", "do_seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> list[int]:
        return parse_seeds(value)

    @field_validator("adapter_seeds", mode="before")
    @classmethod
    def _adapter_seeds(cls, value: Any) -> list[int] | None:
        return None if value is None else parse_seeds(value)

    @field_validator("tasks", "recipes", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    @field_validator("tasks")
    @classmethod
    def _canonical_tasks(cls, tasks: list[str]) -> list[str]:
        names = [canonical_task_name(task) for task in tasks]
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise ValueError(f"task(s) {', '.join(repeated)} listed more than once (names are matched ignoring case, "
                             f"'-' and '_')")
        return names

    @field_validator("recipes")
    @classmethod
    def _distinct_recipes(cls, recipes: list[str | None]) -> list[str | None]:
        repeated = sorted(str(r) for r, count in Counter(recipes).items() if count > 1)
        if repeated:
            raise ValueError(f"recipe(s) {', '.join(repeated)} listed more than once")
        return recipes

    def early_stopping(self) -> EarlyStop | None:
        return EarlyStop.parse(self.early_stop) if self.early_stop else None

    @model_validator(mode="before")
    @classmethod
    def _early_stop_means_dodge(cls, values: Any) -> Any:
        """Specs written before policies said Dodge's rule with early_stop alone."""
        if isinstance(values, dict) and values.get("early_stop") and values.get("policy") is None:
            values = {**values, "policy": "dodge"}
        return values

    @model_validator(mode="after")
    def _pairs_match(self) -> StudySpec:
        if self.seed_pairs and len(self.wi_seeds) != len(self.do_seeds):
            raise ValueError(f"seed_pairs needs as many WI seeds as DO seeds ({len(self.wi_seeds)} vs "
                             f"{len(self.do_seeds)})")
        return self

    def seed_cells(self) -> list[tuple[int, int]]:
        """(WI, DO) of each trial per task and recipe: the pairs, or the crossed grid."""
        if self.seed_pairs:
            return list(zip(self.wi_seeds, self.do_seeds))
        return [(wi, do) for wi in self.wi_seeds for do in self.do_seeds]

    @model_validator(mode="before")
    @classmethod
    def _online_by_default(cls, values: Any) -> Any:
        """A forecasting policy without a forecaster file fits its own as the study runs (forecast/online.py)."""
        if isinstance(values, dict) and values.get("policy") == "replace" and not values.get("forecaster"):
            values = {**values, "forecaster": ONLINE}
        return values

    @model_validator(mode="after")
    def _policy_needs(self) -> StudySpec:
        if self.policy in ("dodge", "dodge+replace") and not self.early_stop:
            raise ValueError(f"--policy {self.policy} needs --early-stop start=T,fraction=F,keep=P")
        if self.policy == "full" and self.early_stop:
            raise ValueError("--early-stop is Dodge's cut: use --policy dodge (or leave --policy out)")
        if self.policy == "replace" and self.early_stop:
            raise ValueError("--policy replace trains every unflagged trial to the end; for Dodge's cut with the "
                             "forecaster, use --policy dodge+replace")
        if self.policy == "dodge+replace" and self.forecaster == ONLINE:
            raise ValueError("--forecaster online applies to --policy replace (dodge+replace takes a forecaster file)")
        if self.policy in ("replace", "dodge+replace") and not self.forecaster:
            raise ValueError(f"--policy {self.policy} needs --forecaster FILE (from `steadytune forecast fit`)")
        if self.policy in ("full", "dodge") and (self.forecaster or self.forecast_threshold != 0.5):
            raise ValueError("--forecaster and --forecast-threshold apply to --policy replace or dodge+replace")
        return self

    def forecasts(self) -> bool:
        return self.policy in ("replace", "dodge+replace")

    def study_name(self) -> str:
        if self.name:
            return self.name
        values = self.model_dump(mode="json")
        if values["adapter_seeds"] is None:  # specs written before adapters keep their names
            del values["adapter_seeds"]
        if not values["seed_pairs"]:  # and so do crossed specs written before seed pairs
            del values["seed_pairs"]
        if values["policy"] in ("full", "dodge"):  # and so do specs written before policies
            for key in POLICY_KEYS:
                del values[key]
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        return f"study-{digest[:10]}"


GRID_FIELDS = {"task": "tasks", "recipe": "recipes", "wi_seed": "wi_seeds", "do_seed": "do_seeds",
               "adapter_seed": "adapter_seeds"}


def load_spec(path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """A spec from a YAML/TOML file (study keys at the top, anything else is trial config) plus CLI values."""
    raw = load_config_file(path) if path else {}
    if path:
        check_keys(raw, (*STUDY_KEYS, "config", *TrialConfig.model_fields), str(path))
        check_keys(raw.get("config") or {}, TrialConfig.model_fields, f"{path} (config)")
    config = {k: v for k, v in raw.items() if k not in STUDY_KEYS and k != "config"}
    config.update(raw.get("config") or {})
    config.update({k: v for k, v in overrides.items() if k not in STUDY_KEYS and v is not None})
    study = {k: raw[k] for k in STUDY_KEYS if k in raw}
    study.update({k: v for k, v in overrides.items() if k in STUDY_KEYS and v is not None})
    where = f"study spec {path}" if path else "study"
    for field, grid in GRID_FIELDS.items():
        if field in config:
            raise ConfigError(f"{where}: {field} is set by the grid; use {grid} (--{grid.replace('_', '-')})")
    try:
        spec = StudySpec(**study, config=config)
        spec.early_stopping()
    except ValidationError as err:
        # Name the flag if the bad value came from the command line, else the key as the file has it.
        from_flags = {k for k, v in overrides.items() if v is not None}
        raise ConfigError(f"{where}: {format_validation_error(err, flags=from_flags if path else None)}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return spec


@dataclass(frozen=True)
class PlannedTrial:
    group: tuple[str, str | None]  # (task, recipe): the unit early stopping ranks within
    config: TrialConfig


def planned_trial(spec: StudySpec, task: str, recipe: str | None, wi_seed: int, do_seed: int,
                  adapter_seed: int | None) -> PlannedTrial:
    """One cell of the grid; precedence: recipe < spec config < grid values (task, seeds)."""
    seeds = {"task": task, "wi_seed": wi_seed, "do_seed": do_seed}
    if adapter_seed is not None:
        seeds["adapter_seed"] = adapter_seed
    return PlannedTrial((task, recipe), build_config(recipe_overrides(recipe) if recipe else {}, spec.config, seeds))


def expand(spec: StudySpec) -> list[PlannedTrial]:
    """Every trial of the grid."""
    trials = [planned_trial(spec, task, recipe, wi_seed, do_seed, adapter_seed) for task in spec.tasks
              for recipe in spec.recipes for wi_seed, do_seed in spec.seed_cells()
              for adapter_seed in spec.adapter_seeds or [None]]
    stop = spec.early_stopping()
    if stop is not None:
        group_size = len(spec.seed_cells()) * len(spec.adapter_seeds or [None])
        if stop.start > group_size:
            raise ConfigError(f"--early-stop start={stop.start} but each task x recipe has only {group_size} "
                              f"seed pairs; add seeds or lower start")
        by_group: dict = {}
        for trial in trials:
            by_group.setdefault(trial.group, []).append(trial)
        trials = [t for group in by_group.values() for t in group[:stop.start]]
    return trials


def check_inputs(trials: list[PlannedTrial]) -> None:
    """Raise DataError or ModelError for data or a model the study's trials cannot load, before anything runs or
    is stored: a missing GLUE folder should be one error, not a failed trial per grid cell."""
    from ..models.loading import resolve_model
    from ..training.inputs import load_raw, resolve_task

    checked_models, checked_data = set(), set()
    for trial in trials:
        config = trial.config
        if config.model not in checked_models:
            resolve_model(config.model)
            checked_models.add(config.model)
        data_key = config.model_dump_json(include={"task", "glue_dir", "train_file", "dev_file", "text_column",
                                                   "text_pair_column", "label_column", "label_names", "metric"})
        if data_key not in checked_data:
            load_raw(config, resolve_task(config))
            checked_data.add(data_key)
