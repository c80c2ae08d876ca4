"""R3F (Aghajanyan et al. 2021): a smoothness term between the model on its inputs and on noisy inputs.

At each step the word embeddings of the batch get noise z, uniform on [-eps, eps] (or normal with sd eps),
the model runs again on them, and the loss gains lambda x the symmetric KL divergence between the two
predicted class distributions, averaged over the batch, as in the authors' fairseq criterion
(sentence_prediction_r3f: eps 1e-5, uniform noise, lambda 1). The noise comes from the global torch RNG,
which the trial seeds with its dropout seed, so reruns stay bit-identical. Classification tasks only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .base import Stabilizer

if TYPE_CHECKING:
    from ..config import TrialConfig


def symmetric_kl(logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) of the softmax distributions, summed over classes, averaged over the batch."""
    p_log, q_log = F.log_softmax(logits.float(), dim=-1), F.log_softmax(noisy_logits.float(), dim=-1)
    return (F.kl_div(q_log, p_log, log_target=True, reduction="sum")
            + F.kl_div(p_log, q_log, log_target=True, reduction="sum")) / logits.size(0)


class R3F(Stabilizer):
    def __init__(self, config: TrialConfig):
        super().__init__(config)
        self.last_term = 0.0

    @classmethod
    def applies(cls, config) -> bool:
        return config.r3f > 0

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        eps = self.config.r3f_eps
        if self.config.r3f_noise == "normal":
            return torch.randn(like.shape, dtype=like.dtype, device=like.device) * eps
        return (torch.rand(like.shape, dtype=like.dtype, device=like.device) * 2 - 1) * eps

    def change_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], loss: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
        embeds = model.get_input_embeddings()(batch["input_ids"])
        noisy_logits = model(inputs_embeds=embeds + self.noise(embeds), **inputs).logits
        term = symmetric_kl(logits, noisy_logits)
        self.last_term = term.item()
        return loss + self.config.r3f * term
