"""The tagging heads' loss and predictions from a token-classification model's logits.

`linear`: Hugging Face's head, a softmax per first word piece (cross-entropy over tagged positions).
`crf`: the same emission scores, read at each word's first piece, feed a linear-chain CRF (`model.crf`);
the loss is the negative log-likelihood of the gold tag sequence, averaged over sentences, and predictions
are the Viterbi path.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoding import IGNORED


def word_view(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scores and tags of each sentence's words, left-aligned: (batch, words, tags), (batch, words), and the
    mask of real words. A word's position is its first piece, the one that carries its tag."""
    is_word = labels != IGNORED
    counts = is_word.sum(1)
    width = max(int(counts.max()), 1)
    # A stable sort of "not a word" brings each row's word positions to the front, in sentence order.
    positions = torch.argsort((~is_word).to(torch.int8), dim=1, stable=True)[:, :width]
    mask = torch.arange(width, device=labels.device).unsqueeze(0) < counts.unsqueeze(1)
    emissions = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    tags = labels.gather(1, positions).masked_fill(~mask, 0)
    return emissions, tags, mask


def tagging_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                 crf_params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean cross-entropy over tagged positions (linear head), or mean CRF negative log-likelihood per sentence.
    `crf_params` substitutes the CRF's parameters (a landscape point)."""
    crf = getattr(model, "crf", None)
    if crf is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORED)
    emissions, tags, mask = word_view(logits, labels)
    return -crf.log_likelihood(emissions.float(), tags, mask, crf_params).mean()


def predicted_tags(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                   crf_params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's predicted tag, left-aligned (batch, words), and the mask of real words."""
    emissions, _, mask = word_view(logits, labels)
    crf = getattr(model, "crf", None)
    if crf is None:
        return emissions.argmax(-1), mask
    return crf.decode(emissions.float(), mask, crf_params), mask


def tagging_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of a batch from `collate_tags`."""
    if getattr(model, "crf", None) is None:
        out = model(**batch)  # Hugging Face's token-classification loss is the linear head's
        return out.loss, out.logits
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return tagging_loss(model, logits, batch["labels"]), logits


def tag_share(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Diagnostics of a training batch: mean predicted tag id and the share of words given the most frequent tag
    (1.0 when everything is tagged O: the tagging form of class collapse). Read from the emission scores."""
    predicted = logits.detach().argmax(-1)[labels != IGNORED]
    if predicted.numel() == 0:
        return {}
    counts = torch.bincount(predicted, minlength=logits.shape[-1])
    return {"pred_mean": predicted.float().mean().item(), "pred_top_share": (counts.max() / predicted.numel()).item()}


def place_words(out: np.ndarray, offsets: np.ndarray, tagged_words: Sequence[np.ndarray], sentences: Sequence[int],
                tags: torch.Tensor, mask: torch.Tensor) -> None:
    """Write each batch row's predicted word tags into `out` (one entry per word, sentence after sentence) at the
    word ids of its tagged tokens; words without a piece (cut off by truncation, or tokenized to nothing) keep what
    `out` holds."""
    tags, counts = tags.cpu().numpy(), mask.sum(1).cpu().numpy()
    for row, sentence in enumerate(sentences):
        words = tagged_words[sentence][:counts[row]]
        out[offsets[sentence] + words] = tags[row, :len(words)]