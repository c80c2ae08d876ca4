"""K BERT-family sequence classifiers that differ only in their weights, as one model whose parameters are stacked
along a leading K dimension.

Every matrix product is one batched product over K (baddbmm / matmul on [K, ...] tensors), so a pack of K seeds
costs one pass of larger kernels instead of K passes of small ones. The forward is Hugging Face's BERT forward
(embeddings, post-LayerNorm layers, pooler, dropout, linear head), written out so that the dropout masks can come
from one generator per seed: seed k draws exactly the masks, of exactly the shapes, that its single trial draws
from the global RNG (F.dropout draws `bernoulli_(1 - p)` on a tensor of the activation's shape), in the same order.
Its batch is padded to the pack's longest batch; padded positions are masked out of attention and never read,
so they change nothing but rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

PACKED_MODEL_TYPES = ("bert",)  # MiniLM-L6 is a BERT; RoBERTa and ELECTRA differ in their embeddings


class NotPackable(ValueError):
    """A model the packed forward does not implement; the message says why, in one line."""


def packable(model: nn.Module) -> str | None:
    """Why this model cannot be packed, or None."""
    config = model.config
    if config.model_type not in PACKED_MODEL_TYPES:
        return f"packing covers {', '.join(PACKED_MODEL_TYPES)} models; {config.model_type} runs unpacked"
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return f"packing covers sequence classifiers; {type(model).__name__} runs unpacked"
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or config.is_decoder:
        return "packing covers encoders with absolute positions"
    return None


def model_refusal(model_name: str) -> str | None:
    """Why a model of this name cannot be packed, read from its config alone (or None)."""
    from transformers import AutoConfig

    from ..models.loading import resolve_model

    model_type = AutoConfig.from_pretrained(resolve_model(model_name)).model_type
    if model_type not in PACKED_MODEL_TYPES:
        return f"packing covers {', '.join(PACKED_MODEL_TYPES)} models; {model_type} runs unpacked"
    return None


@dataclass(frozen=True)
class PackedOutput:
    loss: torch.Tensor | None  # [K]: each seed's mean loss over its batch
    logits: torch.Tensor       # [K, B, labels]
    pooled: torch.Tensor       # [K, B, hidden]: the pooler's tanh activations (diagnostics)


def _key(name: str) -> str:
    return name.replace(".", "__")


class PackedClassifier(nn.Module):
    """Stacked copies of K Hugging Face BERT sequence classifiers of one architecture."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        reasons = {packable(model) for model in models} - {None}
        if reasons:
            raise NotPackable(sorted(reasons)[0])
        names = [name for name, _ in models[0].named_parameters()]
        if any([name for name, _ in model.named_parameters()] != names for model in models[1:]):
            raise NotPackable("the models of a pack must share one architecture")
        self.config = models[0].config
        self.names = names
        self.stacked = nn.ParameterDict({
            _key(name): nn.Parameter(torch.stack([dict(model.named_parameters())[name].detach() for model in models]))
            for name in names})
        self.num_labels = models[0].num_labels
        self.regression = models[0].config.problem_type == "regression"
        self.prefix = models[0].base_model_prefix  # "bert"
        self.act = ACT2FN[self.config.hidden_act]
        self.heads = self.config.num_attention_heads
        self.head_size = self.config.hidden_size // self.heads
        self.eps = self.config.layer_norm_eps
        self.hidden_p = self.config.hidden_dropout_prob
        self.attention_p = self.config.attention_probs_dropout_prob
        classifier_p = getattr(self.config, "classifier_dropout", None)
        self.classifier_p = self.hidden_p if classifier_p is None else classifier_p

    @property
    def size(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def weight(self, name: str) -> torch.Tensor:
        return self.stacked[_key(name)]

    def keep_seeds(self, index: torch.Tensor) -> None:
        """Keep only these seeds' slices (new parameters: an optimizer over the old ones must be rebuilt)."""
        for name in self.names:
            self.stacked[_key(name)] = nn.Parameter(self.weight(name).detach()[index].clone())

    def named_seed_grads(self) -> dict[str, torch.Tensor]:
        return {name: self.weight(name).grad for name in self.names}

    # --- pieces ------------------------------------------------------------------------------------------
    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [K, ..., in] -> [K, ..., out], one batched product over K."""
        weight, bias = self.weight(f"{name}.weight"), self.weight(f"{name}.bias")
        k, *middle, width = x.shape
        flat = torch.baddbmm(bias.unsqueeze(1), x.reshape(k, -1, width), weight.transpose(1, 2))
        return flat.view(k, *middle, weight.shape[1])

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        weight, bias = self.weight(f"{name}.weight"), self.weight(f"{name}.bias")
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return torch.addcmul(bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=self.eps), weight.view(shape))

    def _dropout(self, x: torch.Tensor, p: float, generators: list[torch.Generator] | None,
                 shapes: list[tuple[int, int]] | None, token_dims: tuple[int, ...]) -> torch.Tensor:
        """F.dropout's masks, drawn per seed from its generator at the shape its own batch has: x is
        [K, B, ...]; seed k's rows are cut to its batch size and the `token_dims` (counted after B) to its length,
        and its mask is zero beyond them."""
        if generators is None or p == 0:
            return x
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous: draws fill it in order
        full = tuple(x.shape[2:])
        for k, (generator, (rows, length)) in enumerate(zip(generators, shapes)):
            own = tuple(length if d in token_dims else size for d, size in enumerate(full))
            if rows == x.shape[1] and own == full:  # its batch fills the slice: drawn in place, in the same order
                noise[k].bernoulli_(1 - p, generator=generator)
                continue
            noise[k].zero_()
            index = (k, slice(0, rows)) + tuple(slice(0, size) for size in own)
            noise[index] = torch.empty((rows, *own), dtype=x.dtype, device=x.device).bernoulli_(1 - p,
                                                                                               generator=generator)
        return x * noise.div_(1 - p)

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, generators: list[torch.Generator] | None = None,
                shapes: list[tuple[int, int]] | None = None) -> PackedOutput:
        """Inputs [K, B, L]: seed k's batch of shapes[k] = (rows, length) padded to B x L (padded rows have no
        attended token and label -100). With `generators` (one per seed) dropout is on, as in training; without,
        it is off, as in evaluation. The loss of seed k is the mean over its own rows."""
        k, batch, length = input_ids.shape
        if generators is not None and (len(generators) != k or shapes is None or len(shapes) != k):
            raise ValueError("training needs one generator and one batch shape per seed")
        p = f"{self.prefix}.embeddings"
        flat = (input_ids + torch.arange(k, device=input_ids.device).view(k, 1, 1) * self.config.vocab_size)
        words = self.weight(f"{p}.word_embeddings.weight").reshape(-1, self.config.hidden_size)[flat]
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        type_table = self.weight(f"{p}.token_type_embeddings.weight")
        types = type_table.reshape(-1, self.config.hidden_size)[
            types + torch.arange(k, device=input_ids.device).view(k, 1, 1) * type_table.shape[1]]
        positions = self.weight(f"{p}.position_embeddings.weight")[:, :length].unsqueeze(1)
        hidden = self._layer_norm(words + types + positions, f"{p}.LayerNorm")
        hidden = self._dropout(hidden, self.hidden_p, generators, shapes, (0,))
        # Hugging Face's additive mask: 0 where attended, the dtype's minimum where padded.
        additive = ((1.0 - attention_mask[:, :, None, None, :].to(hidden.dtype))
                    * torch.finfo(hidden.dtype).min)
        top = self.config.num_hidden_layers - 1
        for layer in range(self.config.num_hidden_layers):
            # In evaluation the head reads token 0 alone, so the top layer runs for it alone (models/readout.py's rule).
            hidden = self._layer(hidden, additive, f"{self.prefix}.encoder.layer.{layer}", generators, shapes,
                                 first_only=generators is None and layer == top)
        pooled = torch.tanh(self._linear(hidden[:, :, 0], f"{self.prefix}.pooler.dense"))
        logits = self._linear(self._dropout(pooled, self.classifier_p, generators, shapes, ()), "classifier")
        loss = None if labels is None else self._loss(logits, labels)
        return PackedOutput(loss, logits, pooled.detach())

    def _layer(self, hidden: torch.Tensor, additive: torch.Tensor, name: str, generators, shapes,
               first_only: bool = False) -> torch.Tensor:
        k, batch, length, width = hidden.shape
        queries = hidden[:, :, :1] if first_only else hidden

        def heads(x: torch.Tensor) -> torch.Tensor:  # [K, B, L, H] -> [K, B, heads, L, head size]
            return x.reshape(k, batch, x.shape[2], self.heads, self.head_size).transpose(2, 3)

        query = heads(self._linear(queries, f"{name}.attention.self.query"))
        key = heads(self._linear(hidden, f"{name}.attention.self.key"))
        value = heads(self._linear(hidden, f"{name}.attention.self.value"))
        if generators is None:  # no dropout: the fused kernel, over K x B sequences
            context = F.scaled_dot_product_attention(
                query.flatten(0, 1), key.flatten(0, 1), value.flatten(0, 1), attn_mask=additive.flatten(0, 1),
                scale=self.head_size ** -0.5).view(k, batch, self.heads, queries.shape[2], self.head_size)
        else:
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.head_size ** -0.5 + additive
            probs = self._dropout(scores.softmax(dim=-1), self.attention_p, generators, shapes, (1, 2))
            context = torch.matmul(probs, value)
        context = context.transpose(2, 3).reshape(k, batch, queries.shape[2], width)
        attended = self._dropout(self._linear(context, f"{name}.attention.output.dense"), self.hidden_p, generators,
                                 shapes, (0,))
        attended = self._layer_norm(attended + queries, f"{name}.attention.output.LayerNorm")
        inner = self.act(self._linear(attended, f"{name}.intermediate.dense"))
        out = self._dropout(self._linear(inner, f"{name}.output.dense"), self.hidden_p, generators, shapes, (0,))
        return self._layer_norm(out + attended, f"{name}.output.LayerNorm")

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each seed's mean loss over its own rows (labels -100 mark padded rows): Hugging Face's CrossEntropyLoss,
        or MSELoss for regression."""
        real = labels != -100
        if self.regression:
            per_row = (logits.squeeze(-1) - labels.to(logits.dtype)) ** 2
        else:
            k, batch, classes = logits.shape
            per_row = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1).long(), reduction="none",
                                      ignore_index=-100).view(k, batch)
        return (per_row * real).sum(dim=1) / real.sum(dim=1)
