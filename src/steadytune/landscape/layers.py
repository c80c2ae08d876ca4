"""Layer groups (Hao et al.): the transformer layers split into low / middle / high thirds.

Rolling a group back puts its parameters at their starting (pretrained) values while the rest stays
fine-tuned; moving a group interpolates it alone between its starting and fine-tuned values.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from ..models.architecture import encoder_layout, layer_index
from .directions import Params, interpolate

THIRDS = ("low", "middle", "high")


def thirds(model: nn.Module) -> dict[str, list[int]]:
    """The transformer layers (1-based depths, bottom to top) of the low, middle and high groups."""
    count = len(encoder_layout(model).layers)
    return {name: [int(k) + 1 for k in idx] for name, idx in zip(THIRDS, np.array_split(np.arange(count), 3))}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names of: embeddings, low, middle, high (thirds of the layers, bottom to top), top (pooler, head)."""
    layout = encoder_layout(model)
    count = len(layout.layers)
    third_of = {depth: name for name, depths in thirds(model).items() for depth in depths}
    groups: dict[str, list[str]] = {name: [] for name in ("embeddings", *THIRDS, "top")}
    for name, _ in model.named_parameters():
        depth = layer_index(layout, name)
        groups["embeddings" if depth == 0 else "top" if depth == count + 1 else third_of[depth]].append(name)
    return groups


def group_contents(model: nn.Module) -> dict[str, str]:
    """What each group holds (transformer layers 1-based, bottom to top), for tables."""
    held = {name: "layers " + ", ".join(map(str, depths)) if depths else "none" for name, depths in thirds(model).items()}
    return {"embeddings": "embeddings", **held, "top": "pooler and head"}


def move_group(end: Params, start: Params, names: list[str], a: float) -> Params:
    """`end` with only the named parameters at start + a (end - start).

    a = 0 rolls the group back to its start values and a = 1 is `end`, both exactly.
    """
    chosen = set(names)
    moved = interpolate({n: start[n] for n in chosen}, {n: end[n] for n in chosen}, a)
    return {n: moved.get(n, t) for n, t in end.items()}
