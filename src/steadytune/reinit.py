"""Re-initialization of the top transformer layers and the pooler (Zhang et al. 2021).

The init rule is BERT's own: Linear and Embedding weights ~ N(0, initializer_range), biases 0,
LayerNorm weight 1 and bias 0 (Embedding ``padding_idx`` rows 0, as Hugging Face does). Every
random number is drawn from the caller's ``torch.Generator`` -- never from the global RNG -- so
a trial's weight-init seed alone decides the new weights and the dropout/data-order RNG
streams are untouched. Numbers are drawn on the generator's device and then copied, so the
same seed gives the same weights on CPU and GPU.
"""
from __future__ import annotations

import torch
from torch import nn

from steadytune.architecture import UnsupportedArchitecture, encoder_layout


def _draw_normal(param: torch.Tensor, std: float, generator: torch.Generator) -> None:
    sample = torch.empty(param.shape, dtype=torch.float32, device=generator.device)
    sample.normal_(mean=0.0, std=std, generator=generator)
    param.copy_(sample)


@torch.no_grad()
def init_new_module(module: nn.Module, initializer_range: float, generator: torch.Generator) -> None:
    """Initialize every parameter of ``module``'s tree with BERT's rule, drawing from ``generator``.

    Raises ``ValueError`` if the tree holds a parameter the rule does not cover (it would
    otherwise keep its old value silently).
    """
    covered: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            _draw_normal(sub.weight, initializer_range, generator)
            covered.add(id(sub.weight))
            if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
                covered.add(id(sub.bias))
        elif isinstance(sub, nn.LayerNorm):
            if sub.weight is not None:
                sub.weight.fill_(1.0)
                covered.add(id(sub.weight))
            if sub.bias is not None:
                sub.bias.zero_()
                covered.add(id(sub.bias))
    missed = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missed:
        raise ValueError(f"no init rule for parameters {missed} of {type(module).__name__}")


def reinit_top_layers(
    model: nn.Module, num_layers: int, reinit_pooler: bool, generator: torch.Generator
) -> list[str]:
    """Re-initialize the top ``num_layers`` transformer layers and optionally the pooler.

    Draw order: pooler first, then layers from the top down, so that the new top layer gets
    the same weights for every ``num_layers`` under one seed. Returns the full names (as in
    ``model.named_parameters()``) of the re-initialized parameters.

    Raises :class:`~steadytune.architecture.UnsupportedArchitecture` (a ``ValueError``) for models
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
