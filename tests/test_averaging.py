"""EMA and SWA of the weights: equal to a hand computation, evaluated beside an unchanged training run, and kept
across a pause."""
from __future__ import annotations

import torch

from steadytune.stabilizers.averaging import WeightAverage
from steadytune.training.trial import Trial


def weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _average(trial: Trial) -> WeightAverage:
    return next(m for m in trial.stabilizers if isinstance(m, WeightAverage))


def _stepwise(trial: Trial, steps: int) -> list[dict[str, torch.Tensor]]:
    seen = []
    for step in range(1, steps + 1):
        trial.run(lambda points: None, stop_at=step)
        seen.append(weights(trial.model))
    return seen


def test_ema_is_the_exponential_average_of_every_step(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(max_steps=3, average="ema", ema_decay=0.5), options)
    seen = _stepwise(trial, 3)
    averaged = weights(_average(trial).average.module)
    for name in averaged:
        expected = seen[0][name]
        for later in seen[1:]:
            expected = 0.5 * expected + 0.5 * later[name]
        assert torch.allclose(averaged[name], expected, atol=1e-7), name


def test_swa_is_the_uniform_average_from_its_start(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(max_steps=4, average="swa", swa_start=0.5), options)
    seen = _stepwise(trial, 4)
    averaged = weights(_average(trial).average.module)
    for name in averaged:
        assert torch.allclose(averaged[name], (seen[2][name] + seen[3][name]) / 2, atol=1e-7), name


def test_the_average_is_evaluated_beside_an_unchanged_run(tiny_trial_config, options):
    def curves(**extra):
        points = []
        trial = Trial(tiny_trial_config(max_steps=4, evals_per_epoch=2, max_train=32, **extra), options)
        _, pending = trial.run(points.extend)
        return [(p.step, p.split, p.metric, p.value) for p in points + pending]

    plain, ema = curves(), curves(average="ema")
    assert [row for row in ema if not row[2].endswith(".ema")] == plain  # training and raw metrics unchanged
    averaged = [row for row in ema if row[2] == "accuracy.ema"]
    assert len(averaged) == len([row for row in plain if row[2] == "accuracy"]) >= 2


def test_a_paused_trial_keeps_its_average(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(max_steps=4, average="swa", swa_start=0.25)
    whole = Trial(config, options)
    whole.run(lambda points: None)
    first = Trial(config, options)
    first.run(lambda points: None, stop_at=2)
    first.save_state(tmp_path / "state.safetensors")
    second = Trial(config, options)
    second.restore_state(tmp_path / "state.safetensors")
    second.run(lambda points: None)
    assert int(_average(second).average.n_averaged) == int(_average(whole).average.n_averaged) == 3
    for (name, a), b in zip(_average(whole).average.module.named_parameters(),
                            _average(second).average.module.parameters()):
        assert torch.equal(a, b), name


def test_a_second_preemption_keeps_the_points_of_the_first(tiny_trial_config, options, tmp_path):
    from steadytune.training.state_file import load_state_file

    config = tiny_trial_config(max_steps=6)
    first = Trial(config, options)
    points = []
    _, pending = first.run(points.extend, stop_at=2)
    first.save_state(tmp_path / "a.safetensors", points + pending)
    second = Trial(config, options)
    second.restore_state(tmp_path / "a.safetensors")
    second.autosave_to(tmp_path / "b.safetensors", 0.0)  # every step
    second.run(lambda points: None, stop_at=4)
    saved_steps = {step for step, *_ in load_state_file(tmp_path / "b.safetensors")["points"]}
    assert saved_steps == {1, 2, 3, 4}  # the autosave at step 4 still carries the unrecorded steps 1 and 2
