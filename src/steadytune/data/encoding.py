"""Tokenize a dataset once per (tokenizer, max_length), cache it on disk, and pad batches dynamically.

The cache is a convenience, never a source of truth: an entry holds its own key and a checksum of its
arrays, and one that is unreadable, truncated, or made for other data is ignored and rebuilt. A cache
that cannot be written (read-only folder, full disk) only costs the tokenization next time.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import TextDataset


@dataclass(frozen=True, eq=False)
class EncodedDataset:
    """Unpadded token ids per example (int32), optional token type ids, and labels."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray
    cache_entry: tuple[str, str] | None = None  # (file name, checksum) of the cache entry it came from or went to

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, indices: Sequence[int]) -> EncodedDataset:
        types = None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices]
        return EncodedDataset([self.input_ids[i] for i in indices], types, self.labels[np.asarray(indices, dtype=np.int64)])


# Fingerprints by the sha256 of a fast tokenizer's serialization: canonicalizing that JSON (about 0.5 MB for a
# BERT vocabulary) cost more than a tiny trial's training, and every trial's data preparation asks twice.
_FINGERPRINTS: dict[str, str] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 identifying everything about a tokenizer that changes its output."""
    rest = {
        "class": type(tokenizer).__name__,
        "special_tokens": sorted(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)),
        "truncation_side": tokenizer.truncation_side,
        "model_input_names": list(tokenizer.model_input_names),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return _sha256_of({**rest, "state": sorted(tokenizer.get_vocab().items())})
    raw = backend.to_str()
    seen = hashlib.sha256((raw + _canonical(rest)).encode("utf-8")).hexdigest()
    if seen not in _FINGERPRINTS:
        state = json.loads(raw)
        # Calling the tokenizer rewrites these to the last call's settings; they are not part of its identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        _FINGERPRINTS[seen] = _sha256_of({**rest, "state": state})
    return _FINGERPRINTS[seen]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _sha256_of(identity: dict) -> str:
    return hashlib.sha256(_canonical(identity).encode("utf-8")).hexdigest()


def _tokenize(ds: TextDataset, tokenizer, max_length: int) -> dict[str, np.ndarray]:
    """Flat token ids (+ token type ids) of all examples and their offsets, ready to save."""
    with_types = "token_type_ids" in tokenizer.model_input_names
    batch = tokenizer(
        ds.text_a,
        ds.text_b,
        truncation="longest_first",
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=with_types,
    )
    offsets = np.zeros(len(batch["input_ids"]) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in batch["input_ids"]], out=offsets[1:])
    arrays = {"input_ids": _flatten(batch["input_ids"], np.int32), "offsets": offsets}
    if with_types:
        arrays["token_type_ids"] = _flatten(batch["token_type_ids"], np.int8)
    return arrays


def _flatten(rows: list[list[int]], dtype: type) -> np.ndarray:
    return np.fromiter((x for row in rows for x in row), dtype=dtype)


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    flat = flat.astype(np.int32, copy=False)
    return [flat[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in ("input_ids", "offsets", "token_type_ids"):
        if name in arrays:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    # Trials in other processes may read the same file: they must see either nothing or a complete file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read_cache(path: Path, key: str, examples: int, vocabulary: int,
                max_length: int) -> tuple[dict[str, np.ndarray], str] | None:
    """The cached arrays and their checksum if the entry is complete, made for `key`, intact, and holds what the
    tokenizer could have made (ids in its vocabulary, rows no longer than max_length); None otherwise, and the entry
    is rebuilt. A checksum the entry carries itself detects damage, not a crafted entry: ids of 10^6 failed a
    trial (the store's record of the checksum catches the rest, see `encode`)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {name: cached[name] for name in cached.files}
        offsets, ids = arrays["offsets"], arrays["input_ids"]
        types = arrays.get("token_type_ids", np.zeros_like(ids))
        checksum = str(arrays.pop("checksum"))
        valid = (str(arrays.pop("key")) == key and checksum == _checksum(arrays)
                 and offsets.ndim == 1 and len(offsets) == examples + 1 and offsets[0] == 0
                 and bool(np.all(np.diff(offsets) >= 0)) and offsets[-1] == len(ids)
                 and bool(np.all(np.diff(offsets) <= max_length)) and len(types) == len(ids)
                 and (len(ids) == 0 or (int(ids.min()) >= 0 and int(ids.max()) < vocabulary))
                 and (len(types) == 0 or (int(types.min()) >= 0 and int(types.max()) <= 1)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return (arrays, checksum) if valid else None


def _write_cache(path: Path, key: str, arrays: dict[str, np.ndarray], checksum: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(path, key=np.array(key), checksum=np.array(checksum), **arrays)
    except OSError:
        pass  # a cache that cannot be written costs the tokenization next time, never the trial


def encode(ds: TextDataset, tokenizer, max_length: int, cache_dir: Path | None,
           recorded: Mapping[str, str] | None = None) -> EncodedDataset:
    """Token ids of every example, truncated to `max_length`; reused from `cache_dir` when present there.

    An entry is named by the hash of its inputs (the data's content, the tokenizer's fingerprint, max_length).
    `recorded`: the checksums a store recorded for entries when its trials first used them; an entry that no longer
    matches its record was changed since, and is rebuilt."""
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    path = cached = None
    if cache_dir is not None:
        key = f"{ds.content_hash()}|{tokenizer_fingerprint(tokenizer)}|{max_length}"
        path = Path(cache_dir) / f"enc-{hashlib.sha256(key.encode()).hexdigest()}.npz"
        cached = _read_cache(path, key, len(ds), len(tokenizer), max_length) if path.is_file() else None
        if cached is not None and cached[1] != (recorded or {}).get(path.name, cached[1]):
            cached = None  # changed since a trial of the store first used it
    if cached is None:
        arrays = _tokenize(ds, tokenizer, max_length)
        checksum = _checksum(arrays)
        if path is not None:
            _write_cache(path, key, arrays, checksum)
    else:
        arrays, checksum = cached
    offsets = arrays["offsets"]
    types = arrays.get("token_type_ids")
    return EncodedDataset(_unflatten(arrays["input_ids"], offsets),
                          None if types is None else _unflatten(types, offsets), ds.labels,
                          None if path is None else (path.name, checksum))


def length_sorted_batches(examples: EncodedDataset, batch_size: int) -> list[np.ndarray]:
    """Example indices in batches of `batch_size`, shortest first, so each batch pads as little as possible."""
    order = np.argsort(examples.lengths, kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def collate(examples: EncodedDataset, indices: Sequence[int], pad_token_id: int, regression: bool) -> dict[str, torch.Tensor]:
    """A batch padded to its longest example: input_ids, attention_mask, token_type_ids (if any), labels."""
    if len(indices) == 0:
        raise ValueError("cannot collate an empty batch")
    rows = [examples.input_ids[i] for i in indices]
    width = max(len(row) for row in rows)
    input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = row
        attention_mask[r, : len(row)] = 1
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if examples.token_type_ids is not None:
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(indices):
            token_type_ids[r, : len(examples.token_type_ids[i])] = examples.token_type_ids[i]
        batch["token_type_ids"] = torch.from_numpy(token_type_ids)
    labels = examples.labels[np.asarray(indices, dtype=np.int64)]
    batch["labels"] = torch.from_numpy(labels.astype(np.float32 if regression else np.int64))
    return batch
