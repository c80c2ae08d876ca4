"""An int8 twin of a model for evaluation on CPU (--eval-precision int8), refreshed before each use.

Why: speed. On CPU evaluation time goes to the Linear layers' matrix products, and int8 ones run
faster than fp32. What it changes: numerics. Every nn.Linear of the twin is a PyTorch dynamically
quantized one (weights rounded to int8 per tensor, activations per batch), so metrics are close to,
but not bit-identical with, fp32 evaluation; hence `eval_precision` is part of the trial key.

The twin is built once per trial. Every other parameter and buffer (embeddings, LayerNorm, Mixout
layers) is the model's own tensor, shared rather than copied, so it is always current; `refresh`
re-quantizes only the Linear weights, which costs a fraction of quantizing a fresh copy each time.
"""
from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as quantized_dynamic

# The dynamic quantization default: weights symmetric per tensor in int8.
WEIGHT_OBSERVER = torch.ao.quantization.default_dynamic_qconfig.weight


@contextmanager
def quantized_engine() -> Iterator[None]:
    """Borrow the fastest quantized engine; the one in force while packing weights picks the kernels that run.

    oneDNN's kernels were 6-16% faster than the default (x86/fbgemm) ones on the 2-core AVX2 machine.
    """
    engine = torch.backends.quantized.engine
    if "onednn" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "onednn"
    try:
        with warnings.catch_warnings():
            # torch 2.13 still ships eager dynamic quantization but marks it deprecated. Its replacement, the
            # separate torchao package, ran over 20x slower than fp32 on this CPU in eager mode (it needs
            # torch.compile), and the multi-line warnings would cut into the CLI's progress display.
            warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
            yield
    finally:
        torch.backends.quantized.engine = engine


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` in int8 exactly as `quantize_dynamic` rounds it."""
    observer = WEIGHT_OBSERVER()
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    return torch.quantize_per_tensor(weight.detach().float(), float(scale), int(zero_point), torch.qint8)


class Int8Twin:
    """The int8 twin of `model` (CPU only); `refresh()` returns it quantized from the model's current weights."""

    def __init__(self, model: nn.Module):
        shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
        with quantized_engine():
            # deepcopy with every tensor pre-entered in the memo copies the modules but not the tensors.
            self.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model, shared), {nn.Linear},
                                                                dtype=torch.qint8, inplace=True).eval()
        twin_modules = dict(self.model.named_modules())
        self.pairs = [(linear, twin_modules[name]) for name, linear in model.named_modules()
                      if isinstance(twin_modules.get(name), quantized_dynamic.Linear)]

    @torch.no_grad()
    def refresh(self) -> nn.Module:
        with quantized_engine():
            for linear, quantized in self.pairs:
                quantized.set_weight_bias(quantize_weight(linear.weight), linear.bias)
        return self.model
