"""Word-tagged sentences from CoNLL (token TAB tag, a blank line between sentences) or JSONL (`tokens`, `tags`)
files, checked against the BIO scheme.

Tag ids follow one fixed order, so the same files always give the same ids: `O` first, then `B-x`, `I-x` for
each entity type x in sorted order (or the order of --label-names when it is given).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.datasets import _jsonl_records, _read_text
from ..errors import DataError

OUTSIDE = "O"


@dataclass(frozen=True, eq=False)
class TaggedDataset:
    """Sentences as words, each word with its tag id (int64 per sentence), and the file line of each sentence."""

    words: list[list[str]]
    tags: list[np.ndarray]
    lines: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.words)

    @property
    def labels(self) -> np.ndarray:
        """Every word's tag id, sentence after sentence: what predictions are stored and compared against."""
        return np.concatenate(self.tags) if self.tags else np.zeros(0, dtype=np.int64)

    def select(self, indices: Sequence[int]) -> TaggedDataset:
        return TaggedDataset([self.words[i] for i in indices], [self.tags[i] for i in indices],
                             [self.lines[i] for i in indices], self.source)

    def content_hash(self) -> str:
        """sha256 over words and tag ids; identical data gives the same hash in every process."""
        h = hashlib.sha256(b"tagged")
        for words, tags in zip(self.words, self.tags):
            h.update(len(words).to_bytes(8, "little"))
            for word in words:
                data = word.encode("utf-8")
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
            h.update(np.ascontiguousarray(tags, dtype="<i8").tobytes())
        return h.hexdigest()


def _conll_sentences(path: Path) -> list[tuple[int, list[tuple[int, str, str]]]]:
    """(first line, [(line, word, tag), ...]) per sentence; one-line errors name the file and line."""
    sentences, current, start = [], [], 0
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            if current:
                sentences.append((start, current))
            current = []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}: line {number}: expected a token, a tab and a tag, found no tab")
        word, tag = fields[0], fields[-1].strip()
        if not word.strip():
            raise DataError(f"{path}: line {number}: empty token")
        if not current:
            start = number
        current.append((number, word, tag))
    if current:
        sentences.append((start, current))
    return sentences


def _jsonl_sentences(path: Path) -> list[tuple[int, list[tuple[int, str, str]]]]:
    sentences = []
    for number, record in _jsonl_records(path):
        if "tokens" not in record or "tags" not in record:
            raise DataError(f"{path}: line {number}: expected an object with 'tokens' and 'tags'")
        words, tags = record["tokens"], record["tags"]
        if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags):
            raise DataError(f"{path}: line {number}: 'tokens' and 'tags' must be lists of the same length")
        if not words:
            raise DataError(f"{path}: line {number}: empty sentence")
        if not all(isinstance(w, str) and w.strip() for w in words) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{path}: line {number}: every token must be non-empty text and every tag text")
        sentences.append((number, [(number, w, t.strip()) for w, t in zip(words, tags)]))
    return sentences


def read_sentences(path: Path) -> list[tuple[int, list[tuple[int, str, str]]]]:
    """The raw sentences of a .conll/.txt/.tsv (CoNLL) or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    sentences = _jsonl_sentences(path) if path.suffix.lower() == ".jsonl" else _conll_sentences(path)
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def _entity_type(tag: str) -> str | None:
    """The entity type of a B-/I- tag, None for O; ValueError for anything else."""
    if tag == OUTSIDE:
        return None
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return tag[2:]
    raise ValueError(f"tag {tag!r} is not BIO (expected O, B-<type> or I-<type>)")


def tag_names(sentences: list[tuple[int, list[tuple[int, str, str]]]], path: Path) -> tuple[str, ...]:
    """O, then B-x and I-x for every entity type x of the training sentences, types sorted."""
    types = set()
    for _, words in sentences:
        for number, _, tag in words:
            try:
                kind = _entity_type(tag)
            except ValueError as err:
                raise DataError(f"{path}: line {number}: {err}") from None
            if kind is not None:
                types.add(kind)
    return (OUTSIDE, *(f"{p}-{t}" for t in sorted(types) for p in ("B", "I")))


def check_tag_names(names: Sequence[str]) -> tuple[str, ...]:
    """--label-names of a tagging task: distinct BIO tags including O."""
    names = tuple(n.strip() for n in names)
    if OUTSIDE not in names or len(set(names)) != len(names):
        raise DataError(f"--label-names of a tagging task must be distinct BIO tags including O, got {','.join(names)}")
    for name in names:
        try:
            _entity_type(name)
        except ValueError as err:
            raise DataError(f"--label-names: {err}") from None
    return names


def to_dataset(sentences: list[tuple[int, list[tuple[int, str, str]]]], names: Sequence[str], path: Path,
               repair: bool) -> TaggedDataset:
    """Tag ids under `names`. An I-x that does not continue an x entity is refused, or with `repair` made B-x."""
    ids = {name: i for i, name in enumerate(names)}
    words, tags, lines = [], [], []
    for start, sentence in sentences:
        row, previous = [], OUTSIDE
        for number, _, tag in sentence:
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                if not repair:
                    raise DataError(f"{path}: line {number}: {tag} does not continue a {tag[2:]} entity (the tag "
                                    f"before it is {previous}); fix the file or pass --bio-repair to read it as "
                                    f"B-{tag[2:]}")
                tag = "B-" + tag[2:]
            if tag not in ids:
                raise DataError(f"{path}: line {number}: tag {tag!r} is not in the label set "
                                f"({', '.join(names)})")
            row.append(ids[tag])
            previous = tag
        words.append([word for _, word, _ in sentence])
        tags.append(np.asarray(row, dtype=np.int64))
        lines.append(start)
    return TaggedDataset(words, tags, lines, str(path))


def load_tagged(train_path: Path, dev_path: Path, label_names: Sequence[str] | None,
                repair: bool) -> tuple[TaggedDataset, TaggedDataset, tuple[str, ...]]:
    """Train and dev sentences with tag ids; the label set is --label-names or the training file's tags."""
    train_sentences = read_sentences(train_path)
    names = check_tag_names(label_names) if label_names else tag_names(train_sentences, Path(train_path))
    train = to_dataset(train_sentences, names, Path(train_path), repair)
    dev = to_dataset(read_sentences(dev_path), names, Path(dev_path), repair)
    return train, dev, names

