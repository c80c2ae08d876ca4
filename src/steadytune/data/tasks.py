"""Task registry: where each GLUE task's files live, which columns hold text and label, and its metric."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DataError

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
TAGGING_METRICS = ("f1", "precision", "recall", "accuracy")


@dataclass(frozen=True)
class TaskSpec:
    """Everything the loaders and metrics need to know about one task."""

    name: str
    glue_folder: str | None
    hub_config: str | None
    text_a: str
    text_b: str | None
    label: str
    label_names: tuple[str, ...] | None
    metric: str
    has_header: bool
    dev_split: str
    columns: tuple[str, ...] | None = None  # column names of header-less files (CoLA train/dev)
    tagging: bool = False  # one label per word (label_names are BIO tags), not one per example

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("rte", "RTE", "rte", "sentence1", "sentence2", "label", _NLI2, "accuracy", True, "dev"),
        TaskSpec("mrpc", "MRPC", "mrpc", "#1 String", "#2 String", "Quality", _BINARY, "f1", True, "dev"),
        TaskSpec("cola", "CoLA", "cola", "sentence", None, "label", _BINARY, "mcc", False, "dev",
                 columns=("source", "label", "original_mark", "sentence")),
        TaskSpec("sst2", "SST-2", "sst2", "sentence", None, "label", _BINARY, "accuracy", True, "dev"),
        TaskSpec("stsb", "STS-B", "stsb", "sentence1", "sentence2", "score", None, "pearson", True, "dev"),
        TaskSpec("qnli", "QNLI", "qnli", "question", "sentence", "label", _NLI2, "accuracy", True, "dev"),
        TaskSpec("wnli", "WNLI", "wnli", "sentence1", "sentence2", "label", _BINARY, "accuracy", True, "dev"),
        TaskSpec("mnli", "MNLI", "mnli", "sentence1", "sentence2", "gold_label",
                 ("entailment", "neutral", "contradiction"), "accuracy", True, "dev_matched"),
    )
}


def _task_key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def canonical_task_name(name: str) -> str:
    """The registry's name of a GLUE task ("STS-B" -> "stsb"); other names (own-file tasks) as given."""
    key = _task_key(name)
    return key if key in TASKS else name.strip()


def get_task(name: str) -> TaskSpec:
    """Look a GLUE task up by name, ignoring case, '-' and '_' ("SST-2" == "sst2")."""
    key = _task_key(name)
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


def custom_task(label_names: Sequence[str] | None, metric: str | None = None) -> TaskSpec:
    """A task for the user's own files: classification over `label_names`, or regression when None.

    Column names are given to `load_files`; the spec's text/label fields hold the conventional defaults.
    """
    if label_names is None:
        allowed, name, names = REGRESSION_METRICS, "custom-regression", None
    else:
        names = tuple(str(n) for n in label_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise DataError(f"--label-names must hold at least 2 distinct names, got {','.join(names)}")
        allowed, name = CLASSIFICATION_METRICS, "custom-classification"
    metric = metric or allowed[0]
    if metric not in allowed:
        raise DataError(f"--metric {metric} does not fit a {name} task; choose one of {', '.join(allowed)}")
    if metric == "f1" and names is not None and len(names) != 2:
        raise DataError(f"--metric f1 needs exactly 2 labels in --label-names (the second is positive), got "
                        f"{len(names)}")
    return TaskSpec(name, None, None, "text", None, "label", names, metric, True, "dev")


def tagging_task(tag_names: Sequence[str], metric: str | None = None) -> TaskSpec:
    """A token-classification task over BIO `tag_names` (O first), scored by entity-level F1 by default."""
    metric = metric or TAGGING_METRICS[0]
    if metric not in TAGGING_METRICS:
        raise DataError(f"--metric {metric} does not fit a ner task; choose one of {', '.join(TAGGING_METRICS)}")
    return TaskSpec("ner", None, None, "tokens", None, "tags", tuple(tag_names), metric, False, "dev", tagging=True)
