"""Weight averaging, evaluated alongside the raw model: EMA, or SWA (Izmailov et al. 2018).

- ema: after every optimizer step, avg <- decay * avg + (1 - decay) * w (the first step copies w);
- swa: the uniform average of the weights after every step from `swa_start` x the total steps on.

Both are torch.optim.swa_utils.AveragedModel. Training is unchanged: the average is a second model the
trial evaluates at every evaluation point, recorded beside the raw model's metrics as `<metric>.ema` or
`<metric>.swa` (the raw model's metric stays the trial's score). The average and its count are part of a
paused trial's state, so a continued trial averages exactly as an uninterrupted one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


class WeightAverage(Stabilizer):
    def __init__(self, config: TrialConfig):
        super().__init__(config)
        self.kind = config.average
        self.average: AveragedModel | None = None
        self.steps, self.first_step = 0, 1

    @classmethod
    def applies(cls, config) -> bool:
        return config.average != "none"

    def begin(self, model: nn.Module, total_steps: int) -> None:
        self.model = model
        self.first_step = max(1, int(self.config.swa_start * total_steps) + 1) if self.kind == "swa" else 1
        multi_avg_fn = get_ema_multi_avg_fn(self.config.ema_decay) if self.kind == "ema" else None
        self.average = AveragedModel(model, multi_avg_fn=multi_avg_fn)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps += 1
        if self.steps >= self.first_step:
            self.average.update_parameters(self.model)

    def evaluated_models(self) -> dict[str, nn.Module]:
        """The average, once it holds at least one step's weights."""
        return {self.kind: self.average.module} if int(self.average.n_averaged) > 0 else {}

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": self.average.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        expected = self.average.state_dict()
        saved = state["average"]
        if set(saved) != set(expected) or any(saved[k].shape != v.shape for k, v in expected.items()):
            raise ValueError("the saved weight average does not fit this model")
        self.average.load_state_dict(saved)
        self.steps = int(state["steps"])
