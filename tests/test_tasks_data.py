"""Task registry and data loading, on the real GLUE files and on small hand-written bad files."""
from __future__ import annotations

import numpy as np
import pytest

from steadytune.data.datasets import (
    TextDataset,
    load_files,
    load_glue,
    load_hub,
    majority_baseline,
    split_dev_test,
    subsample,
)
from steadytune.data.tasks import TASKS, custom_task, get_task
from steadytune.errors import DataError

# (task, split) -> rows, and label counts where MANIFEST.md gives them, in label-id order.
GLUE_COUNTS = {
    ("rte", "train"): (2490, [1249, 1241]),
    ("rte", "dev"): (277, [146, 131]),
    ("mrpc", "train"): (3668, [1194, 2474]),
    ("mrpc", "dev"): (408, [129, 279]),
    ("cola", "train"): (8551, [2528, 6023]),
    ("cola", "dev"): (1043, [322, 721]),
    ("sst2", "train"): (67349, [29780, 37569]),
    ("sst2", "dev"): (872, [428, 444]),
    ("wnli", "train"): (635, [323, 312]),
    ("wnli", "dev"): (71, [40, 31]),
    ("qnli", "dev"): (5463, [2702, 2761]),
    ("stsb", "train"): (5749, None),
    ("stsb", "dev"): (1500, None),
}


@pytest.fixture(scope="module")
def glue(glue_dir):
    """Each GLUE split loaded once for the whole module."""
    cache: dict[tuple[str, str], TextDataset] = {}

    def get(task: str, split: str) -> TextDataset:
        if (task, split) not in cache:
            cache[task, split] = load_glue(glue_dir, get_task(task), split)
        return cache[task, split]

    return get


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- tasks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias,name", [("sst-2", "sst2"), ("SST-2", "sst2"), ("sst2", "sst2"),
                                        ("STS-B", "stsb"), ("sts-b", "stsb"), ("RTE", "rte"), ("MNLI", "mnli")])
def test_get_task_aliases(alias, name):
    assert get_task(alias).name == name


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(DataError) as excinfo:
        get_task("squad")
    message = one_line_error(excinfo)
    assert "squad" in message and all(name in message for name in TASKS)


def test_task_specs():
    assert get_task("rte").label_names == ("entailment", "not_entailment")
    assert {name: spec.metric for name, spec in TASKS.items()} == {
        "rte": "accuracy", "mrpc": "f1", "cola": "mcc", "sst2": "accuracy", "stsb": "pearson",
        "qnli": "accuracy", "wnli": "accuracy", "mnli": "accuracy"}
    stsb = get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mnli").dev_split == "dev_matched"
    assert not get_task("cola").has_header and get_task("cola").text_b is None


def test_custom_task():
    cls = custom_task(["neg", "pos"])
    assert (cls.name, cls.metric, cls.num_labels, cls.is_regression) == ("custom-classification", "accuracy", 2, False)
    reg = custom_task(None)
    assert (reg.name, reg.metric, reg.is_regression) == ("custom-regression", "pearson", True)
    assert custom_task(["a", "b"], "f1").metric == "f1"
    for labels, metric in [(["a", "b"], "pearson"), (None, "accuracy"), (["a", "b", "c"], "f1"), (["a", "a"], None)]:
        with pytest.raises(DataError):
            custom_task(labels, metric)


# --- GLUE files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task,split", list(GLUE_COUNTS))
def test_glue_counts_match_manifest(glue, task, split):
    rows, label_counts = GLUE_COUNTS[task, split]
    ds = glue(task, split)
    assert len(ds) == rows == len(ds.text_a)
    assert (ds.text_b is None) == (get_task(task).text_b is None)
    if label_counts is not None:
        assert ds.labels.dtype == np.int64
        assert np.bincount(ds.labels).tolist() == label_counts
    assert all(text.strip() for text in ds.text_a)


def test_stsb_labels_are_float_scores(glue):
    train, dev = glue("stsb", "train"), glue("stsb", "dev")
    assert train.labels.dtype == np.float32
    assert round(float(train.labels.mean()), 3) == 2.701
    assert round(float(dev.labels.mean()), 4) == 2.3639
    assert train.labels.min() >= 0.0 and train.labels.max() <= 5.0


def test_mrpc_bom_and_quotes_verbatim(glue):
    dev = glue("mrpc", "dev")
    # The BOM sits before the label column's header: reading the label at all proves it was stripped.
    assert dev.labels[0] == 1
    assert dev.text_a[0].startswith("He said the foodservice pie business doesn 't fit")
    assert dev.text_b[0] == '" The foodservice pie business does not fit our long-term growth strategy .'
    train = glue("mrpc", "train")
    assert '" the witness "' in train.text_a[0]


def test_cola_headerless_and_no_final_newline(glue):
    dev = glue("cola", "dev")
    assert dev.text_a[0] == "The sailors rode the breeze clear of the rocks."
    assert dev.text_a[-1] and dev.labels[-1] in (0, 1)  # last line has no newline after it


def test_glue_unknown_split(glue_dir):
    with pytest.raises(DataError):
        load_glue(glue_dir, get_task("rte"), "test")


def test_glue_missing_folder_and_file(tmp_path, glue_dir):
    with pytest.raises(DataError) as excinfo:
        load_glue(tmp_path, get_task("rte"), "train")
    assert "RTE" in one_line_error(excinfo)
    with pytest.raises(DataError) as excinfo:
        load_glue(glue_dir, get_task("qnli"), "train")  # QNLI train is not in the shared folder
    assert "train.tsv" in one_line_error(excinfo)


def write_rte(root, lines: list[str]):
    (root / "RTE").mkdir()
    (root / "RTE" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_glue_wrong_field_count_names_file_and_line(tmp_path):
    write_rte(tmp_path, ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\textra\tentailment"])
    with pytest.raises(DataError) as excinfo:
        load_glue(tmp_path, get_task("rte"), "train")
    message = one_line_error(excinfo)
    assert "train.tsv" in message and "line 3" in message and "found 5" in message


def test_glue_unknown_label_and_missing_column(tmp_path):
    write_rte(tmp_path, ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\tneutral"])
    with pytest.raises(DataError) as excinfo:
        load_glue(tmp_path, get_task("rte"), "train")
    message = one_line_error(excinfo)
    assert "line 3" in message and "'neutral'" in message
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(DataError) as excinfo:
        load_glue(tmp_path, get_task("rte"), "train")
    assert "sentence2" in one_line_error(excinfo)


# --- hub -----------------------------------------------------------------------------------------

def fake_hub(monkeypatch, columns: dict, label_feature):
    import datasets

    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        features = datasets.Features({**{c: datasets.Value("string") for c in columns if c != "label"},
                                      "label": label_feature})
        return datasets.Dataset.from_dict(columns, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_load_hub_maps_labels(monkeypatch):
    import datasets

    calls = fake_hub(monkeypatch, {"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [1, 0, 1]},
                     datasets.ClassLabel(names=["not_equivalent", "equivalent"]))
    ds = load_hub(get_task("mrpc"), "dev")
    assert calls == [("nyu-mll/glue", "mrpc", "validation")]
    assert ds.text_a == ["a", "b", "c"] and ds.text_b == ["x", "y", "z"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1]  # MRPC "1" = equivalent


def test_load_hub_maps_by_name_and_mnli_columns(monkeypatch):
    import datasets

    # A hub copy listing the MNLI classes in another order must still give our ids.
    calls = fake_hub(monkeypatch, {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [0, 2]},
                     datasets.ClassLabel(names=["contradiction", "neutral", "entailment"]))
    ds = load_hub(get_task("mnli"), "dev")
    assert calls[0][2] == "validation_matched"
    mnli = get_task("mnli")
    assert [mnli.label_names[i] for i in ds.labels] == ["contradiction", "entailment"]


def test_load_hub_regression_and_unlabeled(monkeypatch):
    import datasets

    fake_hub(monkeypatch, {"sentence1": ["a"], "sentence2": ["b"], "label": [3.5]}, datasets.Value("float32"))
    ds = load_hub(get_task("sts-b"), "train")
    assert ds.labels.dtype == np.float32 and ds.labels.tolist() == [3.5]
    fake_hub(monkeypatch, {"sentence": ["a"], "label": [-1]}, datasets.ClassLabel(names=["negative", "positive"]))
    with pytest.raises(DataError):
        load_hub(get_task("sst2"), "train")


def test_load_hub_unreachable_is_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as excinfo:
        load_hub(get_task("rte"), "train")
    assert "ConnectionError" in one_line_error(excinfo)


# --- user files ----------------------------------------------------------------------------------

def test_load_files_csv_tsv_jsonl(tmp_path):
    task = custom_task(["neg", "pos"])
    (tmp_path / "d.csv").write_text('text,label\n"hello, ""world""",pos\nbye,0\n\n', encoding="utf-8")
    ds = load_files(tmp_path / "d.csv", task, "text", None, "label")
    assert ds.text_a == ['hello, "world"', "bye"] and ds.labels.tolist() == [1, 0] and ds.text_b is None
    (tmp_path / "d.tsv").write_text('a\tb\ty\n"q\tr\tneg\n', encoding="utf-8")
    ds = load_files(tmp_path / "d.tsv", task, "a", "b", "y")
    assert ds.text_a == ['"q'] and ds.text_b == ["r"]
    (tmp_path / "d.jsonl").write_text('{"t": "x", "y": 0.5}\n\n{"t": "z", "y": 2}\n', encoding="utf-8")
    ds = load_files(tmp_path / "d.jsonl", custom_task(None), "t", None, "y")
    assert ds.labels.dtype == np.float32 and ds.labels.tolist() == [0.5, 2.0]


def test_load_files_jsonl_int_labels_index_names(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"t": "x", "y": 1}\n{"t": "z", "y": "neg"}\n')
    ds = load_files(tmp_path / "d.jsonl", custom_task(["neg", "pos"]), "t", None, "y")
    assert ds.labels.tolist() == [1, 0]
    # Classes named by digits: "1" is the name "1" (id 0), never index 1.
    (tmp_path / "s.jsonl").write_text('{"t": "x", "y": 1}\n{"t": "z", "y": "3"}\n')
    ds = load_files(tmp_path / "s.jsonl", custom_task(["1", "2", "3"]), "t", None, "y")
    assert ds.labels.tolist() == [0, 2]


@pytest.mark.parametrize("name,content,expected", [
    ("bad.jsonl", '{"t": "a", "y": "pos"}\n{"t": "b", "y": \n', ["line 2", "invalid JSON"]),
    ("bad.jsonl", '{"t": "a", "y": "pos"}\n{"t": "b"}\n', ["line 2", "'y'"]),
    ("bad.csv", "text,y\na,pos\n", ["line 1", "'label'"]),
    ("bad.csv", "text,label\na,pos\n ,neg\n", ["line 3", "empty text"]),
    ("bad.csv", "text,label\na,pos\nb,maybe\n", ["line 3", "'maybe'"]),
    ("bad.csv", "text,label\na,pos\nb,7\n", ["line 3", "'7'"]),
    ("bad.tsv", "text\tlabel\na\tpos\nb\tneg\textra\n", ["line 3", "found 3"]),
    ("bad.txt", "text,label\n", ["unsupported"]),
])
def test_load_files_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    key = "t" if name.endswith(".jsonl") else "text"
    label = "y" if name.endswith(".jsonl") else "label"
    with pytest.raises(DataError) as excinfo:
        load_files(path, custom_task(["neg", "pos"]), key, None, label)
    message = one_line_error(excinfo)
    assert name in message
    for part in expected:
        assert part in message


def test_load_files_regression_non_number(tmp_path):
    (tmp_path / "r.csv").write_text("s,score\na,1.5\nb,high\n")
    with pytest.raises(DataError) as excinfo:
        load_files(tmp_path / "r.csv", custom_task(None), "s", None, "score")
    assert "line 3" in one_line_error(excinfo)


# --- dataset operations and the few-sample protocol ----------------------------------------------

def test_select_and_content_hash(glue):
    ds = glue("rte", "dev")
    part = ds.select([5, 2])
    assert part.text_a == [ds.text_a[5], ds.text_a[2]] and part.labels.tolist() == ds.labels[[5, 2]].tolist()
    assert ds.select(range(len(ds))).content_hash() == ds.content_hash()
    assert part.content_hash() != ds.select([2, 5]).content_hash()
    # Hash is a fixed function of the data: same value as a freshly built equal dataset.
    copy = TextDataset(list(ds.text_a), list(ds.text_b), ds.labels.copy(), "elsewhere")
    assert copy.content_hash() == ds.content_hash()


def test_subsample_determinism(glue):
    ds = glue("rte", "train")
    a, b, c = subsample(ds, 100, seed=1), subsample(ds, 100, seed=1), subsample(ds, 100, seed=2)
    assert len(a) == 100 and a.text_a == b.text_a and a.content_hash() == b.content_hash()
    assert a.text_a != c.text_a
    numbered = TextDataset([str(i) for i in range(len(ds))], None, ds.labels, "numbered")
    drawn = [int(t) for t in subsample(numbered, 100, seed=1).text_a]
    assert drawn == sorted(drawn)  # kept in file order
    assert numbered.select(drawn).labels.tolist() == a.labels.tolist()  # same draw whatever the texts
    assert subsample(ds, len(ds), seed=3) is ds and subsample(ds, 10**6, seed=3) is ds
    with pytest.raises(DataError):
        subsample(ds, 0, seed=1)


def test_split_dev_test_is_stratified(glue):
    ds = glue("rte", "dev")
    dev, test = split_dev_test(ds, seed=0)
    assert len(dev) + len(test) == len(ds)
    assert sorted(dev.text_a + test.text_a) == sorted(ds.text_a)
    total = np.bincount(ds.labels)
    for half in (dev, test):
        assert np.all(np.abs(np.bincount(half.labels, minlength=2) - total / 2) <= 1)
    again, _ = split_dev_test(ds, seed=0)
    other, _ = split_dev_test(ds, seed=1)
    assert again.text_a == dev.text_a and other.text_a != dev.text_a


def test_split_dev_test_regression(glue):
    ds = glue("stsb", "dev")
    dev, test = split_dev_test(ds, seed=0)
    assert (len(dev), len(test)) == (750, 750) and dev.labels.dtype == np.float32


def test_majority_baselines(glue):
    rte = get_task("rte")
    result = majority_baseline(rte, glue("rte", "train").labels, glue("rte", "dev").labels)
    assert rte.label_names[0] == "entailment"  # training majority (1249 vs 1241)
    assert result == {"accuracy": pytest.approx(146 / 277)}
    mrpc = majority_baseline(get_task("mrpc"), glue("mrpc", "train").labels, glue("mrpc", "dev").labels)
    assert mrpc["accuracy"] == pytest.approx(279 / 408)
    assert mrpc["f1"] == pytest.approx(2 * 279 / (279 + 408))  # precision 279/408, recall 1
    cola = majority_baseline(get_task("cola"), glue("cola", "train").labels, glue("cola", "dev").labels)
    assert cola["mcc"] == 0.0 and cola["accuracy"] == pytest.approx(721 / 1043)
    stsb = majority_baseline(get_task("stsb"), glue("stsb", "train").labels, glue("stsb", "dev").labels)
    assert stsb == {"pearson": 0.0, "spearman": 0.0}
