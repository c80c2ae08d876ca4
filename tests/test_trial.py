"""The trial loop on a tiny random BERT and real RTE data: seeds, reproducibility, divergence."""
from __future__ import annotations

import math

import pytest
import torch

from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training import trial as trial_module
from steadytune.training.trial import Trial


@pytest.fixture
def make_config(tiny_trial_config):
    """48 examples (6 steps an epoch at batch 8), evaluated twice an epoch."""
    defaults = dict(max_train=48, max_length=64, evals_per_epoch=2, lr=1e-4)
    return lambda **overrides: tiny_trial_config(**{**defaults, **overrides})


def head_weights(trial: Trial) -> torch.Tensor:
    return trial.model.classifier.weight.detach().clone()


def run(trial: Trial):
    flushed = []
    outcome, pending = trial.run(flushed.extend)
    return outcome, flushed + pending


def test_head_depends_on_wi_seed_only(make_config, options):
    a = Trial(make_config(wi_seed=3, do_seed=1), options)
    b = Trial(make_config(wi_seed=3, do_seed=2, dropout_seed=9), options)
    c = Trial(make_config(wi_seed=4, do_seed=1), options)
    assert torch.equal(head_weights(a), head_weights(b))
    assert not torch.equal(head_weights(a), head_weights(c))
    # The head is drawn with the model's initializer range, not left at transformers' default draw.
    assert torch.all(a.model.classifier.bias == 0)
    assert 0.005 < head_weights(a).std().item() < 0.05


def test_batch_order_depends_on_do_seed_only(make_config, options, monkeypatch):
    seen: list[list[int]] = []
    original = trial_module.collate

    def recording_collate(data, indices, *args):
        if len(data) == 48:  # the training subset; dev batches are not recorded
            seen.append([int(i) for i in indices])
        return original(data, indices, *args)

    monkeypatch.setattr(trial_module, "collate", recording_collate)
    orders = []
    for wi_seed, do_seed in ((1, 5), (2, 5), (1, 6)):
        seen.clear()
        run(Trial(make_config(wi_seed=wi_seed, do_seed=do_seed, evals_per_epoch=0), options))
        orders.append(list(seen))
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]
    assert sorted(i for batch in orders[0] for i in batch) == list(range(48))  # one epoch sees each example once


def test_same_seeds_give_bit_identical_curves(make_config, options):
    config = make_config(wi_seed=7, do_seed=8)
    first_outcome, first = run(Trial(config, options))
    second_outcome, second = run(Trial(config, options))
    assert first_outcome.status == "complete"
    assert [(p.step, p.split, p.metric, p.value) for p in first] == [(p.step, p.split, p.metric, p.value) for p in second]
    assert any(p.split == "dev" for p in first) and any(p.metric == "loss" and p.split == "train" for p in first)


def test_dropout_seed_changes_only_the_masks(make_config, options):
    _, base = run(Trial(make_config(wi_seed=7, do_seed=8, dropout_seed=1), options))
    _, other = run(Trial(make_config(wi_seed=7, do_seed=8, dropout_seed=2), options))
    loss = lambda points: [p.value for p in points if p.split == "train" and p.metric == "loss"]
    assert loss(base)[0] != loss(other)[0]


def test_curve_has_loss_every_step_and_dev_at_planned_points(make_config, options):
    outcome, points = run(Trial(make_config(evals_per_epoch=2), options))
    train_steps = sorted({p.step for p in points if p.split == "train" and p.metric == "loss"})
    assert train_steps == list(range(1, 7))  # 48 examples / batch 8
    assert sorted({p.step for p in points if p.split == "dev"}) == [3, 6]
    assert outcome.best_step in (3, 6)
    best = max(p.value for p in points if p.split == "dev" and p.metric == "accuracy")
    assert outcome.best_metrics["accuracy"] == best
    final = [p.value for p in points if p.split == "dev" and p.metric == "accuracy" and p.step == 6][0]
    assert outcome.final_metrics["accuracy"] == final


def test_split_dev_reports_test_half(make_config, options):
    outcome, points = run(Trial(make_config(split_dev=True, evals_per_epoch=0), options))
    assert {p.split for p in points} == {"train", "dev", "test", "diag"}  # diagnostics are on by default
    assert "test_accuracy" in outcome.best_metrics


def test_nan_loss_stops_trial_as_diverged_and_is_stored(make_config, options, tmp_path, monkeypatch):
    calls = {"n": 0}
    original_init = Trial.__init__

    def poisoning_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)

        def poison(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] >= 3:
                    return output * float("nan")
            return output
        self.model.classifier.register_forward_hook(poison)

    monkeypatch.setattr(Trial, "__init__", poisoning_init)
    with Store(tmp_path / "runs.db") as store:
        trial_id, outcome, _ = run_stored(make_config(), options, store)
        assert outcome.status == "diverged"
        assert outcome.steps_done == 3
        row = store.trials().set_index("id").loc[trial_id]
        assert row.status == "diverged"
        losses = store.curves([trial_id]).query("split == 'train' and metric == 'loss'").value.tolist()
        assert len(losses) == 3 and math.isnan(losses[-1])


def test_error_during_training_is_recorded_as_failed(make_config, options, tmp_path, monkeypatch):
    def broken_step(self, *args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(torch.optim.AdamW, "step", broken_step)
    with Store(tmp_path / "runs.db") as store:
        with pytest.raises(RuntimeError):
            run_stored(make_config(), options, store)
        row = store.trials().iloc[0]
        assert row.status == "failed" and "simulated" in row.error


def test_paused_and_restored_trial_matches_an_uninterrupted_one(make_config, options, tmp_path):
    config = make_config(wi_seed=2, do_seed=3, epochs=2, evals_per_epoch=2, pretrained_wd=0.5)
    _, straight = run(Trial(config, options))

    first = Trial(config, options)
    paused_points = []
    paused, pending = first.run(paused_points.extend, stop_at=5)  # mid-epoch (6 steps per epoch)
    assert paused.status == "stopped" and paused.steps_done == 5
    first.save_state(tmp_path / "state.safetensors")

    second = Trial(config, options)  # as a fresh process would: rebuilt from the config
    second.restore_state(tmp_path / "state.safetensors")
    outcome, rest = run(second)
    assert outcome.status == "complete" and outcome.steps_done == 12
    resumed = paused_points + pending + rest
    key = lambda p: (p.step, p.split, p.metric)
    assert sorted((key(p), p.value) for p in resumed) == sorted((key(p), p.value) for p in straight)


def test_restore_refuses_another_trials_state(make_config, options, tmp_path):
    trial = Trial(make_config(wi_seed=1), options)
    trial.run(lambda points: None, stop_at=1)
    trial.save_state(tmp_path / "state.safetensors")
    with pytest.raises(ValueError, match="another trial"):
        Trial(make_config(wi_seed=2), options).restore_state(tmp_path / "state.safetensors")


def test_interleaved_trials_in_one_process_match_their_solo_runs(make_config, options):
    """Each trial owns its dropout stream: other trials running in between cannot shift its masks."""
    config_a, config_b = make_config(wi_seed=1, do_seed=1), make_config(wi_seed=2, do_seed=2)
    _, solo_a = run(Trial(config_a, options))
    _, solo_b = run(Trial(config_b, options))
    a, b = Trial(config_a, options), Trial(config_b, options)
    a_points: list = []
    _, pending = a.run(a_points.extend, stop_at=2)
    a_points += pending
    _, both_b = run(b)
    torch.rand(100)  # unrelated use of the global RNG between the two halves of `a`
    _, rest = run(a)
    values = lambda points: sorted((p.step, p.split, p.metric, p.value) for p in points)
    assert values(a_points + rest) == values(solo_a)
    assert values(both_b) == values(solo_b)
