"""Loss and metric of many parameter vectors on fixed data subsets, without rebuilding the model.

One model skeleton is kept; each parameter vector is swapped in through `torch.func.functional_call`,
and several vectors can go through one forward pass with `torch.func.vmap` (larger matrix products;
memory grows with the number of points). Batches are collated once, sorted by length, and reused for
every point, so only the forward passes cost. The loss is the model's own (mean cross-entropy, or MSE for
regression) averaged over examples, computed exactly as Hugging Face's heads do, so a point equal to a
model's parameters gives that model's evaluation loss bit for bit (with one point per pass): like the
trial's evaluation, the top layer runs for the first token only (see models/readout.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data.encoding import EncodedDataset, collate, length_sorted_batches
from ..data.metrics import compute_metrics
from ..data.tasks import TaskSpec
from ..models.readout import first_token_readout
from ..tagging.encoding import collate_tags
from ..tagging.heads import place_words, predicted_tags, tagging_loss
from .directions import Params


class LandscapeError(ValueError):
    """A landscape that cannot be computed from what was asked (missing parameters, missing runs)."""


def fixed_subset(data: EncodedDataset, size: int | None, seed: int) -> EncodedDataset:
    """`size` examples drawn once with `seed` (all of them when `size` is None or not smaller)."""
    if size is None or size >= len(data):
        return data
    return data.select(np.sort(np.random.default_rng(seed).choice(len(data), size, replace=False)))


class LandscapeEvaluator:
    def __init__(self, model: nn.Module, task: TaskSpec, splits: dict[str, EncodedDataset], pad_token_id: int,
                 batch_size: int, device: torch.device, points_per_pass: int = 1):
        self.model, self.task, self.device = model.to(device).eval(), task, device
        self.points_per_pass = points_per_pass
        self.names = [name for name, _ in model.named_parameters()]
        self.data, self.splits = splits, {}
        self.tagged_words: dict[str, list[np.ndarray]] = {}  # per tagging split, in batch order
        for split, data in splits.items():
            indices = length_sorted_batches(data, batch_size)
            if task.tagging:
                # The data in batch order, so that predictions line up with its labels and sentence offsets.
                data = data.select(np.concatenate(indices))
                indices = np.split(np.arange(len(data)), np.cumsum([len(chunk) for chunk in indices])[:-1])
                batches = [{k: v.to(device) for k, v in collate_tags(data, chunk, pad_token_id).items()}
                           for chunk in indices]
                self.splits[split] = (batches, data.labels, data.word_offsets, indices)
                self.tagged_words[split] = data.tagged_words
                continue
            batches = [{k: v.to(device) for k, v in collate(data, chunk, pad_token_id, task.is_regression).items()}
                       for chunk in indices]
            self.splits[split] = (batches, data.labels[np.concatenate(indices)], None, indices)

    def check(self, params: Params, where: str) -> None:
        """Refuse a parameter set that does not fit the skeleton (e.g. a checkpoint of another architecture)."""
        missing = sorted(set(self.names) - set(params))
        if missing:
            raise LandscapeError(f"{where} lacks parameters of the model ({', '.join(missing[:3])}, ...)")

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task.is_regression:
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.cross_entropy(logits.view(-1, self.task.num_labels), labels.view(-1))

    @torch.inference_mode()
    def _logits(self, points: list[Params], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if len(points) == 1:
            return functional_call(self.model, points[0], kwargs=inputs).logits[None]
        stacked = {n: torch.stack([p[n] for p in points]) for n in self.names}
        with warnings.catch_warnings():
            # vmap falls back to a loop over points for the fused attention kernel; it says so on every call.
            warnings.filterwarnings("ignore", message=".*have not yet implemented the batching rule")
            return vmap(lambda params: functional_call(self.model, params, kwargs=inputs).logits)(stacked)

    def __call__(self, points: list[Params]) -> list[dict[str, float]]:
        """Per point: `<split>_loss`, `<split>_metric` (the task's primary metric) and `<split>_error` (1 - metric)."""
        step = self.points_per_pass
        return [result for start in range(0, len(points), step) for result in self._evaluate(points[start:start + step])]

    def _evaluate(self, points: list[Params]) -> list[dict[str, float]]:
        points = [{n: p[n].to(self.device) for n in self.names} for p in points]
        results = [{} for _ in points]
        with first_token_readout(self.model):
            for split, (batches, labels, offsets, rows) in self.splits.items():
                evaluate = self._evaluate_tags if self.task.tagging else self._evaluate_split
                for result, values in zip(results, evaluate(points, batches, labels, split, offsets, rows)):
                    result.update(values)
        return results

    def _values(self, split: str, losses: np.ndarray, examples: int, metrics: list[float]) -> list[dict[str, float]]:
        return [{f"{split}_loss": loss / examples, f"{split}_metric": metric, f"{split}_error": 1.0 - metric}
                for loss, metric in zip(losses, metrics)]

    def _evaluate_tags(self, points: list[Params], batches: list[dict[str, torch.Tensor]], labels: np.ndarray,
                       split: str, offsets: np.ndarray, rows: list[np.ndarray]) -> list[dict[str, float]]:
        """Tagging: loss per sentence and the metric over words, the CRF's parameters taken from each point too."""
        losses = np.zeros(len(points))
        predictions = np.full((len(points), len(labels)), self.task.label_names.index("O"), dtype=np.int64)
        for batch, sentences in zip(batches, rows):
            logits = self._logits(points, batch).float()
            for k, point in enumerate(points):
                crf = {name.removeprefix("crf."): value for name, value in point.items() if name.startswith("crf.")}
                losses[k] += tagging_loss(self.model, logits[k], batch["labels"], crf).item() * len(sentences)
                tags, mask = predicted_tags(self.model, logits[k], batch["labels"], crf)
                place_words(predictions[k], offsets, self.tagged_words[split], sentences, tags, mask)
        metrics = [compute_metrics(self.task, predictions[k], labels, offsets)[self.task.metric]
                   for k in range(len(points))]
        return self._values(split, losses, len(offsets) - 1, metrics)

    def _evaluate_split(self, points: list[Params], batches: list[dict[str, torch.Tensor]], labels: np.ndarray,
                        split: str, offsets: None, rows: list[np.ndarray]) -> list[dict[str, float]]:
        losses, outputs = np.zeros(len(points)), []
        for batch in batches:
            logits = self._logits(points, batch).float()
            for k in range(len(points)):
                losses[k] += self._loss(logits[k], batch["labels"]).item() * len(batch["labels"])
            outputs.append(logits.squeeze(-1) if self.task.is_regression else logits.argmax(-1))
        predictions = torch.cat(outputs, dim=1).cpu().numpy()
        metrics = [compute_metrics(self.task, predictions[k], labels)[self.task.metric] for k in range(len(points))]
        return self._values(split, losses, len(labels), metrics)
