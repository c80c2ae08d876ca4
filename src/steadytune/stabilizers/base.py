"""The interface every stabilizer implements: when a config turns it on, and what it changes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import TrialConfig


class Stabilizer:
    """One method, built per trial from its config. Each hook leaves fine-tuning unchanged unless overridden.

    The trial calls the hooks of its active stabilizers in registry order (see __init__.py):
    - `change_model` once, after the head is drawn and before the model moves to its device;
    - `change_groups` once, on the optimizer's parameter groups, when the optimizer is built;
    - `change_loss` at every training step, on the task's loss (the one recorded as the training loss);
    - `after_step` after every optimizer step, before the learning-rate schedule advances;
    - `begin` once before training, `evaluated_models` at every evaluation, `state`/`load_state` when a trial
      pauses and continues (early stopping across trials).
    """

    # True when change_model changes the model's parameters' names or shapes (an adapter), so that a skeleton
    # that takes a trial's snapshots (landscapes) needs the same change.
    structural = False

    def __init__(self, config: TrialConfig):
        self.config = config

    @classmethod
    def applies(cls, config: TrialConfig) -> bool:
        """Whether `config` turns this method on."""
        raise NotImplementedError

    def change_model(self, model: nn.Module, generator: torch.Generator) -> None:
        """Change the model's modules or weights; any random draw comes from `generator` (the wi_seed stream)."""

    def change_groups(self, model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The optimizer's parameter groups, each with params, lr, weight_decay and name."""
        return groups

    def change_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], loss: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor:
        """The loss a training step minimizes, given the task's loss and the model's output on the batch."""
        return loss

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Act on the parameters after the optimizer has stepped."""

    def begin(self, model: nn.Module, total_steps: int) -> None:
        """Once the model is on its device and the trial knows its length, before the first step."""

    def evaluated_models(self) -> dict[str, nn.Module]:
        """Models to evaluate beside the trained one, by the suffix of their metrics (e.g. an average: 'ema')."""
        return {}

    def state(self) -> dict[str, Any]:
        """What a paused trial must keep of this method to continue bit-identically (tensors and plain values)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what `state` returned; raise ValueError for a state that does not fit."""
