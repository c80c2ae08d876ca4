"""Layout of the five supported encoder families and the layer-index convention."""
from __future__ import annotations

import pytest
import transformers
from torch import nn

from conftest import FAMILIES, TINY_SIZES, tiny_classifier
from steadytune.architecture import UnsupportedArchitecture, encoder_layout, layer_index

tiny = tiny_classifier


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_every_parameter_has_a_depth(model_type: str) -> None:
    model = tiny(model_type)
    layout = encoder_layout(model)
    top = len(layout.layers) + 1
    for name, _ in model.named_parameters():
        depth = layer_index(layout, name)
        assert depth is not None, name
        if name.startswith("classifier."):
            assert depth == top
        if ".embeddings." in name:
            assert depth == 0


@pytest.mark.parametrize(
    "model_type, pooler, shared, n_layers",
    [("bert", True, False, 3), ("roberta", False, False, 3), ("electra", False, False, 3),
     ("mpnet", False, False, 3), ("albert", True, True, 1)],
)
def test_layout_parts(model_type: str, pooler: bool, shared: bool, n_layers: int) -> None:
    model = tiny(model_type)
    layout = encoder_layout(model)
    assert (layout.pooler is not None) == pooler
    assert (layout.pooler_prefix is not None) == pooler
    assert layout.shared_layers is shared
    assert len(layout.layers) == len(layout.layer_prefixes) == n_layers
    assert layout.head is model.classifier and layout.head_prefix == "classifier."
    assert layout.embeddings_prefix == f"{model_type}.embeddings."
    modules = dict(model.named_modules())
    for prefix, layer in zip(layout.layer_prefixes, layout.layers):
        assert modules[prefix.rstrip(".")] is layer


def test_bert_indices_and_prefixes() -> None:
    model = tiny("bert", num_hidden_layers=4)
    layout = encoder_layout(model)
    assert layout.layer_prefixes == [f"bert.encoder.layer.{k}." for k in range(4)]
    assert layout.pooler_prefix == "bert.pooler."
    assert layer_index(layout, "bert.embeddings.word_embeddings.weight") == 0
    assert layer_index(layout, "bert.encoder.layer.0.attention.self.query.weight") == 1
    assert layer_index(layout, "bert.encoder.layer.3.output.LayerNorm.bias") == 4
    assert layer_index(layout, "bert.pooler.dense.weight") == 5
    assert layer_index(layout, "classifier.bias") == 5
    assert layer_index(layout, "something.else") is None


def test_layer_1_prefix_does_not_capture_layer_10() -> None:
    model = tiny("bert", hidden_size=8, intermediate_size=8, num_hidden_layers=11)
    layout = encoder_layout(model)
    assert layer_index(layout, "bert.encoder.layer.10.output.dense.weight") == 11
    assert layer_index(layout, "bert.encoder.layer.1.output.dense.weight") == 2


def test_parameters_outside_embeddings_module_count_as_embeddings() -> None:
    electra = encoder_layout(tiny("electra"))
    assert layer_index(electra, "electra.embeddings_project.weight") == 0
    mpnet = encoder_layout(tiny("mpnet"))
    assert layer_index(mpnet, "mpnet.encoder.relative_attention_bias.weight") == 0
    albert = encoder_layout(tiny("albert"))
    assert layer_index(albert, "albert.encoder.embedding_hidden_mapping_in.weight") == 0
    assert layer_index(albert, "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight") == 1
    assert layer_index(albert, "albert.pooler.weight") == 2


def test_unsupported_architectures() -> None:
    distil = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, vocab_size=100))
    with pytest.raises(UnsupportedArchitecture, match="DistilBertForSequenceClassification.*bert, roberta"):
        encoder_layout(distil)
    with pytest.raises(UnsupportedArchitecture, match="BertModel"):
        encoder_layout(transformers.BertModel(transformers.BertConfig(**TINY_SIZES)))
    with pytest.raises(ValueError, match="Linear"):
        encoder_layout(nn.Linear(2, 2))
