"""NoisyTune (Wu et al. 2022): perturb the pretrained weights before fine-tuning.

Each parameter tensor W gets W + (U - 0.5) * lambda * std(W), U uniform on [0, 1): noise in proportion to
the tensor's own spread, so that matrices of very different scales are perturbed alike. As in the
authors' code, every parameter is perturbed (a tensor of equal values, such as a LayerNorm's initial
weight, has std 0 and is left as it is); the draws come from the trial's wi_seed generator, in parameter
order, after the head and any re-initialized layer are drawn.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Stabilizer


def perturb(model: nn.Module, strength: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        for _, param in model.named_parameters():
            spread = param.std() if param.numel() > 1 else param.new_zeros(())
            noise = torch.rand(param.shape, generator=generator, dtype=param.dtype) - 0.5
            param.add_(noise * strength * spread)


class NoisyTune(Stabilizer):
    @classmethod
    def applies(cls, config) -> bool:
        return config.noisytune > 0

    def change_model(self, model: nn.Module, generator: torch.Generator) -> None:
        perturb(model, self.config.noisytune, generator)
