"""Tokenization with the real MiniLM tokenizer: truncation, the on-disk cache, and dynamic padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steadytune.data import encoding
from steadytune.data.datasets import TextDataset, load_glue, subsample
from steadytune.data.encoding import EncodedDataset, collate, encode, tokenizer_fingerprint
from steadytune.data.tasks import get_task


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def rte(glue_dir) -> TextDataset:
    return subsample(load_glue(glue_dir, get_task("rte"), "dev"), 40, seed=0)


def test_pair_truncation_and_lengths(tokenizer, rte):
    enc = encode(rte, tokenizer, max_length=32, cache_dir=None)
    assert len(enc) == len(rte) and enc.labels is rte.labels
    assert enc.lengths.max() == 32 and np.all(enc.lengths <= 32)
    assert all(ids.dtype == np.int32 for ids in enc.input_ids)
    i = int(np.argmax(encode(rte, tokenizer, max_length=512, cache_dir=None).lengths))
    assert enc.input_ids[i][0] == tokenizer.cls_token_id and enc.input_ids[i][-1] == tokenizer.sep_token_id
    expected = tokenizer(rte.text_a[i], rte.text_b[i], truncation="longest_first", max_length=32)["input_ids"]
    assert enc.input_ids[i].tolist() == expected


def test_longest_first_cuts_the_longer_text(tokenizer):
    ds = TextDataset(["word " * 50, "tiny"], ["short text", "long " * 50], np.array([0, 1]), "mem")
    enc = encode(ds, tokenizer, max_length=16, cache_dir=None)
    assert enc.lengths.tolist() == [16, 16]
    # [CLS] 11 x word [SEP] short text [SEP]: the short second text survives intact.
    assert enc.token_type_ids[0].tolist() == [0] * 13 + [1] * 3
    assert tokenizer.decode(enc.input_ids[0][enc.token_type_ids[0] == 1]) == "short text [SEP]"
    assert enc.token_type_ids[1].tolist() == [0] * 3 + [1] * 13  # [CLS] tiny [SEP] 12 x long [SEP]


def test_single_sentence(tokenizer):
    ds = TextDataset(["a short one", "word " * 100], None, np.array([0, 1]), "mem")
    enc = encode(ds, tokenizer, max_length=16, cache_dir=None)
    assert enc.lengths.tolist() == [5, 16]
    assert all(np.all(t == 0) for t in enc.token_type_ids)


def test_tokenizer_without_token_types(minilm_path, rte):
    from transformers import AutoTokenizer

    roberta_like = AutoTokenizer.from_pretrained(minilm_path, model_input_names=["input_ids", "attention_mask"])
    enc = encode(rte.select(range(4)), roberta_like, max_length=32, cache_dir=None)
    assert enc.token_type_ids is None and len(enc) == 4
    assert "token_type_ids" not in collate(enc, [0, 1], pad_token_id=0, regression=False)


def test_cache_hit_skips_tokenizer(tokenizer, rte, tmp_path, monkeypatch):
    first = encode(rte, tokenizer, max_length=64, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    def fail(*args, **kwargs):
        raise AssertionError("tokenizer called on a cache hit")

    monkeypatch.setattr(type(tokenizer), "__call__", fail)
    second = encode(rte, tokenizer, max_length=64, cache_dir=tmp_path)
    assert all(np.array_equal(a, b) and b.dtype == np.int32 for a, b in zip(first.input_ids, second.input_ids))
    assert all(np.array_equal(a, b) and b.dtype == np.int32 for a, b in zip(first.token_type_ids, second.token_type_ids))
    assert np.array_equal(first.labels, second.labels)
    with pytest.raises(AssertionError):
        encode(rte, tokenizer, max_length=48, cache_dir=tmp_path)  # a new key must tokenize again


def test_cache_keys(tokenizer, rte, tmp_path):
    encode(rte, tokenizer, max_length=64, cache_dir=tmp_path)
    encode(rte, tokenizer, max_length=32, cache_dir=tmp_path)
    encode(rte.select(range(10)), tokenizer, max_length=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_fingerprint_is_stable_and_distinguishes(tokenizer, minilm_path, rte, tmp_path):
    from transformers import AutoTokenizer

    before = tokenizer_fingerprint(tokenizer)
    encode(rte, tokenizer, max_length=16, cache_dir=None)  # changes the backend's truncation state
    assert tokenizer_fingerprint(tokenizer) == before
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(minilm_path)) == before
    encoding._FINGERPRINTS.clear()  # memoized by serialization: computing afresh gives the same value
    assert tokenizer_fingerprint(tokenizer) == before
    cased = AutoTokenizer.from_pretrained(minilm_path)
    cased.add_tokens(["steadytune"])
    assert tokenizer_fingerprint(cased) != before


def test_collate_pads_dynamically():
    enc = EncodedDataset(
        input_ids=[np.array([101, 5, 102], np.int32), np.array([101, 7, 8, 9, 102], np.int32), np.array([101, 102], np.int32)],
        token_type_ids=[np.array([0, 0, 0], np.int32), np.array([0, 0, 1, 1, 1], np.int32), np.array([0, 0], np.int32)],
        labels=np.array([1, 0, 1]),
    )
    batch = collate(enc, [0, 2], pad_token_id=0, regression=False)
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]  # longest in this batch, not overall
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 1] and batch["labels"].dtype == torch.int64
    batch = collate(enc, [1, 0], pad_token_id=9, regression=False)
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][1].tolist() == [101, 5, 102, 9, 9]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]]
    scores = EncodedDataset(enc.input_ids, None, np.array([0.5, 4.0, 2.0], np.float32))
    batch = collate(scores, [1], pad_token_id=0, regression=True)
    assert "token_type_ids" not in batch and batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [4.0]
