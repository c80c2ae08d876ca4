"""Task metrics and mean loss of a model on a dataset, in length-sorted batches."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.encoding import EncodedDataset, collate, length_sorted_batches
from ..data.metrics import compute_metrics
from ..data.tasks import TaskSpec
from ..models.readout import first_token_readout
from ..tagging.encoding import EncodedTags, collate_tags
from ..tagging.heads import place_words, predicted_tags, tagging_forward


def evaluate(model: nn.Module, data: EncodedDataset, task: TaskSpec, batch_size: int, device: torch.device,
             pad_token_id: int) -> dict[str, float]:
    """Task metrics plus mean loss; the model's training mode is restored afterwards."""
    return evaluate_with_predictions(model, data, task, batch_size, device, pad_token_id)[0]


@torch.inference_mode()
def evaluate_with_predictions(model: nn.Module, data: EncodedDataset, task: TaskSpec, batch_size: int,
                              device: torch.device, pad_token_id: int) -> tuple[dict[str, float], np.ndarray]:
    """Task metrics plus mean loss, and the prediction for every example in dataset order (class ids, or
    regression values). The model's training mode is restored afterwards.

    Batches are sorted by length so padding is minimal, and the top layer runs for the first token only
    (see models/readout.py). A tagging task predicts one tag per word, sentence after sentence.
    """
    if task.tagging:
        return _evaluate_tags(model, data, task, batch_size, device, pad_token_id)
    was_training = model.training
    model.eval()
    predictions = np.empty(len(data), dtype=np.float32 if task.is_regression else np.int64)
    total_loss = 0.0
    with first_token_readout(model):
        for indices in length_sorted_batches(data, batch_size):
            batch = {k: v.to(device) for k, v in collate(data, indices, pad_token_id, task.is_regression).items()}
            out = model(**batch)
            total_loss += out.loss.item() * len(indices)
            logits = out.logits.float()
            predictions[indices] = (logits.squeeze(-1) if task.is_regression else logits.argmax(-1)).cpu().numpy()
    model.train(was_training)
    metrics = compute_metrics(task, predictions, data.labels)
    metrics["loss"] = total_loss / len(data)
    return metrics, predictions


@torch.inference_mode()
def _evaluate_tags(model: nn.Module, data: EncodedTags, task: TaskSpec, batch_size: int, device: torch.device,
                   pad_token_id: int) -> tuple[dict[str, float], np.ndarray]:
    """Entity-level metrics plus mean loss per sentence, and every word's predicted tag. Words without a piece
    (cut off by truncation, or tokenized to nothing) are predicted O."""
    was_training = model.training
    model.eval()
    offsets = data.word_offsets
    predictions = np.full(offsets[-1], task.label_names.index("O"), dtype=np.int64)
    total_loss = 0.0
    for indices in length_sorted_batches(data, batch_size):
        batch = {k: v.to(device) for k, v in collate_tags(data, indices, pad_token_id).items()}
        loss, logits = tagging_forward(model, batch)
        total_loss += loss.item() * len(indices)
        place_words(predictions, offsets, data.tagged_words, indices, *predicted_tags(model, logits, batch["labels"]))
    model.train(was_training)
    metrics = compute_metrics(task, predictions, data.labels, offsets)
    metrics["loss"] = total_loss / len(data)
    return metrics, predictions
