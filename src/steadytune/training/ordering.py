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


# Length grouping sorts within windows of this many batches (as the HF Trainer's group_by_length):
# wide enough that batches are nearly uniform in length, narrow enough that the order stays random.
MEGABATCH_BATCHES = 50


def epoch_batches(lengths: np.ndarray, batch_size: int, do_seed: int, epoch: int,
                  group_by_length: bool) -> list[np.ndarray]:
    """The batches of example indices for one epoch; the last batch may be smaller.

    Plain: consecutive slices of a random permutation. Grouped by length: the permutation is cut into
    mega-batches of MEGABATCH_BATCHES x batch_size, each sorted by length and sliced into batches,
    and the batches are shuffled; so padding is small and every choice is still drawn from the
    (do_seed, epoch) stream alone.
    """
    rng = np.random.default_rng([do_seed, epoch])
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    window = MEGABATCH_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), window):
        mega = order[start:start + window]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


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
