"""Where the parts of a ``*ForSequenceClassification`` encoder live.

The stabilizers (re-init, layer-wise LR decay, mixout, pre-trained weight decay) all need to
know which parameters are embeddings, which belong to transformer layer k, and which are the
pooler and the new task head. Hugging Face names these differently per architecture, so this
module is the single place that maps each supported architecture onto one :class:`EncoderLayout`.

Supported (``config.model_type``): ``bert`` (including MiniLM checkpoints, which are BERT),
``roberta``, ``electra``, ``mpnet``, ``albert``, ``deberta-v2`` (DeBERTa-v2 and -v3) and ``modernbert``.

Layer index convention (used by :func:`layer_index` and by layer-wise LR decay): ``0`` is the
embeddings, ``1..N`` the transformer layers bottom to top (``N = len(layout.layers)``; layer ``k``
is Hugging Face's ``encoder.layer.{k-1}``), and ``N + 1`` is the top: the pooler and the head.
Parameters outside the encoder that only feed the embeddings into the first layer (ELECTRA's
``embeddings_project``, ALBERT's ``embedding_hidden_mapping_in``) and MPNet's relative position
bias table (shared by all layers, positional like the embeddings) count as embeddings, as do DeBERTa's
relative position embeddings with their LayerNorm and its optional convolution after the first layer.
DeBERTa's pooler is the classifier's ContextPooler (absent from its token classifier). ModernBERT has no
pooler: its pretrained prediction head (dense, activation, norm, before the classifier) takes that
place, and its final norm over the last layer's output counts with the top.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("bert", "roberta", "electra", "mpnet", "albert", "deberta-v2", "modernbert")
# The attribute of the *ForSequenceClassification model that holds the encoder, where it is not the model type.
_BASE_ATTRIBUTE = {"deberta-v2": "deberta", "modernbert": "model"}


class UnsupportedArchitecture(ValueError):
    """The model is not a ``*ForSequenceClassification`` of a supported encoder family."""


@dataclass(frozen=True)
class EncoderLayout:
    """The parts of a sequence-classification encoder and their parameter-name prefixes.

    ``layers`` holds the distinct transformer layers bottom to top. For ALBERT
    (``shared_layers=True``) it holds the distinct *layer groups* (usually one), because every
    one of the ``num_hidden_layers`` layers reuses those weights.
    ``extra_embedding_prefixes`` names parameters outside ``embeddings`` that belong with them
    (see the module docstring); it is an addition to the agreed contract because three of the
    five architectures have such parameters and a single ``embeddings_prefix`` cannot cover them.
    """

    embeddings: nn.Module
    layers: list[nn.Module]
    pooler: nn.Module | None
    head: nn.Module
    layer_prefixes: list[str]
    embeddings_prefix: str
    pooler_prefix: str | None
    head_prefix: str | tuple[str, ...]  # a tagger with a CRF has two head modules: classifier and crf
    shared_layers: bool
    extra_embedding_prefixes: tuple[str, ...] = ()
    extra_top_prefixes: tuple[str, ...] = ()  # ModernBERT's final norm


def _unsupported(model: nn.Module, why: str) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(
        f"{type(model).__name__} is not supported ({why}); steadytune handles *ForSequenceClassification "
        f"and *ForTokenClassification models of type {', '.join(SUPPORTED_MODEL_TYPES)} (MiniLM checkpoints are bert)"
    )


def encoder_layout(model: nn.Module) -> EncoderLayout:
    """Return the :class:`EncoderLayout` of ``model`` or raise :class:`UnsupportedArchitecture`."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(model, f"model_type {model_type!r}")
    base = getattr(model, _BASE_ATTRIBUTE.get(model_type, model_type), None)
    head = getattr(model, "classifier", None)
    kind = type(model).__name__
    if not kind.endswith(("ForSequenceClassification", "ForTokenClassification")) or base is None or head is None:
        raise _unsupported(model, "not a sequence- or token-classification model with a 'classifier' head")

    names = {id(module): name for name, module in model.named_modules()}

    def prefix(module: nn.Module) -> str:
        return names[id(module)] + "."

    extras: list[nn.Module] = []
    tops: list[nn.Module] = []
    pooler = getattr(base, "pooler", None)
    if model_type == "albert":
        layers = list(base.encoder.albert_layer_groups)
        extras.append(base.encoder.embedding_hidden_mapping_in)
    elif model_type == "modernbert":
        layers = list(base.layers)
        tops.append(base.final_norm)
        pooler = getattr(model, "head", None)
    else:
        layers = list(base.encoder.layer)
    if model_type == "electra" and getattr(base, "embeddings_project", None) is not None:
        extras.append(base.embeddings_project)
    if model_type == "mpnet":
        extras.append(base.encoder.relative_attention_bias)
    if model_type == "deberta-v2":
        extras += [module for name in ("rel_embeddings", "LayerNorm", "conv")
                   if (module := getattr(base.encoder, name, None)) is not None]
        pooler = getattr(model, "pooler", None)

    return EncoderLayout(
        embeddings=base.embeddings,
        layers=layers,
        pooler=pooler,
        head=head,
        layer_prefixes=[prefix(layer) for layer in layers],
        embeddings_prefix=prefix(base.embeddings),
        pooler_prefix=prefix(pooler) if pooler is not None else None,
        head_prefix=(prefix(head), "crf.") if hasattr(model, "crf") else prefix(head),
        shared_layers=model_type == "albert",
        extra_embedding_prefixes=tuple(prefix(module) for module in extras),
        extra_top_prefixes=tuple(prefix(module) for module in tops),
    )


def layer_index(layout: EncoderLayout, param_name: str) -> int | None:
    """Depth of a parameter: 0 embeddings, 1..N transformer layers, N+1 pooler and head.

    ``param_name`` is a name from ``model.named_parameters()``. Returns ``None`` for a name
    that belongs to none of the parts (for the supported architectures no parameter does).
    """
    if param_name.startswith((layout.embeddings_prefix, *layout.extra_embedding_prefixes)):
        return 0
    for index, layer_prefix in enumerate(layout.layer_prefixes, start=1):
        if param_name.startswith(layer_prefix):
            return index
    heads = layout.head_prefix if isinstance(layout.head_prefix, tuple) else (layout.head_prefix,)
    top = heads + ((layout.pooler_prefix,) if layout.pooler_prefix else ()) + layout.extra_top_prefixes
    if param_name.startswith(top):
        return len(layout.layers) + 1
    return None
