"""Pre-trained weight decay (Zhang et al. 2021, after Wiese et al. 2017 and Lee et al. 2020).

Ordinary decoupled weight decay shrinks weights toward 0; this decays them toward their values
``theta0`` at the start of fine-tuning: after every optimizer step,
``p <- p - lr * strength * (p - p0)``, with the step's learning rate of ``p``'s param group.

It *replaces* ordinary weight decay, as in Zhang et al.'s code: the trainer sets
``weight_decay = 0`` in every param group when this is on, otherwise the two pulls would fight
(one toward 0, one toward ``theta0``). It applies to every parameter the optimizer updates,
biases and LayerNorm weights included: the reason they are spared ordinary decay (0 is a bad
value for a LayerNorm gain) does not hold for a pull toward their pretrained values.
``theta0`` of the new head is its initialization, so take the snapshot after re-init.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


class PretrainedWeightDecay:
    """Decays each trainable parameter toward its value at construction time."""

    def __init__(self, model: nn.Module, strength: float) -> None:
        if strength < 0:
            raise ValueError(f"pre-trained weight decay strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self._theta0: dict[torch.Tensor, torch.Tensor] = {
            p: p.detach().clone() for p in model.parameters() if p.requires_grad
        }

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Pull every parameter of ``optimizer`` toward ``theta0``; call right after ``optimizer.step()``.

        Uses each group's current ``lr``, so call it before the LR scheduler advances: the decay
        then follows warmup, the schedule and layer-wise LR decay exactly like the gradient step.
        """
        for group in optimizer.param_groups:
            rate = group["lr"] * self.strength
            if rate == 0.0:
                continue
            for p in group["params"]:
                p0 = self._theta0.get(p)
                if p0 is None:
                    raise ValueError("optimizer holds a parameter that was not trainable when theta0 was taken")
                p.sub_(p - p0, alpha=rate)


class PretrainedWD(Stabilizer):
    """--pretrained-wd s: ordinary weight decay off in every group; each step pulls toward theta0 instead."""

    decay: PretrainedWeightDecay | None = None

    @classmethod
    def applies(cls, config: TrialConfig) -> bool:
        return config.pretrained_wd > 0

    def change_groups(self, model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # theta0 is the model as the optimizer first sees it: pretrained weights, the new head, re-init, Mixout.
        self.decay = PretrainedWeightDecay(model, self.config.pretrained_wd)
        return [{**group, "weight_decay": 0.0} for group in groups]

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.decay.apply(optimizer)
