"""--eval-precision int8: a dynamically quantized twin evaluates; the trained model and training stay fp32."""
from __future__ import annotations

import copy

import pytest
import torch

from steadytune.config import ConfigError, RunOptions, TrialConfig, build_config
from steadytune.data.encoding import collate
from steadytune.models.quantization import Int8Twin, quantized_engine
from steadytune.training.evaluation import evaluate
from steadytune.training.trial import Trial


def dev_metrics(trial: Trial, precision: str) -> dict[str, float]:
    model = Int8Twin(trial.model).refresh() if precision == "int8" else trial.model
    return evaluate(model, trial.inputs.dev, trial.task, 128, trial.device, trial.pad_token_id)


def test_default_is_fp32_and_precision_is_part_of_the_trial_key():
    assert TrialConfig().eval_precision == "fp32"
    assert TrialConfig(eval_precision="int8").trial_key() != TrialConfig().trial_key()
    assert build_config({"eval_precision": "int8"}).eval_precision == "int8"
    with pytest.raises(ConfigError, match="--eval-precision"):
        build_config({"eval_precision": "int4"})


def test_int8_is_refused_off_cpu(tiny_trial_config, tmp_path):
    # Refused before anything is loaded, so this runs without a GPU.
    with pytest.raises(ConfigError, match="CPU only"):
        Trial(tiny_trial_config(eval_precision="int8"), RunOptions(device="cuda", cache_dir=tmp_path))


def test_int8_metrics_are_close_to_fp32_but_not_identical(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(), options)
    fp32, int8 = dev_metrics(trial, "fp32"), dev_metrics(trial, "int8")
    assert int8 == dev_metrics(trial, "int8")  # deterministic, like every other result
    assert int8["loss"] != fp32["loss"]  # it really evaluated a quantized model
    # Cross-entropy moves by at most 2 x the largest logit change; int8 changes this model's logits (|z| ~ 0.02)
    # by at most ~6e-4 (measured), so 1e-3 on the mean loss holds with margin (measured: 4e-6) yet is far below
    # the loss itself. At most 3 of 277 dev predictions may flip (none did when measured).
    assert abs(int8["loss"] - fp32["loss"]) < 1e-3
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 3 / len(trial.inputs.dev) + 1e-12

    # The logits themselves: int8 rounds each weight to 1/254 of its tensor's largest one (and activations
    # per batch to 8 bits), which through 3 layers and the head measured 1.4% relative error; < 5% allowed.
    batch = collate(trial.inputs.dev, list(range(64)), trial.pad_token_id, trial.task.is_regression)
    quantized = Int8Twin(trial.model).refresh()
    trial.model.eval()
    with torch.inference_mode():
        z, zq = trial.model(**batch).logits, quantized(**batch).logits
    relative = ((zq - z).norm() / z.norm()).item()
    assert 0 < relative < 0.05


def test_int8_evaluation_leaves_the_trained_model_untouched(tiny_trial_config, options):
    trial = Trial(tiny_trial_config(), options)
    trial.model.train()  # as during Trial.run, where evaluations happen
    before = {name: p.detach().clone() for name, p in trial.model.state_dict().items()}
    linears = [name for name, m in trial.model.named_modules() if type(m) is torch.nn.Linear]
    engine = torch.backends.quantized.engine
    dev_metrics(trial, "int8")
    assert torch.backends.quantized.engine == engine  # the quantization engine is only borrowed
    assert trial.model.training
    assert linears == [name for name, m in trial.model.named_modules() if type(m) is torch.nn.Linear]
    after = trial.model.state_dict()
    assert before.keys() == after.keys()
    assert all(after[name].dtype == torch.float32 and torch.equal(after[name], value) for name, value in before.items()
               if value.is_floating_point())


def test_training_is_bit_identical_and_only_dev_points_change(tiny_trial_config, options):
    """A whole trial with int8 evaluation: same training curve and weights as fp32, slightly different dev points."""
    runs = {}
    for precision in ("fp32", "int8"):
        trial = Trial(tiny_trial_config(max_train=24, evals_per_epoch=1, eval_precision=precision), options)
        collected = []
        outcome, pending = trial.run(collected.extend)
        runs[precision] = (trial, outcome, collected + pending)
    (fp32_trial, fp32_outcome, fp32_points), (int8_trial, int8_outcome, int8_points) = runs["fp32"], runs["int8"]
    assert [p for p in fp32_points if p.split == "train"] == [p for p in int8_points if p.split == "train"]
    for name, value in fp32_trial.model.state_dict().items():
        assert torch.equal(value, int8_trial.model.state_dict()[name])
    assert fp32_outcome.final_metrics["loss"] != int8_outcome.final_metrics["loss"]
    assert int8_outcome.final_metrics["loss"] == pytest.approx(fp32_outcome.final_metrics["loss"], abs=1e-3)


def test_the_twin_follows_training_and_equals_a_fresh_quantization(tiny_trial_config, options):
    """Built once, refreshed per evaluation: after training it equals quantizing the trained model from scratch."""
    trial = Trial(tiny_trial_config(max_train=16), options)
    twin = Int8Twin(trial.model)
    batch = collate(trial.inputs.dev, list(range(32)), trial.pad_token_id, trial.task.is_regression)
    with torch.inference_mode():
        before = twin.refresh()(**batch).logits
    trial.run(lambda points: None)
    with quantized_engine():
        fresh = torch.ao.quantization.quantize_dynamic(copy.deepcopy(trial.model), {torch.nn.Linear},
                                                       dtype=torch.qint8).eval()
    with torch.inference_mode():
        after, expected = twin.refresh()(**batch).logits, fresh(**batch).logits
    assert not torch.equal(after, before)  # training moved the weights, and the twin followed
    assert torch.equal(after, expected)
    # Everything but the Linear layers is the model's own tensor, not a copy.
    model_tensors = {name: t.data_ptr() for name, t in trial.model.state_dict().items()}
    shared = [name for name, t in twin.model.state_dict().items()
              if isinstance(t, torch.Tensor) and model_tensors.get(name) == t.data_ptr()]
    assert "bert.embeddings.word_embeddings.weight" in shared
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in shared
    assert len(twin.pairs) == sum(type(m) is torch.nn.Linear for m in trial.model.modules()) == 3 * 6 + 2
