"""Layout of the supported encoder families and the layer-index convention."""
from __future__ import annotations

import math

import pytest
import torch
import transformers
from conftest import FAMILIES, TINY_SIZES, tiny_classifier
from torch import nn

from steadytune.models.architecture import UnsupportedArchitecture, encoder_layout, layer_index

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


def test_deberta_and_modernbert_layouts() -> None:
    deberta = encoder_layout(tiny("deberta-v2"))
    assert deberta.layer_prefixes == [f"deberta.encoder.layer.{k}." for k in range(3)]
    assert deberta.pooler_prefix == "pooler." and deberta.embeddings_prefix == "deberta.embeddings."
    assert layer_index(deberta, "deberta.encoder.rel_embeddings.weight") == 0
    assert layer_index(deberta, "deberta.encoder.LayerNorm.weight") == 0
    assert layer_index(deberta, "pooler.dense.weight") == 4
    modern = encoder_layout(tiny("modernbert"))
    assert modern.layer_prefixes == [f"model.layers.{k}." for k in range(3)]
    assert modern.pooler_prefix == "head." and modern.embeddings_prefix == "model.embeddings."
    assert layer_index(modern, "model.final_norm.weight") == 4 and layer_index(modern, "head.dense.weight") == 4
    # DeBERTa's token classifier has no pooler.
    tagger = transformers.DebertaV2ForTokenClassification(transformers.DebertaV2Config(**TINY_SIZES, num_labels=3))
    assert encoder_layout(tagger).pooler is None


@pytest.mark.parametrize("model_type", ["deberta-v2", "modernbert"])
def test_new_families_train_with_reinit_and_llrd(model_type, tmp_path, minilm_path, glue_dir, options):
    from conftest import make_tiny_model_dir

    from steadytune.config import TrialConfig
    from steadytune.training.trial import Trial

    extra = ({"pad_token_id": 0, "cls_token_id": 101, "bos_token_id": 101, "sep_token_id": 102, "eos_token_id": 102,
              "global_attn_every_n_layers": 2, "local_attention": 16} if model_type == "modernbert"
             else FAMILIES["deberta-v2"][2])
    folder = make_tiny_model_dir(tmp_path, minilm_path, model_type, **extra)
    config = TrialConfig(task="rte", model=str(folder), glue_dir=str(glue_dir), max_train=16, batch_size=8,
                         max_length=48, max_steps=2, evals_per_epoch=0, lr=1e-3, reinit_layers=1, reinit_pooler=True,
                         llrd=0.9)
    plain = Trial(config.model_copy(update={"reinit_layers": 0, "reinit_pooler": False, "llrd": None}), options)
    trial = Trial(config, options)
    layout = encoder_layout(trial.model)
    top = layout.layer_prefixes[-1]
    before = dict(plain.model.named_parameters())
    changed = {n for n, p in trial.model.named_parameters() if not torch.equal(p, before[n])}
    # Re-init redrew the top layer and the pooler (or ModernBERT's prediction head), nothing else.
    assert any(n.startswith(top) for n in changed) and any(n.startswith(layout.pooler_prefix) for n in changed)
    assert all(n.startswith((top, layout.pooler_prefix)) for n in changed)
    lrs = sorted({group["initial_lr"] for group in trial.optimizer.param_groups})
    assert len(lrs) == 5 and lrs[-1] == pytest.approx(1e-3)  # embeddings, 3 layers, top
    points = []
    outcome, pending = trial.run(points.extend)
    losses = [p.value for p in points + pending if p.split == "train" and p.metric == "loss"]
    assert outcome.status == "complete" and len(losses) == 2 and all(math.isfinite(v) for v in losses)
