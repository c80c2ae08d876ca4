"""NoisyTune (Wu et al. 2022) in a real Trial: noise of width lambda x std per tensor, from the WI stream."""
from __future__ import annotations

import math

import pytest
import torch

from steadytune.training.trial import Trial


def named(trial: Trial) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trial.model.named_parameters()}


def test_each_tensor_gets_uniform_noise_scaled_by_its_own_std(tiny_trial_config, options):
    plain = named(Trial(tiny_trial_config(), options))
    noisy = named(Trial(tiny_trial_config(noisytune=0.15), options))
    checked = 0
    for name, before in plain.items():
        spread = before.std()
        if before.numel() < 2 or spread == 0:
            assert torch.equal(noisy[name], before), name  # e.g. LayerNorm weights of ones: nothing to scale
            continue
        unit = (noisy[name] - before) / (0.15 * spread)
        assert unit.min() >= -0.5 - 1e-4 and unit.max() < 0.5 + 1e-4, name
        if before.numel() >= 2048:  # U(-0.5, 0.5): mean 0, sd 1/sqrt(12)
            assert unit.mean().abs() < 0.02 and unit.std() == pytest.approx(1 / math.sqrt(12), rel=0.05), name
            checked += 1
    assert checked >= 3


def test_the_noise_is_the_authors_rule_drawn_after_the_head_from_the_wi_stream(tiny_trial_config, options):
    plain = Trial(tiny_trial_config(wi_seed=5), options)
    before = named(plain)
    generator = torch.Generator().manual_seed(5)
    # The WI stream first draws the new head (classifier weight, then nothing else: the bias starts at 0).
    torch.nn.init.normal_(torch.empty_like(plain.model.classifier.weight), std=plain.model.config.initializer_range,
                          generator=generator)
    expected = {}
    for name, value in before.items():
        noise = torch.rand(value.shape, generator=generator) - 0.5
        expected[name] = value + noise * 0.15 * (value.std() if value.numel() > 1 else 0.0)
    noisy = named(Trial(tiny_trial_config(wi_seed=5, noisytune=0.15), options))
    for name in before:
        assert torch.allclose(noisy[name], expected[name], atol=1e-7), name


def test_the_wi_seed_alone_decides_the_noise(tiny_trial_config, options):
    first = named(Trial(tiny_trial_config(noisytune=0.15, wi_seed=1, do_seed=1), options))
    other_order = named(Trial(tiny_trial_config(noisytune=0.15, wi_seed=1, do_seed=9), options))
    other_seed = named(Trial(tiny_trial_config(noisytune=0.15, wi_seed=2), options))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(first[name], other_order[name]) and not torch.equal(first[name], other_seed[name])
