"""Assemble a trial's data from its config: load, draw the few-sample subset, split dev, tokenize."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..config import TrialConfig
from ..data.datasets import TextDataset, load_files, load_glue, load_hub, majority_baseline, split_dev_test, subsample
from ..data.encoding import EncodedDataset, encode
from ..data.metrics import compute_metrics
from ..data.tasks import TaskSpec, custom_task, get_task, tagging_task
from ..errors import DataError
from ..tagging.conll import OUTSIDE, TaggedDataset, check_tag_names, load_tagged, read_sentences, tag_names
from ..tagging.encoding import EncodedTags, encode_tags

CUSTOM_TASKS = ("classification", "regression", "ner")


@dataclass(frozen=True)
class TrialInputs:
    task: TaskSpec
    train: EncodedDataset | EncodedTags
    dev: EncodedDataset | EncodedTags
    test: EncodedDataset | EncodedTags | None  # the held-out half when --split-dev is on
    baseline: dict[str, float]   # majority-class (mean for regression, all O for tagging) metrics on dev
    data_hash: str = ""          # identity of the data the trial sees: its train, dev and test examples
    notes: list[str] = field(default_factory=list)  # things the user should know, e.g. a --max-train beyond the data

    @property
    def cache_entries(self) -> tuple[tuple[str, str], ...]:
        """(name, checksum) of the tokenization cache entries the trial used, for its store to record."""
        return tuple(entry for ds in (self.train, self.dev, self.test)
                     if (entry := getattr(ds, "cache_entry", None)) is not None)


def default_cache_dir() -> Path:
    return Path(os.environ.get("STEADYTUNE_CACHE", Path.home() / ".cache" / "steadytune"))


def resolve_task(config: TrialConfig) -> TaskSpec:
    if config.task in CUSTOM_TASKS:
        if config.train_file is None:
            raise DataError(f"--task {config.task} needs --train-file and --dev-file")
        if config.task == "regression":
            return custom_task(None, config.metric)
        if config.task == "ner":
            names = (check_tag_names(config.label_names.split(",")) if config.label_names
                     else tag_names(read_sentences(Path(config.train_file)), Path(config.train_file)))
            return tagging_task(names, config.metric)
        if not config.label_names:
            raise DataError("--task classification needs --label-names (comma-separated, in label-id order)")
        return custom_task([name.strip() for name in config.label_names.split(",")], config.metric)
    return get_task(config.task)


def load_raw(config: TrialConfig, task: TaskSpec) -> tuple[TextDataset, TextDataset] | tuple[TaggedDataset, TaggedDataset]:
    if task.tagging:
        train, dev, _ = load_tagged(Path(config.train_file), Path(config.dev_file), task.label_names,
                                    config.bio_repair)
        return train, dev
    if config.train_file:
        columns = (config.text_column, config.text_pair_column, config.label_column)
        return (load_files(Path(config.train_file), task, *columns), load_files(Path(config.dev_file), task, *columns))
    if config.glue_dir:
        glue_dir = Path(config.glue_dir)
        return load_glue(glue_dir, task, "train"), load_glue(glue_dir, task, task.dev_split)
    return load_hub(task, "train"), load_hub(task, task.dev_split)


def prepare_inputs(config: TrialConfig, tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None,
                   cache_records: Mapping[str, str] | None = None) -> TrialInputs:
    """The trial's encoded data; `cache_records`: the checksums its store recorded for tokenization cache entries."""
    task = resolve_task(config)
    train, dev = load_raw(config, task)
    notes = []
    if config.max_train is not None:
        if config.max_train > len(train):
            notes.append(f"--max-train {config.max_train} is more than the {len(train)} training examples: "
                         f"all {len(train)} are used")
        train = subsample(train, config.max_train, config.subset_seed)
    test = None
    if config.split_dev:
        dev, test = split_dev_test(dev, config.split_seed)
    identity = hashlib.sha256("|".join(ds.content_hash() for ds in (train, dev, test) if ds is not None).encode())
    if task.tagging:
        # Tagged sentences are few and short: a fast tokenizer aligns them in well under a second, uncached.
        encoded = [None if ds is None else encode_tags(ds, tokenizer, config.max_length) for ds in (train, dev, test)]
        pieceless = sum(e.pieceless for e in encoded if e is not None)
        if pieceless:
            notes.append(f"{pieceless} word(s) tokenize to no word piece at all (e.g. a zero-width joiner or a soft "
                         "hyphen): they cannot be tagged, and each is predicted O")
        all_outside = np.full_like(encoded[1].labels, task.label_names.index(OUTSIDE))
        return TrialInputs(task=task, train=encoded[0], dev=encoded[1], test=encoded[2],
                           baseline=compute_metrics(task, all_outside, encoded[1].labels, encoded[1].word_offsets),
                           data_hash=identity.hexdigest()[:16], notes=notes)
    cache_dir = cache_dir or default_cache_dir()
    return TrialInputs(
        task=task,
        train=encode(train, tokenizer, config.max_length, cache_dir, cache_records),
        dev=encode(dev, tokenizer, config.max_length, cache_dir, cache_records),
        test=encode(test, tokenizer, config.max_length, cache_dir, cache_records) if test is not None else None,
        baseline=majority_baseline(task, train.labels, dev.labels),
        data_hash=identity.hexdigest()[:16],
        notes=notes,
    )
