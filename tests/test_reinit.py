"""Re-initialization of the top layers and pooler: statistics, isolation, determinism, refusals."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from steadytune.models.architecture import UnsupportedArchitecture
from steadytune.models.initialization import init_new_module
from steadytune.stabilizers.reinit import reinit_top_layers

STD = 0.02


def pretrained_like(model_type: str = "bert", **overrides) -> nn.Module:
    """A tiny model whose weights look nothing like a fresh init (std 0.1, nonzero biases, LayerNorm != 1)."""
    configs = {"bert": (transformers.BertConfig, transformers.BertForSequenceClassification, {}),
               "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification, {}),
               "albert": (transformers.AlbertConfig, transformers.AlbertForSequenceClassification,
                          {"embedding_size": 16})}
    config_cls, model_cls, extra = configs[model_type]
    sizes = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256, vocab_size=100,
                 max_position_embeddings=32, initializer_range=STD)
    model = model_cls(config_cls(**{**sizes, **extra, **overrides}))
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1 + 0.3)
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_top_layers_and_pooler_reinitialized_rest_untouched() -> None:
    model = pretrained_like()
    before = snapshot(model)
    names = reinit_top_layers(model, 2, True, torch.Generator().manual_seed(0))
    prefixes = ("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler.")
    assert set(names) == {n for n in before if n.startswith(prefixes)}
    for name, p in model.named_parameters():
        if name not in names:
            assert torch.equal(p, before[name]), name  # embeddings, layers 0-1, head: bit for bit
            continue
        assert not torch.equal(p, before[name]), name
        if "LayerNorm.weight" in name:
            assert torch.all(p == 1.0), name
        elif name.endswith("bias"):
            assert torch.all(p == 0.0), name
        else:
            n = p.numel()  # std of the sample std is STD / sqrt(2n): < 1.2% at n >= 4096
            assert p.std().item() == pytest.approx(STD, rel=0.05 if n >= 4096 else 0.15), name
            assert abs(p.mean().item()) < 5 * STD / n ** 0.5, name


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    a, b = pretrained_like(), pretrained_like()
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    reinit_top_layers(a, 3, True, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), rng_before)
    reinit_top_layers(b, 3, True, torch.Generator().manual_seed(7))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    c = pretrained_like()
    reinit_top_layers(c, 3, True, torch.Generator().manual_seed(8))
    assert not torch.equal(c.bert.encoder.layer[3].output.dense.weight, a.bert.encoder.layer[3].output.dense.weight)


def test_top_layer_draw_does_not_depend_on_how_many_layers() -> None:
    one, three = pretrained_like(), pretrained_like()
    reinit_top_layers(one, 1, True, torch.Generator().manual_seed(5))
    reinit_top_layers(three, 3, True, torch.Generator().manual_seed(5))
    assert torch.equal(one.bert.pooler.dense.weight, three.bert.pooler.dense.weight)
    assert torch.equal(one.bert.encoder.layer[3].intermediate.dense.weight,
                       three.bert.encoder.layer[3].intermediate.dense.weight)


def test_zero_layers_without_pooler_is_a_no_op() -> None:
    model = pretrained_like()
    before = snapshot(model)
    assert reinit_top_layers(model, 0, False, torch.Generator().manual_seed(0)) == []
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("num_layers", [5, -1])
def test_layer_count_out_of_range(num_layers: int) -> None:
    with pytest.raises(ValueError, match="4 transformer layers"):
        reinit_top_layers(pretrained_like(), num_layers, False, torch.Generator())


def test_albert_refuses_layers_but_reinitializes_pooler() -> None:
    model = pretrained_like("albert")
    with pytest.raises(ValueError, match="shares one set of weights"):
        reinit_top_layers(model, 1, False, torch.Generator())
    before = snapshot(model)
    names = reinit_top_layers(model, 0, True, torch.Generator().manual_seed(0))
    assert names == ["albert.pooler.weight", "albert.pooler.bias"]
    assert torch.all(model.albert.pooler.bias == 0)
    assert model.albert.pooler.weight.std().item() == pytest.approx(STD, rel=0.1)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if not n.startswith("albert.pooler."))


def test_architecture_without_pooler() -> None:
    model = pretrained_like("roberta")
    with pytest.raises(ValueError, match="RobertaForSequenceClassification has no pooler.*head"):
        reinit_top_layers(model, 1, True, torch.Generator())
    names = reinit_top_layers(model, 1, False, torch.Generator().manual_seed(0))
    assert names and all(n.startswith("roberta.encoder.layer.3.") for n in names)


def test_unsupported_architecture() -> None:
    distil = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, vocab_size=100))
    with pytest.raises(UnsupportedArchitecture, match="DistilBert"):
        reinit_top_layers(distil, 1, False, torch.Generator())


def test_init_new_module_head() -> None:
    head = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 3), nn.Embedding(50, 8, padding_idx=0))
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(0.7)
    rng_before = torch.get_rng_state()
    init_new_module(head, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert head[0].weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.all(head[0].bias == 0) and torch.all(head[2].bias == 0)
    assert torch.all(head[1].weight == 1) and torch.all(head[1].bias == 0)
    assert torch.all(head[3].weight[0] == 0) and head[3].weight[1:].std().item() == pytest.approx(0.05, rel=0.2)
    again = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 3), nn.Embedding(50, 8, padding_idx=0))
    init_new_module(again, 0.05, torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(head.parameters(), again.parameters()))


def test_init_new_module_refuses_uncovered_parameters() -> None:
    module = nn.Module()
    module.scale = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="scale"):
        init_new_module(module, 0.02, torch.Generator())
