"""Where a landscape's parameters and data come from: a stored trial's snapshots and its own data."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunOptions, TrialConfig
from ..models.loading import load_classifier, load_tokenizer
from ..stabilizers import active_stabilizers
from ..storage.store import Store
from ..training.checkpoints import CheckpointError, check_recorded, checkpoint_hash, list_checkpoints, load_checkpoint
from ..training.inputs import prepare_inputs
from ..training.records import TrialStatus
from ..training.trial import configure_torch, pick_device
from .directions import Params
from .evaluation import LandscapeEvaluator, fixed_subset


@dataclass(frozen=True)
class EvaluationSettings:
    """How a landscape is evaluated; the subsets are part of what it shows, the rest only of how fast."""

    train_examples: int | None = 256
    dev_examples: int | None = 256
    subset_seed: int = 0
    batch_size: int = 32
    points_per_pass: int = 1
    options: RunOptions = field(default_factory=RunOptions)

    def spec(self) -> dict:
        return {"train_examples": self.train_examples, "dev_examples": self.dev_examples,
                "subset_seed": self.subset_seed}


@dataclass(frozen=True)
class TrialSnapshots:
    trial_id: int
    config: TrialConfig
    key: str
    steps: dict[int, Path]

    @classmethod
    def load(cls, store: Store, trial_id: int) -> TrialSnapshots:
        row = store.trial_row(trial_id)
        config, key, status = json.loads(row["config_json"]), row["trial_key"], row["status"]
        if status != TrialStatus.COMPLETE:
            raise CheckpointError(f"trial {trial_id} is {status}: a landscape needs the end of a complete run")
        folder = store.layout.snapshots(key)
        steps = list_checkpoints(folder)
        if 0 not in steps or len(steps) < 2:
            raise CheckpointError(f"trial {trial_id} has no snapshots of its start and end (looked in {folder}); "
                                  f"train it with --save-checkpoints K (K >= 2)")
        end = row["steps_done"]
        if end is not None and max(steps) != end:
            raise CheckpointError(f"trial {trial_id} ended at step {end} but its newest snapshot is of step "
                                  f"{max(steps)} (in {folder}): the final snapshot is missing; train it again with "
                                  f"--save-checkpoints")
        legacy = row["started_at"] < store.files_recorded_since()
        for path in steps.values():
            check_recorded(path, store.recorded_hash(path), legacy)
        return cls(trial_id, TrialConfig(**config), key, steps)

    def identity(self, *steps: int) -> list[str]:
        """Content hashes of the snapshots at `steps` (default: start and end): what a landscape is keyed by."""
        return [checkpoint_hash(self.steps[step]) for step in (steps or (0, self.last_step))]

    @property
    def last_step(self) -> int:
        return max(self.steps)

    def params(self, step: int) -> Params:
        return load_checkpoint(self.steps[step])

    def start(self) -> Params:
        return self.params(0)

    def end(self) -> Params:
        return self.params(self.last_step)

    def label(self) -> str:
        kind = "from scratch" if self.config.from_scratch else "pretrained"
        return f"trial {self.trial_id}: {self.config.task}, {kind}"


def build_evaluator(config: TrialConfig, settings: EvaluationSettings) -> LandscapeEvaluator:
    """The trial's training subset and dev set (fixed subsets of them), and an architecture skeleton."""
    configure_torch(settings.options)
    tokenizer = load_tokenizer(config.model)
    inputs = prepare_inputs(config, tokenizer, settings.options.cache_dir)
    # Every parameter is replaced per point, so the skeleton's own weights never matter: no need to load them.
    skeleton = load_classifier(config.model, inputs.task, torch.Generator().manual_seed(0), from_scratch=True,
                               head=config.head, bio_constraints=config.bio_constraints)
    for method in active_stabilizers(config):
        if method.structural:  # adapters add parameters: the skeleton needs them to take the snapshots
            method.change_model(skeleton, torch.Generator().manual_seed(0))
    splits = {"train": fixed_subset(inputs.train, settings.train_examples, settings.subset_seed),
              "dev": fixed_subset(inputs.dev, settings.dev_examples, settings.subset_seed)}
    return LandscapeEvaluator(skeleton, inputs.task, splits, tokenizer.pad_token_id or 0, settings.batch_size,
                              pick_device(settings.options.device), settings.points_per_pass)
