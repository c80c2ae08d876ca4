"""Directions in parameter space, with parameters held as name -> tensor dicts (a model's named_parameters).

Points are built so the ends are exact: ``interpolate(start, end, 1)`` is ``end`` bit for bit (torch.lerp),
so a landscape's (0, 0) is the start model and, for Hao's and Mosbach's planes, (1, 0) the end of the run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

Params = dict[str, torch.Tensor]


def difference(a: Params, b: Params) -> Params:
    """a - b for the parameters both hold with the same shape; others get a zero direction.

    A run on another task may have a head of another shape (e.g. 3 MNLI classes), which has no
    meaningful difference to the target run's head.
    """
    return {name: a[name] - b[name] if name in a and a[name].shape == b[name].shape else torch.zeros_like(b[name])
            for name in b}


def dot(a: Params, b: Params) -> float:
    return sum(torch.sum(a[n].double() * b[n].double()).item() for n in a)


def norm(a: Params) -> float:
    return dot(a, a) ** 0.5


def scale(a: Params, factor: float) -> Params:
    return {n: t * factor for n, t in a.items()}


def interpolate(start: Params, end: Params, a: float) -> Params:
    """start + a (end - start), exact at a = 0 and a = 1."""
    return {n: torch.lerp(start[n], end[n], a) for n in start}


@dataclass(frozen=True)
class Plane:
    """The plane origin + a d1 + b d2; `end1` (origin + d1, when d1 is a run's displacement) makes a = 1 exact."""

    origin: Params
    d1: Params
    d2: Params
    end1: Params | None = None
    label1: str = "d1"
    label2: str = "d2"

    def point(self, a: float, b: float) -> Params:
        first = interpolate(self.origin, self.end1, a) if self.end1 is not None else \
            {n: t + a * self.d1[n] for n, t in self.origin.items()}
        if b == 0:
            return first
        return {n: t + b * self.d2[n] for n, t in first.items()}


def hao_plane(start: Params, end: Params, other_end: Params) -> Plane:
    """Hao et al.: d1 = end - start; d2 = (end of a run on another task) - start, scaled to d1's norm."""
    d1, d2 = difference(end, start), difference(other_end, start)
    other_norm = norm(d2)
    if other_norm == 0:
        raise ValueError("the other run did not move from the start: its direction is zero")
    return Plane(start, d1, scale(d2, norm(d1) / other_norm), end1=end, label1="this task (end - start)",
                 label2="other task (scaled)")


def mosbach_plane(pretrained: Params, failed_end: Params, successful_end: Params) -> Plane:
    """Mosbach et al.: d1 = failed run - pretrained, d2 = successful run - pretrained (unscaled, so (0, 1) is the
    successful run up to the difference of the two runs' starting heads)."""
    return Plane(pretrained, difference(failed_end, pretrained), difference(successful_end, pretrained),
                 end1=failed_end, label1="failed run", label2="successful run")


def filter_normalized(center: Params, generator: torch.Generator, frozen: frozenset[str] = frozenset()) -> Params:
    """A Gaussian direction with each filter rescaled to the norm of the same filter of `center` (Li et al. 2018).

    A filter is one output unit: a row of a Linear or Embedding weight. One-dimensional parameters (biases,
    LayerNorm) get a zero direction, as in Li et al.'s ignore-bias/BN setting, so the direction moves weights only.
    So do `frozen` parameters (an adapter trial's encoder): the landscape is over what trained.
    """
    direction = {}
    for name, weight in center.items():
        if weight.dim() <= 1 or name in frozen:
            direction[name] = torch.zeros_like(weight)
            continue
        sample = torch.randn(weight.shape, generator=generator, dtype=torch.float32).to(weight)
        rows, sample_rows = weight.flatten(1), sample.flatten(1)
        factor = rows.norm(dim=1, keepdim=True) / sample_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        direction[name] = (sample_rows * factor).view_as(weight)
    return direction


def random_plane(center: Params, seed: int, frozen: frozenset[str] = frozenset()) -> Plane:
    """Two filter-normalized random directions around `center` (Li et al.), drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return Plane(center, filter_normalized(center, generator, frozen), filter_normalized(center, generator, frozen),
                 label1="random 1 (filter-normalized)", label2="random 2 (filter-normalized)")
