"""Optimizer parameter groups: weight-decay exclusions and layer-wise learning-rate decay.

Weight decay is not applied to biases and normalization weights (the BERT recipe). A parameter
is excluded when its own name is ``bias`` or it belongs to a normalization module (an
``nn.LayerNorm``, any module class whose name contains ``Norm``, or a module path containing
``LayerNorm``/``layer_norm``, which covers BERT, RoBERTa, ELECTRA, MPNet and ALBERT naming).
This is decided per module, not by substring over the full name, so MPNet's
``relative_attention_bias.weight`` -- an embedding table, not a bias -- is decayed like the
other embeddings (the usual ``"bias" in name`` test would exclude it).

Layer-wise LR decay with factor ``eta`` (Zhang et al. 2021, after Howard & Ruder 2018): with
``L`` transformer layers and depth ``d`` from :func:`steadytune.models.architecture.layer_index`
(0 embeddings, 1..L layers, L+1 pooler and head) a parameter gets ``lr * eta ** (L + 1 - d)``:
head and pooler ``lr``, top layer ``lr * eta``, each layer below one more factor, embeddings
``lr * eta ** (L + 1)``. ALBERT is refused: its layers share one set of weights, so there is
no per-layer rate to give.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ..models.architecture import UnsupportedArchitecture, encoder_layout, layer_index
from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


def _is_norm(module_path: str, module: nn.Module) -> bool:
    return (
        isinstance(module, nn.LayerNorm)
        or "Norm" in type(module).__name__
        or "LayerNorm" in module_path
        or "layer_norm" in module_path
    )


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of the trainable parameters that must not be weight-decayed."""
    excluded: set[str] = set()
    for module_path, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if param.requires_grad and (leaf == "bias" or _is_norm(module_path, module)):
                excluded.add(f"{module_path}.{leaf}" if module_path else leaf)
    return excluded


def _group_label(depth: int, num_layers: int, in_pooler: bool) -> str:
    if depth == 0:
        return "embeddings"
    if depth <= num_layers:
        return f"layer_{depth - 1}"
    return "pooler" if in_pooler else "head"


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, llrd: float | None = None
) -> list[dict[str, Any]]:
    """Torch param groups with ``params``, ``lr``, ``weight_decay`` and a ``name`` for logging.

    Without ``llrd`` there are at most two groups, ``all/decay`` and ``all/no_decay``, both at
    ``lr`` (this works for any model). With ``llrd`` the groups are per part and decay class,
    bottom to top: ``embeddings/...``, ``layer_{k}/...`` (``k`` is Hugging Face's 0-based
    ``encoder.layer.{k}``), ``pooler/...``, ``head/...``. Empty groups are left out. Every
    trainable parameter is in exactly one group; frozen parameters are in none.
    """
    excluded = no_weight_decay(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    groups: dict[str, dict[str, Any]] = {}

    def add(label: str, name: str, param: nn.Parameter, group_lr: float) -> None:
        decays = name not in excluded
        key = f"{label}/{'decay' if decays else 'no_decay'}"
        if key not in groups:
            groups[key] = {"params": [], "lr": group_lr, "weight_decay": weight_decay if decays else 0.0, "name": key}
        groups[key]["params"].append(param)

    if llrd is None:
        for name, param in trainable:
            add("all", name, param, lr)
        return list(groups.values())

    if not 0.0 < llrd <= 1.0:
        raise ValueError(f"layer-wise LR decay factor must be in (0, 1], got {llrd}")
    layout = encoder_layout(model)
    if layout.shared_layers:
        raise UnsupportedArchitecture(
            f"layer-wise LR decay is undefined for {type(model).__name__}: all its layers share one set of "
            "weights; disable llrd for this architecture"
        )
    num_layers = len(layout.layers)
    placed = []
    for name, param in trainable:
        depth = layer_index(layout, name)
        if depth is None:
            raise ValueError(f"parameter {name} of {type(model).__name__} belongs to no known part of the model")
        in_pooler = layout.pooler_prefix is not None and name.startswith(layout.pooler_prefix)
        placed.append((depth, _group_label(depth, num_layers, in_pooler), name, param))
    order = {"pooler": 0, "head": 1}
    placed.sort(key=lambda item: (item[0], order.get(item[1], 0)))
    for depth, label, name, param in placed:
        add(label, name, param, lr * llrd ** (num_layers + 1 - depth))
    return list(groups.values())


class LayerwiseLRDecay(Stabilizer):
    """--llrd eta: the groups are rebuilt per part, each at lr * eta ** (its distance from the top)."""

    @classmethod
    def applies(cls, config: TrialConfig) -> bool:
        return config.llrd is not None

    def change_groups(self, model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return parameter_groups(model, self.config.lr, self.config.weight_decay, self.config.llrd)
