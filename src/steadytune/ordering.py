"""Training data order: a pure function of (do_seed, epoch), independent of every other seed.

Deriving each epoch's permutation from the pair (do_seed, epoch) rather than from one running
generator means any epoch's order can be reproduced without replaying earlier ones, which a trial
resumed mid-way needs.
"""
from __future__ import annotations

import math

import numpy as np


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return math.ceil(num_examples / batch_size)


def total_steps(num_examples: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(epochs * steps_per_epoch(num_examples, batch_size)))


def epoch_batches(num_examples: int, batch_size: int, do_seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of example indices for one epoch; the last batch may be smaller."""
    order = np.random.default_rng([do_seed, epoch]).permutation(num_examples)
    return [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]


def eval_steps(per_epoch: int, total: int, evals_per_epoch: int) -> list[int]:
    """1-based steps after which the dev set is evaluated: k evenly spaced per epoch, plus the last step."""
    points = {total}
    if evals_per_epoch > 0:
        epochs = math.ceil(total / per_epoch)
        for epoch in range(epochs):
            for j in range(1, evals_per_epoch + 1):
                step = epoch * per_epoch + round(j * per_epoch / evals_per_epoch)
                if 0 < step <= total:
                    points.add(step)
    return sorted(points)
