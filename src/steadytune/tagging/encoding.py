"""Word tags aligned to word pieces, and padded batches of tagged sentences.

Each word's tag goes to its first word piece; its other pieces and the special tokens get -100, which the
loss ignores (Devlin et al.'s NER setup). Words cut off by --max-length have no piece, and so do words the
tokenizer reduces to nothing (a zero-width joiner, a variation selector, a soft hyphen: tweets carry them).
Evaluation predicts O for every word without a piece, so a truncated entity counts as missed rather than
vanishing from the score; predictions are placed by word id, so such a word never shifts its neighbours'.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from .conll import TaggedDataset

IGNORED = -100


@dataclass(frozen=True, eq=False)
class EncodedTags:
    """Per sentence: token ids (int32), token type ids, the tag id of each token (IGNORED where none), the gold
    tag of every word (truncated ones included), and the word index of each tagged token, in order."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    token_tags: list[np.ndarray]
    word_tags: list[np.ndarray]
    tagged_words: list[np.ndarray]
    pieceless: int = 0  # words the tokenizer gave no piece, truncation aside

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def labels(self) -> np.ndarray:
        """Every word's gold tag, sentence after sentence (the order predictions are stored in)."""
        return np.concatenate(self.word_tags) if self.word_tags else np.zeros(0, dtype=np.int64)

    @property
    def word_offsets(self) -> np.ndarray:
        """Where each sentence's words start in `labels` (one more entry: the total)."""
        offsets = np.zeros(len(self.word_tags) + 1, dtype=np.int64)
        np.cumsum([len(tags) for tags in self.word_tags], out=offsets[1:])
        return offsets

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, indices: Sequence[int]) -> EncodedTags:
        types = None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices]
        return EncodedTags([self.input_ids[i] for i in indices], types, [self.token_tags[i] for i in indices],
                           [self.word_tags[i] for i in indices], [self.tagged_words[i] for i in indices])


def encode_tags(ds: TaggedDataset, tokenizer, max_length: int) -> EncodedTags:
    """Word pieces of every sentence (truncated to `max_length`), with each word's tag on its first piece."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"tagging needs a fast (Rust) tokenizer to map word pieces to words; "
                        f"{type(tokenizer).__name__} is not one")
    with_types = "token_type_ids" in tokenizer.model_input_names
    batch = tokenizer(ds.words, is_split_into_words=True, truncation=True, max_length=max_length, padding=False,
                      return_attention_mask=False, return_token_type_ids=with_types)
    input_ids, token_tags, tagged_words, pieceless = [], [], [], 0
    for index, tags in enumerate(ds.tags):
        word_ids = batch.word_ids(index)
        aligned = np.full(len(word_ids), IGNORED, dtype=np.int64)
        firsts, previous = [], None
        for position, word in enumerate(word_ids):
            if word is not None and word != previous:
                aligned[position] = tags[word]
                firsts.append(word)
            previous = word
        # A word missing before the last word with a piece was not cut off by truncation: it has no piece at all.
        pieceless += (firsts[-1] + 1 - len(firsts)) if firsts else 0
        input_ids.append(np.asarray(batch["input_ids"][index], dtype=np.int32))
        token_tags.append(aligned)
        tagged_words.append(np.asarray(firsts, dtype=np.int64))
    types = [np.asarray(t, dtype=np.int32) for t in batch["token_type_ids"]] if with_types else None
    return EncodedTags(input_ids, types, token_tags, list(ds.tags), tagged_words, pieceless)


def collate_tags(data: EncodedTags, indices: Sequence[int], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch padded to its longest sentence: input_ids, attention_mask, token_type_ids (if any), and `labels`
    of shape (batch, tokens) with IGNORED on every position that carries no word's tag."""
    if len(indices) == 0:
        raise ValueError("cannot collate an empty batch")
    width = max(len(data.input_ids[i]) for i in indices)
    input_ids = np.full((len(indices), width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(indices), width), dtype=np.int64)
    labels = np.full((len(indices), width), IGNORED, dtype=np.int64)
    token_type_ids = np.zeros((len(indices), width), dtype=np.int64) if data.token_type_ids is not None else None
    for row, i in enumerate(indices):
        n = len(data.input_ids[i])
        input_ids[row, :n] = data.input_ids[i]
        attention_mask[row, :n] = 1
        labels[row, :n] = data.token_tags[i]
        if token_type_ids is not None:
            token_type_ids[row, :n] = data.token_type_ids[i]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if token_type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(token_type_ids)
    batch["labels"] = torch.from_numpy(labels)
    return batch
