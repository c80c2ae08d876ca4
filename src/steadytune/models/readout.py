"""First-token readout: in evaluation, run the top layer only for the token the head reads.

The sequence-classification heads of BERT, RoBERTa and ELECTRA read one position of the top layer:
the first token ([CLS] or <s>). Its output needs the top layer's keys and values of every token, but
its query, attention output projection and feed-forward block only for itself. Computing those for
every token, as Hugging Face's forward does, wastes 10/12 of one layer's matrix products: 14% of a
6-layer encoder's evaluation. The readout computes the same function; only floating-point rounding
can differ, because matrix products of other shapes may sum in another order (on four fine-tuned
MiniLM-L6 models, RTE and MRPC dev, the logits moved by at most 2.4e-7 and no prediction changed).

Evaluation only: in training the other tokens' outputs carry no gradient either, but dropout would
draw fewer random numbers, which would change every later mask of a seeded run.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import UnsupportedArchitecture, encoder_layout

# Architectures whose layer is Hugging Face's BERT layer (same submodule names) and whose head reads token 0.
# MPNet adds a relative position bias inside attention and ALBERT shares one layer across depths: they
# keep the full forward.
READOUT_MODEL_TYPES = ("bert", "roberta", "electra")
# Attention implementations that hand the layer a 4-D (batch, 1, queries, keys) mask; flash-attention
# kernels take other mask forms, so those models keep the full forward.
READOUT_ATTENTION = ("sdpa", "eager")


def _first_token_layer_forward(self: nn.Module, hidden_states: torch.Tensor,
                               attention_mask: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
    """A BERT layer's forward in eval mode, for the first position only: (batch, 1, hidden)."""
    if self.training:
        raise RuntimeError("first-token readout is for evaluation; it skips dropout")
    attention = self.attention.self
    batch, _, hidden = hidden_states.shape
    first = hidden_states[:, :1]

    def heads(states: torch.Tensor) -> torch.Tensor:
        return states.view(batch, states.shape[1], -1, attention.attention_head_size).transpose(1, 2)

    query = heads(attention.query(first))
    key, value = heads(attention.key(hidden_states)), heads(attention.value(hidden_states))
    # Hugging Face passes a (batch, 1, queries, keys) mask; the first query's row is the one needed.
    mask = None if attention_mask is None else attention_mask[:, :, :1]
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling)
    attended = self.attention.output(context.transpose(1, 2).reshape(batch, 1, hidden), first)
    return self.output(self.intermediate(attended), attended)


def _readout_layer(model: nn.Module) -> nn.Module | None:
    """The top layer the readout replaces, or None where it does not apply."""
    try:
        layout = encoder_layout(model)
    except UnsupportedArchitecture:
        return None
    # A token classifier reads every position, so only sequence classifiers qualify.
    supported = (type(model).__name__.endswith("ForSequenceClassification")
                 and model.config.model_type in READOUT_MODEL_TYPES
                 and getattr(model.config, "_attn_implementation", None) in READOUT_ATTENTION)
    return layout.layers[-1] if supported else None


@contextmanager
def first_token_readout(model: nn.Module) -> Iterator[bool]:
    """Within the block the model's top layer outputs only the first position; yields whether it applies.

    The model must be in eval mode. Models it does not support run unchanged (yields False).
    """
    top = _readout_layer(model)
    if top is None:
        yield False
        return
    top.forward = MethodType(_first_token_layer_forward, top)
    try:
        yield True
    finally:
        del top.forward
