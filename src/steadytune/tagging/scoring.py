"""Entity-level precision, recall and F1 (seqeval, strict IOB2: an entity counts only with its exact span and
type, and an I- tag that starts nothing starts no entity), and token accuracy."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2


def tag_sequences(ids: np.ndarray, offsets: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """Flat tag ids (sentence after sentence) as one list of tag names per sentence."""
    return [[names[i] for i in ids[offsets[k]:offsets[k + 1]]] for k in range(len(offsets) - 1)]


def tagging_metrics(names: Sequence[str], predictions: np.ndarray, labels: np.ndarray,
                    offsets: np.ndarray) -> dict[str, float]:
    """f1, precision, recall (entity level) and token accuracy of flat per-word tag ids split at `offsets`."""
    predicted, gold = tag_sequences(predictions, offsets, names), tag_sequences(labels, offsets, names)
    options = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {"f1": float(f1_score(gold, predicted, **options)),
            "precision": float(precision_score(gold, predicted, **options)),
            "recall": float(recall_score(gold, predicted, **options)),
            "accuracy": float(np.mean(predictions == labels))}
