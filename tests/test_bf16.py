"""bf16 training and evaluation: each another computation (its own trial key, other numbers), as resumable and as
packable as fp32."""
from __future__ import annotations

import math

from conftest import curve_by_key

from steadytune.config import TrialConfig
from steadytune.packed.trial import PackedTrial
from steadytune.training.trial import Trial


def test_bf16_has_its_own_key_and_fp32_keys_stay_as_they_were():
    fp32 = TrialConfig(task="rte", lr=1e-4)
    assert fp32.trial_key() == "12aa000254af7361"  # the key this config had before the field existed
    assert TrialConfig(task="rte", lr=1e-4, train_precision="fp32").trial_key() == fp32.trial_key()
    assert TrialConfig(task="rte", lr=1e-4, train_precision="bf16").trial_key() != fp32.trial_key()


def test_a_paused_bf16_trial_continues_bit_identically(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(epochs=2, evals_per_epoch=2, train_precision="bf16")
    points: list = []
    straight, pending = Trial(config, options).run(points.extend)
    straight_curve = [(p.step, p.split, p.metric, p.value) for p in points + pending]
    fp32_points: list = []
    _, fp32_pending = Trial(config.model_copy(update={"train_precision": "fp32"}), options).run(fp32_points.extend)
    fp32_losses = [p.value for p in fp32_points + fp32_pending if p.metric == "loss" and p.split == "train"]
    bf16_losses = [p.value for p in points + pending if p.metric == "loss" and p.split == "train"]
    assert bf16_losses != fp32_losses  # the products really ran in bf16

    first_points: list = []
    first = Trial(config, options)
    _, first_pending = first.run(first_points.extend, stop_at=5)
    first.save_state(tmp_path / "state.safetensors", first_pending)
    second = Trial(config, options)
    second.restore_state(tmp_path / "state.safetensors")
    second_points: list = list(second.restored_points)
    resumed, second_pending = second.run(second_points.extend)
    resumed_curve = [(p.step, p.split, p.metric, p.value) for p in first_points + second_points + second_pending]
    assert resumed.final_metrics == straight.final_metrics
    assert sorted(resumed_curve) == sorted(straight_curve)


def test_bf16_evaluation_moves_dev_scores_a_little_leaves_training_alone_and_packs(tiny_trial_config, options):
    configs = [tiny_trial_config(evals_per_epoch=2, eval_precision=precision, wi_seed=seed)
               for precision in ("fp32", "bf16") for seed in (1, 2)]
    curves = []
    for config in configs:
        points: list = []
        _, pending = Trial(config, options).run(points.extend)
        curves.append(curve_by_key(points + pending))
    fp32, bf16 = curves[0], curves[2]
    train = [key for key in fp32 if key[1] == "train"]
    assert [fp32[key] for key in train] == [bf16[key] for key in train]  # training is fp32 in both: bit for bit
    dev_losses = [key for key in fp32 if key[1:] == ("dev", "loss")]
    moved = [abs(fp32[key] - bf16[key]) for key in dev_losses]
    assert 0 < max(moved) < 1e-2
    got: dict[int, list] = {0: [], 1: []}
    results = PackedTrial.from_configs(configs[2:], options).run(lambda k, points: got[k].extend(points))
    for k, single in enumerate(curves[2:]):
        packed = curve_by_key(got[k] + results[k][1])
        assert set(packed) == set(single)
        for key, value in single.items():
            assert math.isclose(packed[key], value, rel_tol=1e-2, abs_tol=1e-2), (key, packed[key], value)
