"""Training diagnostics, checkpoints along the trajectory, and training from scratch."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from steadytune.config import RunOptions
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.checkpoints import checkpoint_steps, list_checkpoints, load_checkpoint
from steadytune.training.diagnostics import PoolerProbe, gradient_norms, part_parameters, prediction_summary
from steadytune.training.layout import StoreFiles
from steadytune.training.trial import Trial


def test_parts_cover_every_parameter_once(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    parts = part_parameters(model)
    assert list(parts) == ["embeddings", "layer_1", "layer_2", "layer_3", "pooler", "head"]
    flat = [id(p) for params in parts.values() for p in params]
    assert sorted(flat) == sorted(id(p) for p in model.parameters())


def test_gradient_norms_per_part_combine_to_the_total(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    norms = gradient_norms(part_parameters(model))
    expected_layer_2 = math.sqrt(sum(p.grad.pow(2).sum().item() for n, p in model.named_parameters()
                                     if n.startswith("bert.encoder.layer.1.")))
    assert norms["grad.layer_2"] == pytest.approx(expected_layer_2, rel=1e-5)
    total = math.sqrt(sum(v ** 2 for v in norms.values()))
    assert total == pytest.approx(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item(), rel=1e-5)


def test_prediction_summary_detects_class_collapse():
    collapsed = torch.tensor([[2.0, -1.0]] * 8)
    assert prediction_summary(collapsed, False) == {"pred_mean": 0.0, "pred_top_share": 1.0}
    mixed = torch.tensor([[2.0, -1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert prediction_summary(mixed, False) == {"pred_mean": 0.75, "pred_top_share": 0.75}
    assert prediction_summary(torch.tensor([[1.0], [3.0]]), True) == {"pred_mean": 2.0}


def test_pooler_probe_measures_tanh_saturation(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()
    probe = PoolerProbe(model)
    assert probe.available
    ids = torch.randint(1000, 2000, (4, 12))
    model(input_ids=ids)
    assert probe.saturation() == {}  # not armed: nothing captured
    with torch.no_grad():
        model.bert.pooler.dense.weight.mul_(1000.0)  # drive every unit into saturation
    probe.armed = True
    model(input_ids=ids)
    assert probe.saturation()["pooler_saturation"] > 0.9
    with torch.no_grad():
        model.bert.pooler.dense.weight.zero_()
        model.bert.pooler.dense.bias.zero_()
    probe.armed = True
    model(input_ids=ids)
    assert probe.saturation()["pooler_saturation"] == 0.0


def test_trial_logs_diagnostics_every_k_steps(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(max_train=64, max_grad_norm=0.01)  # a tiny clip threshold: clipping always bites
    with Store(tmp_path / "runs.db") as store:
        trial_id, outcome, _ = run_stored(config, options.model_copy(update={"log_grads_every": 3}), store)
        diag = store.curves([trial_id]).query("split == 'diag'")
    assert outcome.total_steps == 8
    assert sorted(diag["step"].unique()) == [1, 4, 7]
    wide = diag.pivot_table(index="step", columns="metric", values="value")
    assert {"grad.embeddings", "grad.layer_1", "grad.layer_3", "grad.pooler", "grad.head", "grad.total",
            "grad.total_clipped", "pooler_saturation", "pred_mean", "pred_top_share"} <= set(wide.columns)
    parts = wide[[c for c in wide.columns if c.startswith("grad.") and not c.startswith("grad.total")]]
    assert ((parts ** 2).sum(axis=1) ** 0.5).to_numpy() == pytest.approx(wide["grad.total"].to_numpy(), rel=1e-4)
    assert wide["grad.total_clipped"].to_numpy() == pytest.approx(0.01, rel=1e-4)
    assert (wide["grad.total"] > 0.01).all()


def test_diagnostics_do_not_change_the_computation(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(max_train=48)
    curves = []
    for every in (0, 1):
        with Store(tmp_path / f"runs-{every}.db") as store:
            trial_id, _, _ = run_stored(config, options.model_copy(update={"log_grads_every": every}), store)
            curves.append(store.curves([trial_id]).query("split == 'train'").reset_index(drop=True))
    assert curves[0]["value"].tolist() == curves[1]["value"].tolist()


def test_checkpoints_are_evenly_spaced_and_hold_the_parameters(tiny_trial_config, options, tmp_path):
    assert checkpoint_steps(8, 3) == [0, 4, 8]
    assert checkpoint_steps(10, 4) == [0, 3, 7, 10]
    config = tiny_trial_config(max_train=64)
    store_path = tmp_path / "runs.db"
    trial = Trial(config, options.model_copy(update={"save_checkpoints": 3}), store_path)
    start = {n: p.detach().clone() for n, p in trial.model.named_parameters()}
    trial.run(lambda points: None)
    saved = list_checkpoints(StoreFiles(store_path).snapshots(config.trial_key()))
    assert list(saved) == [0, 4, 8]
    first, last = load_checkpoint(saved[0]), load_checkpoint(saved[8])
    assert set(first) == set(start)
    assert all(torch.equal(first[n], start[n]) for n in start)
    assert all(torch.equal(last[n], p) for n, p in trial.model.named_parameters())
    assert not torch.equal(first["classifier.weight"], last["classifier.weight"])


def test_checkpoints_need_a_store_and_at_least_two_snapshots(tiny_trial_config, options):
    from steadytune.storage.store import StoreError

    with pytest.raises(StoreError, match="needs one"):
        Trial(tiny_trial_config(), options.model_copy(update={"save_checkpoints": 2}))
    with pytest.raises(ValueError, match="at least 2"):
        RunOptions(save_checkpoints=1)


def test_from_scratch_draws_every_weight_from_the_wi_seed(tiny_trial_config, options, tiny_bert_dir):
    pretrained = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    scratch = [Trial(tiny_trial_config(from_scratch=True, wi_seed=seed), options).model for seed in (1, 1, 2)]
    name = "bert.encoder.layer.0.attention.self.query.weight"
    weights = [dict(m.named_parameters())[name] for m in scratch]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])
    assert not torch.equal(weights[0], dict(pretrained.named_parameters())[name])
    assert weights[0].std().item() == pytest.approx(pretrained.config.initializer_range, rel=0.1)
    assert tiny_trial_config(from_scratch=True).trial_key() != tiny_trial_config().trial_key()


def _synthetic_results(lower_scale_failed: float):
    """Two RTE runs with diagnostics: one ok, one failed whose lower layers' gradients fall by `lower_scale_failed`."""
    import pandas as pd

    from steadytune.analysis import build_results

    trials = pd.DataFrame({"id": [1, 2], "task": "rte", "recipe": None, "status": "complete", "wi_seed": [1, 2],
                           "do_seed": 1, "metric": "accuracy", "final_metric": [0.70, 0.47], "best_metric": [0.70, 0.5],
                           "baseline_metric": 0.5271, "total_steps": 100})
    rows = []
    for trial_id, drop in ((1, 1.0), (2, lower_scale_failed)):
        for step in range(1, 101, 10):
            fall = drop ** min(1.0, step / 20)  # reaches the full drop by step 20
            for part, base in (("embeddings", 0.1), ("layer_1", 0.1), ("layer_2", 0.2), ("layer_3", 0.3), ("head", 1.0)):
                lower = part in ("embeddings", "layer_1")
                rows.append((trial_id, step, step / 100, "diag", f"grad.{part}", base / fall if lower else base))
            rows.append((trial_id, step, step / 100, "diag", "pred_top_share", 1.0 if trial_id == 2 else 0.6))
            rows.append((trial_id, step, step / 100, "train", "loss", 0.69 if trial_id == 2 else 0.69 - step / 200))
        rows.append((trial_id, 100, 1.0, "dev", "accuracy", 0.70 if trial_id == 1 else 0.47))
    curves = pd.DataFrame(rows, columns=["trial_id", "step", "epoch", "split", "metric", "value"])
    return build_results(trials, curves)


def test_diagnosis_flags_vanishing_lower_layer_gradients_and_class_collapse():
    from steadytune.analysis.gradients import diagnosis, lower_parts

    assert lower_parts(["embeddings", "layer_1", "layer_2", "layer_3", "head"]) == ["embeddings", "layer_1"]
    table = diagnosis(_synthetic_results(1000.0)).set_index("id")
    assert table.loc[2, "collapse_ratio"] == pytest.approx(1000.0 ** (19 / 20), rel=1e-6)  # from step 1 to the floor
    assert bool(table.loc[2, "vanishing"]) and not bool(table.loc[1, "vanishing"])
    assert table.loc[2, "kind"] == "optimization" and table.loc[1, "kind"] == "ok"
    assert bool(table.loc[2, "class_collapse"]) and not bool(table.loc[1, "class_collapse"])
    mild = diagnosis(_synthetic_results(10.0)).set_index("id")
    assert not bool(mild.loc[2, "vanishing"])  # a 10x dip is not "orders of magnitude" at the default factor 100


def test_diagnose_command_prints_and_plots(tiny_trial_config, options, tmp_path):
    from typer.testing import CliRunner

    from steadytune.cli import app

    store_path = tmp_path / "runs.db"
    with Store(store_path) as store:
        trial_id, _, _ = run_stored(tiny_trial_config(max_train=48), options.model_copy(update={"log_grads_every": 2}), store)
    runner = CliRunner()
    result = runner.invoke(app, ["diagnose", str(store_path), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "runs failed" in result.output and (tmp_path / "d" / "gradient-norms.png").stat().st_size > 0
    result = runner.invoke(app, ["diagnose", str(store_path), str(trial_id), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / f"trial-{trial_id}.png").stat().st_size > 0
    result = runner.invoke(app, ["diagnose", str(store_path), "99"])
    assert result.exit_code == 2 and "no complete or diverged trial 99" in result.output


def test_class_collapse_is_judged_after_warmup_on_enough_logged_steps():
    """The first batches of any run are untrained: a one-class first batch is no collapse, and a 13-step trial
    logged at steps 1 and 11 has too few points after warmup to be judged at all."""
    import pandas as pd

    from steadytune.analysis import build_results
    from steadytune.analysis.gradients import diagnosis

    shares = {1: {1: 1.0, 11: 0.96},                                    # short: one logged step after warmup
              2: {s: (1.0 if s <= 10 else 0.6) for s in range(1, 101, 5)},   # one-class only during warmup
              3: {s: (0.6 if s <= 50 else 1.0) for s in range(1, 101, 5)}}   # collapses after warmup
    total = {1: 13, 2: 100, 3: 100}
    trials = pd.DataFrame({"id": [1, 2, 3], "task": "rte", "recipe": None, "status": "complete", "wi_seed": [1, 2, 3],
                           "do_seed": 1, "metric": "accuracy", "final_metric": 0.6, "best_metric": 0.6,
                           "baseline_metric": 0.5271, "total_steps": [total[k] for k in (1, 2, 3)],
                           "cfg.warmup": 0.1})
    curves = pd.DataFrame([(t, s, s / total[t], "diag", "pred_top_share", v) for t, by_step in shares.items()
                           for s, v in by_step.items()], columns=["trial_id", "step", "epoch", "split", "metric", "value"])
    table = diagnosis(build_results(trials, curves)).set_index("id")
    assert pd.isna(table.loc[1, "top_class_share_end"]) and not bool(table.loc[1, "class_collapse"])
    assert table.loc[2, "top_class_share_end"] == pytest.approx(0.6) and not bool(table.loc[2, "class_collapse"])
    assert table.loc[3, "top_class_share_end"] == pytest.approx(1.0) and bool(table.loc[3, "class_collapse"])
