"""Training diagnostics of Mosbach et al. 2021: why a run fails, logged while it trains.

Every K steps the trainer records, as curve points of split ``diag``:

- ``grad.<part>``: L2 norm of the gradient of each part before clipping, where the parts are
  ``embeddings``, ``layer_1`` .. ``layer_N`` (bottom to top), ``pooler`` and ``head``;
- ``grad.total`` and ``grad.total_clipped``: the global norm before and after clipping;
- ``pooler_saturation``: share of pooler tanh activations with ``|a| >= 0.99`` in the batch
  (saturated units pass almost no gradient);
- ``pred_mean`` (mean predicted class id, or mean prediction for regression) and
  ``pred_top_share`` (share of the batch given the most frequent class: 1.0 is class collapse).

Vanishing gradients in the lower layers early in training are the signature of Mosbach et al.'s
failed runs (their Fig. 4); `analysis.gradients` reads these points back.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.architecture import encoder_layout, layer_index

SATURATION_THRESHOLD = 0.99

# Where the tanh of the [CLS] representation is, per architecture: (module path from the model,
# whether the module's output still needs the tanh). ELECTRA's head uses GELU, so it has none.
_POOLER_TANH = {
    "bert": ("bert.pooler", False),
    "albert": ("albert.pooler_activation", False),
    "roberta": ("classifier.dense", True),
    "mpnet": ("classifier.dense", True),
}


def part_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of each part, keyed embeddings, layer_1..layer_N, pooler, head (bottom to top)."""
    layout = encoder_layout(model)
    top = len(layout.layers) + 1
    parts: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:  # frozen (an adapter trial's encoder): it has no gradient to diagnose
            continue
        depth = layer_index(layout, name)
        if depth == 0:
            part = "embeddings"
        elif depth == top:
            part = "head" if name.startswith(layout.head_prefix) else "pooler"
        else:
            part = f"layer_{depth}"
        parts.setdefault(part, []).append(param)
    order = ["embeddings", *(f"layer_{k}" for k in range(1, top)), "pooler", "head"]
    return {part: parts[part] for part in order if part in parts}


def gradient_norms(parts: dict[str, list[nn.Parameter]]) -> dict[str, float]:
    """L2 norm of the current gradients of each part (parameters without a gradient count as zero)."""
    norms = {}
    for part, params in parts.items():
        grads = [p.grad for p in params if p.grad is not None]
        norms[f"grad.{part}"] = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
    return norms


def prediction_summary(logits: torch.Tensor, is_regression: bool) -> dict[str, float]:
    """Mean prediction of a batch and, for classification, the share of its most frequent predicted class."""
    logits = logits.detach().float()
    if is_regression:
        return {"pred_mean": logits.squeeze(-1).mean().item()}
    predicted = logits.argmax(-1)
    counts = torch.bincount(predicted, minlength=logits.shape[-1])
    return {"pred_mean": predicted.float().mean().item(), "pred_top_share": (counts.max() / len(predicted)).item()}


class PoolerProbe:
    """Captures the pooler's tanh activations of the next forward pass, when armed.

    The forward hook stays registered but only keeps a detached reference while armed, so steps
    without diagnostics pay nothing.
    """

    def __init__(self, model: nn.Module):
        self.armed, self._activations = False, None
        path, self._needs_tanh = _POOLER_TANH.get(model.config.model_type, (None, False))
        module = _submodule(model, path) if path else None
        self.available = module is not None
        if module is not None:
            module.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        if self.armed:
            self._activations = output.detach()

    def saturation(self) -> dict[str, float]:
        """Share of saturated units in the captured activations (empty when nothing was captured)."""
        activations, self._activations, self.armed = self._activations, None, False
        if activations is None:
            return {}
        if self._needs_tanh:
            activations = torch.tanh(activations)
        return {"pooler_saturation": (activations.abs() >= SATURATION_THRESHOLD).float().mean().item()}


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:  # e.g. a BERT built without a pooler
        return None
