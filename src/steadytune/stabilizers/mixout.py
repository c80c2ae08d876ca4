"""Mixout (Lee, Cho & Kang 2020): stochastically mix weights with their pretrained values.

For a weight ``w`` with target (pretrained) value ``u`` and a mask ``M`` whose elements are 1
with probability ``1 - p`` (keep the current weight) and 0 with probability ``p`` (use the
target), Lee et al.'s mixed weight is::

    W_mix = ( M * w + (1 - M) * u - p * u ) / (1 - p)  =  u + M * (w - u) / (1 - p)

so ``E[W_mix] = w`` and the gradient to ``w`` is ``M / (1 - p)`` times the gradient to
``W_mix``: dropout applied to the fine-tuning displacement ``w - u`` instead of to
activations. As in the reference implementation only the weight is mixed, not the bias, and
mixout replaces dropout: :func:`apply_mixout` sets every ``nn.Dropout`` to 0.

Edge values: ``p = 0`` uses ``w`` itself (bit for bit a plain Linear); ``p = 1`` -- where the
rescaling is undefined -- is taken as its limit of always choosing the target: ``W_mix = u``
exactly (the layer stays at its pretrained weights and ``w`` receives no gradient).
Masks come from the global torch RNG (the trainer seeds it with the trial's dropout seed), one
fresh mask per forward pass; in eval mode the layer uses ``w`` deterministically.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mixout probability must be in [0, 1], got {p}")
    return float(p)


class MixLinear(nn.Module):
    """A Linear whose weight is mixed with ``target`` in training (see the module docstring).

    Takes over ``linear``'s ``weight`` and ``bias`` Parameter objects, so parameter names, the
    state dict and any existing references (e.g. a pre-trained-weight-decay snapshot) stay
    valid. The target is a non-persistent buffer: checkpoints load into a plain model.
    """

    def __init__(self, linear: nn.Linear, p: float, target: torch.Tensor | None = None) -> None:
        super().__init__()
        self.p = _check_p(p)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        source = linear.weight if target is None else target
        if source.shape != self.weight.shape:
            raise ValueError(f"target shape {tuple(source.shape)} != weight shape {tuple(self.weight.shape)}")
        self.register_buffer("target", source.detach().clone().to(self.weight), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        """The weight used by this forward pass (draws a fresh mask in training mode)."""
        if not self.training or self.p == 0.0:
            return self.weight
        if self.p == 1.0:
            return self.target
        return self.target + F.dropout(self.weight - self.target, p=self.p, training=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, p={self.p}"


def apply_mixout(model: nn.Module, p: float) -> int:
    """Replace every ``nn.Linear`` of ``model`` (encoder, pooler and head) by a :class:`MixLinear`.

    Each target is the Linear's *current* weight, so call this after loading the pretrained
    weights and after any re-initialization: re-initialized layers and the new head then mix
    toward their fresh initialization, as in Lee et al. Every ``nn.Dropout`` gets ``p = 0``
    (Hugging Face attention reads its dropout rate from these modules, so attention dropout is
    off too). Returns the number of replaced Linears.
    """
    p = _check_p(p)
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, child_name, MixLinear(child, p))
                replaced += 1
            elif isinstance(child, nn.Dropout):
                child.p = 0.0
    return replaced


class Mixout(Stabilizer):
    """--mixout p: every Linear mixes toward its weight at this point (after head init and re-init), dropout off."""

    @classmethod
    def applies(cls, config: TrialConfig) -> bool:
        return config.mixout > 0

    def change_model(self, model: nn.Module, generator: torch.Generator) -> None:
        apply_mixout(model, self.config.mixout)
