"""LoRA through peft in a real Trial: what trains, where the adapters' start comes from, reruns, refusals."""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from steadytune.config import TrialConfig
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.trial import Trial

LORA = dict(adapter="lora", lora_rank=4, lora_alpha=8.0)


def named(trial: Trial) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trial.model.named_parameters()}


def test_only_adapters_and_head_train_and_the_encoder_stays_pretrained(tiny_trial_config, options):
    plain = named(Trial(tiny_trial_config(), options))
    trial = Trial(tiny_trial_config(max_steps=3, **LORA), options)
    trainable = {name for name, p in trial.model.named_parameters() if p.requires_grad}
    # 3 layers x (query, value) x (A, B) adapters, and the classifier's weight and bias.
    assert trainable == {f"bert.encoder.layer.{k}.attention.self.{m}.lora_{ab}.default.weight"
                         for k in range(3) for m in ("query", "value") for ab in "AB"} | {"classifier.weight",
                                                                                          "classifier.bias"}
    a = trial.model.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight
    assert a.shape == (4, 32) and torch.all(trial.model.bert.encoder.layer[0].attention.self.query.lora_B[
        "default"].weight == 0)
    assert trial.model.bert.encoder.layer[0].attention.self.query.scaling["default"] == pytest.approx(8.0 / 4)
    trial.run(lambda points: None)
    after = named(trial)
    for name, value in plain.items():
        frozen = name.replace("query.weight", "query.base_layer.weight").replace("value.weight", "value.base_layer.weight")
        frozen = frozen.replace("query.bias", "query.base_layer.bias").replace("value.bias", "value.base_layer.bias")
        if not name.startswith("classifier."):
            assert torch.equal(after[frozen], value), name  # the pretrained encoder did not move
    assert not torch.equal(after["classifier.weight"], plain["classifier.weight"])
    moved = after["bert.encoder.layer[0]".replace("[0]", ".0") + ".attention.self.query.lora_B.default.weight"]
    assert moved.abs().sum() > 0  # B left 0: the adapters learn


def _adapter_a(config: TrialConfig, options) -> torch.Tensor:
    return Trial(config, options).model.bert.encoder.layer[1].attention.self.value.lora_A["default"].weight.detach()


def test_adapters_start_from_the_adapter_seed_alone(tiny_trial_config, options):
    base = _adapter_a(tiny_trial_config(wi_seed=1, **LORA), options)
    assert torch.equal(base, _adapter_a(tiny_trial_config(wi_seed=7, adapter_seed=1, **LORA), options))
    assert not torch.equal(base, _adapter_a(tiny_trial_config(wi_seed=1, adapter_seed=2, **LORA), options))
    # The draw is peft's rule (Kaiming-uniform with a = sqrt(5): bound 1/sqrt(fan_in)) from the seed's generator.
    expected = torch.empty(4, 32)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):  # layer 0 query, layer 0 value, layer 1 query come first in module order
        torch.nn.init.kaiming_uniform_(torch.empty(4, 32), a=math.sqrt(5), generator=generator)
    torch.nn.init.kaiming_uniform_(expected, a=math.sqrt(5), generator=generator)
    assert torch.equal(base, expected)
    # The head comes from the WI seed, whatever the adapter seed.
    heads = [Trial(tiny_trial_config(wi_seed=3, adapter_seed=s, **LORA), options).model.classifier.weight.detach()
             for s in (1, 2)]
    assert torch.equal(*heads)


def test_lora_trials_rerun_bit_identically(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(max_steps=4, evals_per_epoch=2, lora_dropout=0.1, **LORA)
    curves = []
    for name in ("a", "b"):
        with Store(tmp_path / f"{name}.db") as store:
            trial_id, _, _ = run_stored(config, options, store)
            curves.append(store.curves([trial_id])[["step", "split", "metric", "value"]])
    assert curves[0].equals(curves[1]) and len(curves[0]) > 4


def test_llrd_composes_with_adapters(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(llrd=0.5, **LORA), options)
    lr_of = {id(p): group["initial_lr"] for group in trial.optimizer.param_groups for p in group["params"]}
    params = dict(trial.model.named_parameters())
    assert lr_of[id(params["bert.encoder.layer.2.attention.self.query.lora_A.default.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.lora_A.default.weight"])] == pytest.approx(1.25e-4)
    assert id(params["bert.encoder.layer.0.attention.self.query.base_layer.weight"]) not in lr_of


@pytest.mark.parametrize("overrides, message", [
    (dict(adapter="lora", reinit_layers=1), "--reinit-layers"),
    (dict(adapter="lora", mixout=0.1), "--mixout"),
    (dict(adapter="lora", from_scratch=True), "--from-scratch"),
    (dict(lora_rank=4), "--lora-rank apply to --adapter lora"),
])
def test_options_that_cannot_go_with_adapters_are_refused_in_one_line(tiny_trial_config, overrides, message):
    with pytest.raises(ValidationError) as err:
        tiny_trial_config(**overrides)
    assert message in str(err.value)


def test_unknown_targets_are_one_line(tiny_trial_config, options):
    from steadytune.config import ConfigError

    with pytest.raises(ConfigError, match="--lora-targets: no Linear module named qkv"):
        Trial(tiny_trial_config(lora_targets="qkv", **LORA), options)


def test_adapter_fields_leave_other_trial_keys_unchanged(tiny_trial_config):
    plain = tiny_trial_config()
    assert plain.trial_key() == TrialConfig(**plain.model_dump()).trial_key()
    assert "adapter" not in plain.model_dump_json(exclude_defaults=True)
    assert tiny_trial_config(**LORA).trial_key() != plain.trial_key()


def test_landscapes_and_diagnostics_take_adapter_trials(tiny_trial_config, options, tmp_path):
    import numpy as np

    from steadytune.analysis import load_results
    from steadytune.analysis.gradients import diagnosis
    from steadytune.landscape.analyses import layer_curves, line
    from steadytune.landscape.sources import EvaluationSettings, TrialSnapshots

    config = tiny_trial_config(max_steps=4, **LORA)
    with Store(tmp_path / "s.db") as store:
        trial_id, _, _ = run_stored(config, options.model_copy(update={"save_checkpoints": 2, "log_grads_every": 1}),
                                    store)
        snapshots = TrialSnapshots.load(store, trial_id)
        settings = EvaluationSettings(16, 16, 0, 8, 1, options)
        frame = line(store, snapshots, np.array([0.0, 1.0]), settings)
        _, rollback = layer_curves(store, snapshots, np.array([0.0, 1.0]), settings)
    assert frame["train_loss"].notna().all() and len(frame) == 2
    # Rolling every group back leaves the adapters at their start (B = 0): the pretrained encoder plus the head.
    assert rollback.set_index("group").loc["all", "delta_train_loss"] != 0
    assert set(rollback["group"]) >= {"low", "middle", "high"}
    table = diagnosis(load_results(tmp_path / "s.db"))
    parts = load_results(tmp_path / "s.db").curves.query("split == 'diag'")["metric"].unique()
    assert "grad.embeddings" not in parts and "grad.layer_1" in parts  # frozen parts are not diagnosed
    assert len(table) == 1


def test_a_study_crosses_adapter_seeds_with_data_orders(tiny_bert_dir, glue_dir, tmp_path):
    from typer.testing import CliRunner

    from steadytune.analysis import load_results
    from steadytune.cli import app

    store = tmp_path / "s.db"
    args = ["study", "run", "--tasks", "rte", "--wi-seeds", "1", "--do-seeds", "1-2", "--adapter-seeds", "1-2",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", "2", "--evals-per-epoch", "0", "--adapter", "lora", "--store",
            str(store), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = load_results(store)
    trials = results.trials
    assert sorted(zip(trials["cfg.adapter_seed"], trials["do_seed"])) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert trials["trial_key"].nunique() == 4 and trials["arm"].nunique() == 1  # one arm, four seed cells
    plan = CliRunner().invoke(app, ["study", "plan", *args[2:-4]])
    assert plan.exit_code == 0, plan.output
    assert "adapter" in plan.output
    from steadytune.reporting.report import build_report

    page = build_report(store, tmp_path / "report", "md").read_text()
    assert "adapter seed x DO" in page and "| adapter seed |" in page  # the adapter seed is the grid's factor
    refused = CliRunner().invoke(app, [*args[:-6], "--store", str(tmp_path / "t.db")])
    assert refused.exit_code == 2 and "--adapter-seed apply to --adapter lora" in refused.output


def test_random_landscape_directions_move_only_what_an_adapter_trial_trained(tiny_trial_config, options, tmp_path):
    import numpy as np

    from steadytune.landscape.analyses import surface
    from steadytune.landscape.sources import EvaluationSettings, TrialSnapshots

    with Store(tmp_path / "s.db") as store:
        trial_id, _, _ = run_stored(tiny_trial_config(max_steps=2, **LORA),
                                    options.model_copy(update={"save_checkpoints": 2}), store)
        snapshots = TrialSnapshots.load(store, trial_id)
        settings = EvaluationSettings(8, 8, 0, 8, 1, options)
        found = surface(store, snapshots, "random", None, 0, np.array([0.0, 1.0]), np.array([0.0]), settings)
    from steadytune.landscape.analyses import plane_for
    from steadytune.landscape.sources import build_evaluator

    # What surface() takes as frozen: the skeleton's parameters that do not train, i.e. all but adapters and head.
    skeleton = build_evaluator(snapshots.config, settings).model
    frozen = frozenset(n for n, p in skeleton.named_parameters() if not p.requires_grad)
    assert frozen == {n for n in snapshots.end() if ".lora_" not in n and not n.startswith("classifier.")}
    plane = plane_for("random", snapshots, None, 0, frozen)
    moved = {n for n, d in plane.d1.items() if d.abs().sum() > 0}
    assert moved and all(".lora_" in n or n.startswith("classifier.") for n in moved)
    assert len(found.cells) == 2 and found.cells["train_loss"].nunique() == 2


def test_save_model_is_refused_for_adapter_trials(tiny_trial_config, options):
    from steadytune.config import ConfigError

    with pytest.raises(ConfigError, match="keep its adapters with --keep-weights"):
        Trial(tiny_trial_config(**LORA), options.model_copy(update={"save_model": True}))
