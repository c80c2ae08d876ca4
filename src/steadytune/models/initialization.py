"""BERT's initialization rule, drawn from a caller's generator: for new heads and re-initialized layers.

Linear and Embedding weights ~ N(0, initializer_range), biases 0, LayerNorm weight 1 and bias 0
(Embedding ``padding_idx`` rows 0, as Hugging Face does). Every random number is drawn from the
caller's ``torch.Generator`` -- never from the global RNG -- so a trial's weight-init seed alone decides
the new weights and the dropout/data-order RNG streams are untouched. Numbers are drawn on the
generator's device and then copied, so the same seed gives the same weights on CPU and GPU.
"""
from __future__ import annotations

import torch
from torch import nn


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
