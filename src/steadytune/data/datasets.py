"""Loading GLUE-style text datasets (local GLUE files, the HF hub, user files) and the few-sample protocol."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .metrics import compute_metrics

if TYPE_CHECKING:
    from .tasks import TaskSpec


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Texts (one or two per example) with label ids (int64) or scores (float32)."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = len(self.text_a)
        if (self.text_b is not None and len(self.text_b) != n) or self.labels.shape != (n,):
            raise ValueError(f"{self.source}: text_a, text_b and labels must have the same length")

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, indices: Sequence[int]) -> TextDataset:
        """The examples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        labels = self.labels[idx]
        text_b = None if self.text_b is None else [self.text_b[i] for i in idx]
        return TextDataset([self.text_a[i] for i in idx], text_b, labels, self.source)

    def content_hash(self) -> str:
        """sha256 over texts and labels; identical data gives the same hash in every process."""
        h = hashlib.sha256(b"pair" if self.text_b is not None else b"single")
        for column in (self.text_a, self.text_b or []):
            for text in column:
                data = text.encode("utf-8")
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
        labels = np.ascontiguousarray(self.labels)
        h.update(labels.dtype.str.encode())
        h.update(labels.tobytes())
        return h.hexdigest()


# Hub (nyu-mll/glue) column names, and its ClassLabel names listed in the order of our label ids.
_HUB_TEXT_COLUMNS: dict[str, tuple[str, str | None]] = {
    "rte": ("sentence1", "sentence2"),
    "mrpc": ("sentence1", "sentence2"),
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "wnli": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
}
_HUB_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "rte": ("entailment", "not_entailment"),
    "mrpc": ("not_equivalent", "equivalent"),
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "qnli": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "mnli": ("entailment", "neutral", "contradiction"),
}


def _split_stem(task: TaskSpec, split: str) -> str:
    if split == "train":
        return "train"
    if split in ("dev", task.dev_split):
        return task.dev_split
    raise DataError(f"unknown split {split!r} for task {task.name}; use 'train' or 'dev'")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 ({err.reason})") from None


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """Non-empty lines with 1-based line numbers; splits on '\\n' only, as the GLUE files need."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line:
            yield number, line


def _tsv_records(path: Path, header: Sequence[str] | None) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Tab-separated rows without quote handling; `header` given for header-less files."""
    rows = ((number, line.split("\t")) for number, line in _lines(_read_text(path)))
    if header is None:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: line 1: empty file, expected a header line")
        header = first[1]
    records = []
    for number, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{path}: line {number}: expected {len(header)} tab-separated fields, found {len(fields)}")
        records.append((number, dict(zip(header, fields))))
    return list(header), records


def _csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header: list[str] | None = None
    records = []
    start = 1
    try:
        for fields in reader:
            if fields:
                if header is None:
                    header = fields
                elif len(fields) != len(header):
                    raise DataError(f"{path}: line {start}: expected {len(header)} comma-separated fields, "
                                    f"found {len(fields)}")
                else:
                    records.append((start, dict(zip(header, fields))))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {start}: malformed CSV ({err})") from None
    if header is None:
        raise DataError(f"{path}: line 1: empty file, expected a header line")
    return header, records


def _jsonl_records(path: Path) -> list[tuple[int, dict[str, object]]]:
    records = []
    for number, line in _lines(_read_text(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, found {type(record).__name__}")
        records.append((number, record))
    return records


def _label_value(raw: object, task: TaskSpec, accept_index: bool) -> int | float:
    """Class id (by name, or by index when `accept_index`) or finite float score; raises ValueError."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"label {raw!r} is not a {'number' if task.is_regression else 'class name'}")
    if task.label_names is None:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"label {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"label {raw!r} is not a finite number")
        return value
    name = str(raw).strip()
    if name in task.label_names:
        return task.label_names.index(name)
    # Integer indices are only unambiguous when no class is itself named by an integer.
    if accept_index and not any(n.lstrip("-").isdigit() for n in task.label_names):
        if isinstance(raw, int) or name.lstrip("-").isdigit():
            index = int(raw)
            if 0 <= index < len(task.label_names):
                return index
            raise ValueError(f"label {raw!r} is outside the label set: integer labels are ids 0..{len(task.label_names) - 1} "
                             f"in --label-names order ({', '.join(f'{i}={n}' for i, n in enumerate(task.label_names))})")
    raise ValueError(f"unknown label {raw!r} (expected one of {', '.join(task.label_names)})")


def _build(path: Path, task: TaskSpec, records: Iterable[tuple[int, Mapping[str, object]]],
           text_a: str, text_b: str | None, label: str, accept_index: bool) -> TextDataset:
    texts_a: list[str] = []
    texts_b: list[str] = []
    labels: list[int | float] = []
    text_columns = (text_a,) if text_b is None else (text_a, text_b)
    for number, record in records:
        for column in (*text_columns, label):
            if column not in record:
                raise DataError(f"{path}: line {number}: missing column {column!r}")
        for column, out in zip(text_columns, (texts_a, texts_b)):
            value = record[column]
            if not isinstance(value, str):
                raise DataError(f"{path}: line {number}: column {column!r} holds {type(value).__name__}, not text")
            if not value.strip():
                raise DataError(f"{path}: line {number}: empty text in column {column!r}")
            out.append(value)
        try:
            labels.append(_label_value(record[label], task, accept_index))
        except ValueError as err:
            raise DataError(f"{path}: line {number}: {err}") from None
    if not labels:
        raise DataError(f"{path}: no data rows")
    dtype = np.float32 if task.is_regression else np.int64
    return TextDataset(texts_a, texts_b if text_b is not None else None, np.asarray(labels, dtype=dtype), str(path))


def _require_columns(path: Path, header: Sequence[str], wanted: Iterable[str | None]) -> None:
    missing = [c for c in wanted if c is not None and c not in header]
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(map(repr, missing))} "
                        f"(found: {', '.join(map(repr, header))})")


def load_glue(glue_dir: Path, task: TaskSpec, split: str) -> TextDataset:
    """A labelled split of a task from a download_glue_data.py folder (<glue_dir>/<TASK>/<split>.tsv)."""
    if task.glue_folder is None:
        raise DataError(f"task {task.name} is not a GLUE task; load its files with load_files")
    folder = Path(glue_dir) / task.glue_folder
    if not folder.is_dir():
        raise DataError(f"{folder}: GLUE task folder not found (expected the download_glue_data.py layout "
                        f"<glue_dir>/{task.glue_folder}/train.tsv)")
    path = folder / f"{_split_stem(task, split)}.tsv"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    header, records = _tsv_records(path, None if task.has_header else task.columns)
    _require_columns(path, header, (task.text_a, task.text_b, task.label))
    return _build(path, task, records, task.text_a, task.text_b, task.label, accept_index=False)


def load_hub(task: TaskSpec, split: str) -> TextDataset:
    """A labelled split from the Hugging Face hub copy of GLUE (nyu-mll/glue), with our label ids."""
    if task.hub_config not in _HUB_TEXT_COLUMNS:
        raise DataError(f"task {task.name} has no nyu-mll/glue config on the hub")
    stem = _split_stem(task, split)
    hub_split = "train" if stem == "train" else stem.replace("dev", "validation", 1)
    import datasets  # heavy; only needed on this path

    source = f"hf://nyu-mll/glue/{task.hub_config}/{hub_split}"
    try:
        hub = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split)
    except Exception as err:  # network, auth and cache errors all mean the same to the user
        detail = (str(err).splitlines() or [""])[0]
        raise DataError(f"{source}: could not load from the hub ({type(err).__name__}: {detail}); "
                        f"point steadytune at local GLUE files instead") from None
    text_a, text_b = _HUB_TEXT_COLUMNS[task.hub_config]
    missing = [c for c in (text_a, text_b, "label") if c is not None and c not in hub.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(hub.column_names)})")
    raw = np.asarray(hub["label"])
    if task.label_names is None:
        labels = raw.astype(np.float32)
    else:
        hub_names = list(hub.features["label"].names)
        expected = _HUB_LABEL_NAMES[task.hub_config]
        if sorted(hub_names) != sorted(expected):
            raise DataError(f"{source}: hub label names {hub_names} differ from the expected {list(expected)}")
        if raw.size and raw.min() < 0:
            raise DataError(f"{source}: split is unlabeled (label -1)")
        to_ours = np.array([expected.index(name) for name in hub_names], dtype=np.int64)
        labels = to_ours[raw.astype(np.int64)]
    return TextDataset(list(hub[text_a]), None if text_b is None else list(hub[text_b]), labels, source)


def load_files(path: Path, task: TaskSpec, text_a: str, text_b: str | None, label: str) -> TextDataset:
    """The user's own .csv, .tsv (no quote handling) or .jsonl file, with a header / keys naming the columns."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv, .tsv or .jsonl")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix == ".jsonl":
        records: Sequence[tuple[int, Mapping[str, object]]] = _jsonl_records(path)
    else:
        header, records = _tsv_records(path, None) if suffix == ".tsv" else _csv_records(path)
        _require_columns(path, header, (text_a, text_b, label))
    return _build(path, task, records, text_a, text_b, label, accept_index=True)


def subsample(ds: TextDataset, n: int, seed: int) -> TextDataset:
    """N examples drawn once with a fixed subset seed, kept in file order (few-sample protocol)."""
    if n < 1:
        raise DataError(f"subsample size must be positive, got {n}")
    if n >= len(ds):
        return ds
    indices = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return replace(ds.select(indices), source=f"{ds.source} [subsample n={n} seed={seed}]")


def split_dev_test(ds, seed: int):
    """Halve a dev set (a TextDataset, or tagging's TaggedDataset) into new dev / test halves of the same type, per
    class for classification (Zhang et al., 2021)."""
    if len(ds) < 2:
        raise DataError(f"{ds.source}: need at least 2 examples to split into dev and test, got {len(ds)}")
    rng = np.random.default_rng(seed)
    # Per class only where each example has one class; regression scores and tagged sentences split as a whole.
    if not isinstance(ds, TextDataset) or np.issubdtype(ds.labels.dtype, np.floating):
        groups = [np.arange(len(ds))]
    else:
        groups = [np.flatnonzero(ds.labels == c) for c in np.unique(ds.labels)]
    dev_parts, test_parts = [], []
    for group in groups:
        shuffled = rng.permutation(group)
        dev_parts.append(shuffled[: len(group) // 2])
        test_parts.append(shuffled[len(group) // 2:])
    dev = np.sort(np.concatenate(dev_parts))
    test = np.sort(np.concatenate(test_parts))
    return (replace(ds.select(dev), source=f"{ds.source} [dev half seed={seed}]"),
            replace(ds.select(test), source=f"{ds.source} [test half seed={seed}]"))


def majority_baseline(task: TaskSpec, train_labels: np.ndarray, eval_labels: np.ndarray) -> dict[str, float]:
    """Metrics of always predicting the training majority class (regression: the training mean)."""
    if len(train_labels) == 0:
        raise DataError("majority baseline needs at least one training label")
    if task.is_regression:
        predictions = np.full(len(eval_labels), float(np.mean(train_labels)), dtype=np.float64)
    else:
        majority = int(np.argmax(np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=task.num_labels)))
        predictions = np.full(len(eval_labels), majority, dtype=np.int64)
    return compute_metrics(task, predictions, np.asarray(eval_labels))
