"""The two optimizers Zhang et al. (2021) compare: bias-corrected AdamW and the original BERTAdam.

BERTAdam reproduces Devlin et al.'s ``AdamWeightDecayOptimizer`` from the original BERT
release, which omits Adam's bias correction. Per parameter ``p`` with gradient ``g``::

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    update = m / (sqrt(v) + eps) + weight_decay * p
    p = p - lr * update

Without the ``1 / (1 - b^t)`` factors the early steps are too large: relative to AdamW the
step is scaled by ``(1 - b1^t) / sqrt(1 - b2^t)``, which with betas (0.9, 0.999) is 3.16 at step
1, peaks at 6.57 at step 12, is still 1.26 at step 1000 and falls below 1.05 only after ~2,400
steps -- longer than most small-data runs. Zhang et al. show this makes small-data fine-tuning
fail far more often.

Weight decay, compared with ``torch.optim.AdamW``: both are decoupled and scaled by ``lr``.
AdamW first shrinks ``p *= 1 - lr * wd`` and then subtracts the Adam step; BERTAdam adds
``wd * p`` (with the old ``p``) to the update. Because the Adam step does not depend on ``p``,
the two are the same in exact arithmetic and differ only in float rounding. Unlike the
PyTorch port of BERTAdam in ``pytorch-pretrained-bert``, this class does not clip gradients or
schedule the learning rate itself: the trainer does both, identically for both optimizers, so
that bias correction is the only difference between them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch


class BERTAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay and *no* bias correction (original BERT optimizer)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("BERTAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + eps)
                if weight_decay != 0:
                    update.add_(p, alpha=weight_decay)
                p.add_(update, alpha=-lr)
        return loss


def build_optimizer(
    name: Literal["adamw", "bertadam"],
    param_groups: Iterable[dict[str, Any]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.Optimizer:
    """Build the named optimizer over ``param_groups`` (each group carries its own weight decay).

    ``"adamw"`` is ``torch.optim.AdamW`` (bias-corrected), with torch's fused kernel where every
    parameter is on the CPU or a CUDA device: one pass over memory instead of one per arithmetic op.
    ``"bertadam"`` is :class:`BERTAdam`. Groups without a ``weight_decay`` key get 0 (AdamW's own
    default would be 0.01).
    """
    param_groups = list(param_groups)
    if name == "adamw":
        fused = all(p.device.type in ("cpu", "cuda") for group in param_groups for p in group["params"])
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0, fused=fused or None)
    if name == "bertadam":
        return BERTAdam(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adamw' or 'bertadam'")
