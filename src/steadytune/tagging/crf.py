"""A linear-chain conditional random field over the words of a sentence (Lafferty et al. 2001; BERT+CRF taggers).

Written here rather than taken from pytorch-crf (last release 2019), which draws its initial transitions from
the global RNG and has no transition constraints; tests check this one against pytorch-crf and against brute
force enumeration. Sequences are left-aligned: `mask[b]` is True for the first `length[b]` positions.

With BIO constraints the transitions into `I-x` from anything but `B-x`/`I-x`, and from the start, are fixed
at -inf, so neither training nor Viterbi decoding can produce an `I-x` that does not continue an x entity.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The range pytorch-crf and AllenNLP draw initial transition scores from.
INIT_RANGE = 0.1


def bio_masks(tag_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive masks (0 or -inf) of the start and the pairwise transitions that BIO forbids."""
    n = len(tag_names)
    start, pairs = torch.zeros(n), torch.zeros(n, n)
    for j, tag in enumerate(tag_names):
        if not tag.startswith("I-"):
            continue
        start[j] = -torch.inf
        for i, before in enumerate(tag_names):
            if before not in (f"B-{tag[2:]}", tag):
                pairs[i, j] = -torch.inf
    return start, pairs


def log_likelihood(emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, start: torch.Tensor,
                   end: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
    """log p(tags | emissions) per sequence: (batch,). emissions (batch, length, tags); tags, mask (batch, length).
    An empty sequence (no position in the mask) has log-likelihood 0."""
    batch = torch.arange(emissions.shape[0], device=emissions.device)
    lengths = mask.sum(1)
    tags = tags.masked_fill(~mask, 0)
    score = start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.shape[1]):
        on = mask[:, t]
        score = score + torch.where(on, transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]], 0)
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)
        alpha = torch.where(on.unsqueeze(1), step, alpha)
    last = tags[batch, (lengths - 1).clamp(min=0)]
    score = score + end[last]
    normalizer = torch.logsumexp(alpha + end, dim=1)
    return torch.where(lengths > 0, score - normalizer, 0)


def viterbi(emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
            transitions: torch.Tensor) -> torch.Tensor:
    """The most likely tag sequence of each sequence: (batch, length), undefined beyond each sequence's length."""
    score = start + emissions[:, 0]
    history = []
    for t in range(1, emissions.shape[1]):
        best, pointer = (score.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1)).max(dim=1)
        score = torch.where(mask[:, t].unsqueeze(1), best, score)
        history.append(pointer)
    current = (score + end).argmax(dim=1)
    path = torch.zeros(mask.shape, dtype=torch.long, device=emissions.device)
    for t in range(emissions.shape[1] - 1, 0, -1):
        on = mask[:, t]
        path[:, t] = torch.where(on, current, path[:, t])
        current = torch.where(on, history[t - 1].gather(1, current.unsqueeze(1)).squeeze(1), current)
    path[:, 0] = current
    return path


class LinearChainCRF(nn.Module):
    """Start, end and pairwise transition scores over `tag_names`, optionally under BIO constraints."""

    def __init__(self, tag_names: Sequence[str], bio_constraints: bool = False):
        super().__init__()
        n = len(tag_names)
        self.start_transitions = nn.Parameter(torch.zeros(n))
        self.end_transitions = nn.Parameter(torch.zeros(n))
        self.transitions = nn.Parameter(torch.zeros(n, n))
        start_mask, pair_mask = bio_masks(tag_names) if bio_constraints else (torch.zeros(n), torch.zeros(n, n))
        # Not saved: they follow from the tags and the config, which every trial is rebuilt from.
        self.register_buffer("start_mask", start_mask, persistent=False)
        self.register_buffer("transition_mask", pair_mask, persistent=False)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Uniform(-0.1, 0.1) scores drawn from `generator` (the trial's wi_seed stream), in a fixed order."""
        for param in (self.start_transitions, self.end_transitions, self.transitions):
            param.copy_(torch.rand(param.shape, generator=generator) * 2 * INIT_RANGE - INIT_RANGE)

    def scores(self, params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start, end, transitions) with the constraints applied; `params` substitutes parameter values by name
        (start_transitions, end_transitions, transitions), as a landscape point does."""
        params = params or {}
        start = params.get("start_transitions", self.start_transitions)
        end = params.get("end_transitions", self.end_transitions)
        transitions = params.get("transitions", self.transitions)
        return start + self.start_mask, end, transitions + self.transition_mask

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor,
                       params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return log_likelihood(emissions, tags, mask, *self.scores(params))

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor,
               params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return viterbi(emissions, mask, *self.scores(params))
