"""Param groups: exact layer-wise learning rates, weight-decay exclusions, one group per parameter."""
from __future__ import annotations

import re

import pytest
import torch
from conftest import tiny_classifier
from torch import nn

from steadytune.stabilizers.llrd import no_weight_decay, parameter_groups

LR, WD, ETA = 1e-3, 0.01, 0.9


def tiny(model_type: str) -> nn.Module:
    return tiny_classifier(model_type, num_hidden_layers=4)


def group_of(groups: list[dict], model: nn.Module) -> dict[str, dict]:
    """Parameter name -> its group, asserting that no parameter is in two groups."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    found: dict[str, dict] = {}
    for group in groups:
        for p in group["params"]:
            name = by_id[id(p)]
            assert name not in found, f"{name} in two groups"
            found[name] = group
    return found


def expected_bert_lr(name: str) -> float:
    """Written from the rule: head/pooler lr, layer k (0-based of 4) lr*eta^(4-k), embeddings lr*eta^5."""
    if name.startswith(("classifier.", "bert.pooler.")):
        return LR
    match = re.match(r"bert\.encoder\.layer\.(\d+)\.", name)
    if match:
        return LR * ETA ** (4 - int(match.group(1)))
    assert name.startswith("bert.embeddings."), name
    return LR * ETA ** 5


def test_bert_layerwise_learning_rates() -> None:
    model = tiny("bert")
    groups = parameter_groups(model, LR, WD, llrd=ETA)
    found = group_of(groups, model)
    assert set(found) == {name for name, _ in model.named_parameters()}
    for name, group in found.items():
        assert group["lr"] == pytest.approx(expected_bert_lr(name), rel=1e-12), name
    assert found["bert.encoder.layer.3.output.dense.weight"]["lr"] == pytest.approx(9e-4)
    assert found["bert.encoder.layer.0.output.dense.weight"]["lr"] == pytest.approx(6.561e-4)
    assert found["bert.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(5.9049e-4)
    assert found["bert.encoder.layer.2.attention.self.query.weight"]["name"] == "layer_2/decay"
    assert found["bert.encoder.layer.2.attention.self.query.bias"]["name"] == "layer_2/no_decay"
    assert found["bert.pooler.dense.weight"]["name"] == "pooler/decay"
    assert found["classifier.weight"]["name"] == "head/decay"
    assert [g["name"] for g in groups][:4] == ["embeddings/decay", "embeddings/no_decay", "layer_0/decay",
                                               "layer_0/no_decay"]


def test_decay_exclusions_bert() -> None:
    model = tiny("bert")
    for llrd in (None, ETA):
        for name, group in group_of(parameter_groups(model, LR, WD, llrd=llrd), model).items():
            excluded = name.endswith("bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if excluded else WD), name
            assert group["name"].endswith("/no_decay" if excluded else "/decay"), name


def test_without_llrd_everything_at_lr() -> None:
    model = tiny("bert")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    groups = parameter_groups(model, LR, WD)
    assert [g["name"] for g in groups] == ["all/decay", "all/no_decay"]
    assert all(g["lr"] == LR for g in groups)
    found = group_of(groups, model)
    assert set(found) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bert.embeddings.word_embeddings.weight" not in found


@pytest.mark.parametrize("model_type", ["roberta", "electra", "mpnet"])
def test_other_architectures(model_type: str) -> None:
    model = tiny(model_type)
    found = group_of(parameter_groups(model, LR, WD, llrd=ETA), model)
    assert set(found) == {name for name, _ in model.named_parameters()}
    for name, group in found.items():
        norm = "LayerNorm" in name or "layer_norm" in name
        assert group["weight_decay"] == (0.0 if norm or name.endswith(".bias") else WD), name
        if name.startswith("classifier."):
            assert group["lr"] == LR and group["name"].startswith("head/")
        if f"{model_type}.embeddings." in name:
            assert group["lr"] == pytest.approx(LR * ETA ** 5)
        match = re.search(r"encoder\.layer\.(\d+)\.", name)
        if match:
            assert group["lr"] == pytest.approx(LR * ETA ** (4 - int(match.group(1)))), name
    if model_type == "electra":
        assert found["electra.embeddings_project.weight"]["lr"] == pytest.approx(LR * ETA ** 5)
    if model_type == "mpnet":  # an embedding table despite "bias" in its name: decayed
        assert found["mpnet.encoder.relative_attention_bias.weight"]["weight_decay"] == WD


def test_albert() -> None:
    model = tiny("albert")
    with pytest.raises(ValueError, match="AlbertForSequenceClassification.*share one set of weights"):
        parameter_groups(model, LR, WD, llrd=ETA)
    excluded = no_weight_decay(model)
    assert "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight" in excluded
    assert "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight" not in excluded
    found = group_of(parameter_groups(model, LR, WD), model)
    assert set(found) == {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("eta", [0.0, -0.5, 1.5])
def test_invalid_decay_factor(eta: float) -> None:
    with pytest.raises(ValueError, match="layer-wise LR decay factor"):
        parameter_groups(tiny("bert"), LR, WD, llrd=eta)


def test_groups_feed_torch_optimizers() -> None:
    model = tiny("bert")
    optimizer = torch.optim.AdamW(parameter_groups(model, LR, WD, llrd=ETA))
    out = model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([1]))
    out.loss.backward()
    optimizer.step()
    assert {g["name"] for g in optimizer.param_groups} >= {"head/decay", "embeddings/no_decay"}
