"""Re-initialization of the top transformer layers and the pooler (Zhang et al. 2021).

The init rule is BERT's own (see models/initialization.py), drawn from the trial's wi_seed generator, so the
weight-init seed alone decides the new weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.architecture import UnsupportedArchitecture, encoder_layout
from ..models.initialization import init_new_module
from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


def reinit_top_layers(
    model: nn.Module, num_layers: int, reinit_pooler: bool, generator: torch.Generator
) -> list[str]:
    """Re-initialize the top ``num_layers`` transformer layers and optionally the pooler.

    Draw order: pooler first, then layers from the top down, so that the new top layer gets
    the same weights for every ``num_layers`` under one seed. Returns the full names (as in
    ``model.named_parameters()``) of the re-initialized parameters.

    Raises :class:`~steadytune.models.architecture.UnsupportedArchitecture` (a ``ValueError``) for models
    of other families, when ``num_layers`` is outside ``0..num_layers_of_model``, when
    ``num_layers > 0`` on ALBERT (one set of weights is shared by every layer, so "the top
    layers" do not exist separately), and when ``reinit_pooler`` is asked of an architecture
    without a pooler (RoBERTa, ELECTRA, MPNet: their classification head is already new).
    """
    layout = encoder_layout(model)
    model_name = type(model).__name__
    if layout.shared_layers and num_layers != 0:
        raise UnsupportedArchitecture(
            f"--reinit-layers {num_layers}: {model_name} shares one set of weights between all its layers, so its "
            "top layers cannot be re-initialized alone; use --reinit-layers 0 (--reinit-pooler is supported)"
        )
    if not 0 <= num_layers <= len(layout.layers):
        raise UnsupportedArchitecture(f"--reinit-layers {num_layers}: {model_name} has {len(layout.layers)} transformer "
                                      f"layers")
    if reinit_pooler and layout.pooler is None:
        raise UnsupportedArchitecture(
            f"--reinit-pooler: {model_name} has no pooler; its classification head (with its own dense layer) "
            "is already newly initialized, so leave --reinit-pooler off"
        )
    std = model.config.initializer_range
    targets: list[tuple[str, nn.Module]] = []
    if reinit_pooler:
        targets.append((layout.pooler_prefix, layout.pooler))
    for k in range(1, num_layers + 1):
        targets.append((layout.layer_prefixes[-k], layout.layers[-k]))
    names: list[str] = []
    for prefix, module in targets:
        init_new_module(module, std, generator)
        names.extend(prefix + name for name, _ in module.named_parameters())
    return names


class ReInit(Stabilizer):
    """--reinit-layers L, --reinit-pooler: fresh top layers and pooler, drawn from the wi_seed stream."""

    @classmethod
    def applies(cls, config: TrialConfig) -> bool:
        return config.reinit_layers > 0 or config.reinit_pooler

    def change_model(self, model: nn.Module, generator: torch.Generator) -> None:
        reinit_top_layers(model, self.config.reinit_layers, self.config.reinit_pooler, generator)
