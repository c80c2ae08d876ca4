"""Dodge et al.'s early stopping across trials: one synchronous cut, not ASHA.

Start T trials, train each for a fraction F of its schedule, evaluate, and continue only the top P
to the end. Cost in full-trial units: T*F + P*(1-F). Their advice: start many more trials than you
could finish, cut after 20-30% of training, keep about half of what the budget could fully train.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EarlyStop:
    start: int
    fraction: float
    keep: int

    def __post_init__(self) -> None:
        if self.start < 1 or not 0 < self.fraction < 1 or not 1 <= self.keep <= self.start:
            raise ValueError(f"early stopping needs start >= 1, 0 < fraction < 1 and 1 <= keep <= start; got "
                             f"start={self.start}, fraction={self.fraction}, keep={self.keep}")

    @classmethod
    def parse(cls, text: str) -> EarlyStop:
        """'start=16,fraction=0.25,keep=4' (the CLI form)."""
        try:
            values = dict(part.split("=", 1) for part in text.replace(" ", "").split(","))
            return cls(start=int(values.pop("start")), fraction=float(values.pop("fraction")),
                       keep=int(values.pop("keep")), **values)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"--early-stop {text!r}: expected start=T,fraction=F,keep=P ({err})") from None

    def cost(self) -> float:
        """Compute in full-trial units."""
        return self.start * self.fraction + self.keep * (1 - self.fraction)


def cut_step(total_steps: int, fraction: float) -> int:
    """The step at which the cut is made: fraction F of the schedule, at least 1, before the end."""
    return min(max(1, math.ceil(fraction * total_steps)), max(1, total_steps - 1))


def survivors(scores: Sequence[float], keep: int) -> list[int]:
    """Indices of the `keep` best scores (ties broken by position, so the choice is deterministic)."""
    ranked = sorted(range(len(scores)), key=lambda i: (-_finite(scores[i]), i))
    return sorted(ranked[:keep])


def _finite(value: float) -> float:
    """NaN or missing (a diverged trial) ranks last."""
    return -math.inf if value is None or math.isnan(value) else value
