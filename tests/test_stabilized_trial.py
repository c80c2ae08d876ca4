"""Stabilizers wired through a real Trial: each option changes what the trial computes, as specified."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model_dir

from steadytune.config import TrialConfig
from steadytune.stabilizers.bias_correction import BERTAdam
from steadytune.stabilizers.mixout import MixLinear
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.layout import StoreFiles
from steadytune.training.trial import Trial


def params(trial: Trial) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trial.model.named_parameters()}


def test_reinit_replaces_top_layers_from_the_wi_stream(tiny_trial_config, options):
    plain = params(Trial(tiny_trial_config(), options))
    reinit = params(Trial(tiny_trial_config(reinit_layers=1, reinit_pooler=True), options))
    again = params(Trial(tiny_trial_config(reinit_layers=1, reinit_pooler=True, do_seed=99), options))
    top, below = "bert.encoder.layer.2.", "bert.encoder.layer.1."
    assert not torch.equal(plain[top + "attention.self.query.weight"], reinit[top + "attention.self.query.weight"])
    assert not torch.equal(plain["bert.pooler.dense.weight"], reinit["bert.pooler.dense.weight"])
    assert torch.all(reinit[top + "attention.self.query.bias"] == 0)
    assert torch.all(reinit[top + "output.LayerNorm.weight"] == 1)
    for name in plain:
        if name.startswith((below, "bert.embeddings.")):
            assert torch.equal(plain[name], reinit[name]), name
        assert torch.equal(reinit[name], again[name]), name  # wi_seed alone decides, not do_seed


def first_update(trial: Trial) -> torch.Tensor:
    before = trial.model.classifier.weight.detach().clone()
    trial.run(lambda points: None)
    return trial.model.classifier.weight.detach() - before


def test_bertadam_first_step_is_larger_by_the_bias_correction_factor(tiny_trial_config, options):
    settings = dict(max_steps=1, warmup=0, lr_schedule="constant", weight_decay=0.0, max_grad_norm=0, adam_eps=1e-12)
    bert = Trial(tiny_trial_config(optimizer="bertadam", **settings), options)
    adamw = Trial(tiny_trial_config(optimizer="adamw", **settings), options)
    assert isinstance(bert.optimizer, BERTAdam)
    ratio = first_update(bert) / first_update(adamw)
    # Step 1 without bias correction: (1 - b1) / sqrt(1 - b2) = 0.1 / sqrt(0.001).
    assert torch.allclose(ratio, torch.full_like(ratio, 0.1 / 0.001**0.5), rtol=1e-4)


def test_llrd_learning_rates_per_group(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(llrd=0.5), options)
    lr_of = {}
    for group in trial.optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["initial_lr"]
    named = dict(trial.model.named_parameters())
    lr = 1e-3
    assert lr_of[id(named["classifier.weight"])] == lr
    assert lr_of[id(named["bert.pooler.dense.weight"])] == lr
    assert lr_of[id(named["bert.encoder.layer.2.output.dense.weight"])] == pytest.approx(lr * 0.5)
    assert lr_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(lr * 0.5**3)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(lr * 0.5**4)


def test_mixout_turns_dropout_off_and_uses_the_dropout_seed(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(mixout=0.3), options)
    assert sum(isinstance(m, MixLinear) for m in trial.model.modules()) > 0
    assert all(m.p == 0 for m in trial.model.modules() if isinstance(m, torch.nn.Dropout))
    losses = []
    for dropout_seed in (1, 1, 2):
        points = []
        outcome, pending = Trial(tiny_trial_config(mixout=0.3, dropout_seed=dropout_seed), options).run(points.extend)
        assert outcome.status == "complete"
        losses.append([p.value for p in points + pending if p.metric == "loss" and p.split == "train"])
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_pretrained_wd_replaces_decay_toward_zero(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(pretrained_wd=0.5, weight_decay=0.01), options)
    assert [type(method).__name__ for method in trial.stabilizers] == ["PretrainedWD"]
    assert all(group["weight_decay"] == 0 for group in trial.optimizer.param_groups)


def test_pretrained_wd_keeps_weights_near_the_start(tiny_trial_config, options):
    def distance_travelled(**overrides) -> float:
        trial = Trial(tiny_trial_config(max_steps=8, warmup=0, lr_schedule="constant", weight_decay=0.0, **overrides), options)
        start = params(trial)
        trial.run(lambda points: None)
        return sum((p.detach() - start[n]).norm().item() ** 2 for n, p in trial.model.named_parameters()) ** 0.5

    # lr 1e-3 x strength 100 pulls 10% of the gap back each step.
    assert distance_travelled(pretrained_wd=100.0) < 0.8 * distance_travelled()


def test_max_steps_sets_the_schedule(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(max_steps=10), options)
    points = []
    outcome, pending = trial.run(points.extend)
    lrs = [p.value for p in points + pending if p.metric == "lr"]
    assert outcome.steps_done == 10 and len(lrs) == 10  # 32 examples / batch 8 = 4 per epoch: epochs repeat
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs[-1] < lrs[5]


def test_init_from_a_saved_trial_keeps_encoder_and_draws_a_new_head(tiny_trial_config, options, tmp_path):
    store_path = tmp_path / "runs.db"
    with Store(store_path) as store:
        source_id, _, _ = run_stored(tiny_trial_config(task="sst2", max_train=16), options.model_copy(update={"save_model": True}),
                                  store)
        saved = StoreFiles(store_path).model(source_id)
        assert (saved / "config.json").exists()
        transfer = Trial(tiny_trial_config(init_from=str(source_id)), options, store_path)
        by_folder = Trial(tiny_trial_config(init_from=str(saved)), options)
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(saved)
    expected = dict(encoder.named_parameters())["encoder.layer.2.output.dense.weight"]
    got = dict(transfer.model.named_parameters())["bert.encoder.layer.2.output.dense.weight"]
    assert torch.equal(expected, got)
    assert torch.equal(expected, dict(by_folder.model.named_parameters())["bert.encoder.layer.2.output.dense.weight"])
    fresh_head = Trial(tiny_trial_config(), options).model.classifier.weight
    assert torch.equal(transfer.model.classifier.weight, fresh_head)


def test_init_from_unknown_trial_is_a_clear_error(tiny_trial_config, options, tmp_path):
    from steadytune.storage.store import StoreError
    from steadytune.training.trial import resolve_init_from

    with pytest.raises(StoreError, match="no saved encoder"):
        resolve_init_from("7", tmp_path / "runs.db")
    with pytest.raises(StoreError, match="needs the store"):
        resolve_init_from("7", None)
    from steadytune.models.loading import ModelError

    with pytest.raises(ModelError, match="--init-from some/folder: not a trial id of the store nor a model folder"):
        resolve_init_from("some/folder", None)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "config.json").write_text("{}")
    assert resolve_init_from(str(tmp_path / "saved"), None) == str(tmp_path / "saved")


@pytest.mark.parametrize("model_type", ["roberta", "electra", "mpnet"])
def test_other_families_train_with_reinit_and_llrd(model_type, tmp_path, minilm_path, glue_dir, options):
    folder = make_tiny_model_dir(tmp_path, minilm_path, model_type, type_vocab_size=2)
    config = TrialConfig(task="rte", model=str(folder), glue_dir=str(glue_dir), max_train=16, batch_size=8,
                         max_length=48, epochs=1, evals_per_epoch=0, reinit_layers=1, llrd=0.9)
    outcome, _ = Trial(config, options).run(lambda points: None)
    assert outcome.status == "complete" and outcome.steps_done == 2


def test_stabilizers_turn_on_from_the_config_and_run_in_registry_order():
    from steadytune.stabilizers import REGISTRY, active_stabilizers

    assert active_stabilizers(TrialConfig()) == []
    every = TrialConfig(reinit_layers=2, noisytune=0.15, mixout=0.1, llrd=0.9, pretrained_wd=1e-3)
    assert [type(m).__name__ for m in active_stabilizers(every)] == ["ReInit", "NoisyTune", "Mixout",
                                                                      "LayerwiseLRDecay", "PretrainedWD"]
    by_name = {method.__name__: method for method in REGISTRY}
    assert [type(m) for m in active_stabilizers(TrialConfig(reinit_pooler=True, llrd=0.9))] == [
        by_name["ReInit"], by_name["LayerwiseLRDecay"]]
    assert [type(m) for m in active_stabilizers(TrialConfig(adapter="lora", llrd=0.9))] == [
        by_name["LoRA"], by_name["LayerwiseLRDecay"]]
