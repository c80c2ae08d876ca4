"""Token classification: reading tagged files, word-piece alignment, seqeval scoring, the CRF, and real trials."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchcrf
from conftest import REPO_ROOT
from transformers import AutoTokenizer

from steadytune.config import TrialConfig
from steadytune.errors import DataError
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.tagging.conll import load_tagged
from steadytune.tagging.crf import LinearChainCRF, bio_masks, log_likelihood, viterbi
from steadytune.tagging.encoding import IGNORED, encode_tags
from steadytune.tagging.scoring import tagging_metrics
from steadytune.training.trial import Trial

WNUT = REPO_ROOT.parent / "shared" / "data" / "ner" / "wnut17"


def sentences_of(path: Path, count: int) -> str:
    """The first `count` sentences of a CoNLL file, as text."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(blocks[:count]) + "\n"


@pytest.fixture
def ner_files(tmp_path) -> tuple[Path, Path]:
    """48 training and 24 dev sentences of the real WNUT-17 files."""
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    train.write_text(sentences_of(WNUT / "train.conll", 48), encoding="utf-8")
    dev.write_text(sentences_of(WNUT / "dev.conll", 24), encoding="utf-8")
    return train, dev


@pytest.fixture
def ner_config(tiny_bert_dir, ner_files):
    def make(**overrides) -> TrialConfig:
        values = dict(task="ner", model=str(tiny_bert_dir), train_file=str(ner_files[0]), dev_file=str(ner_files[1]),
                      batch_size=8, max_length=48, epochs=1, evals_per_epoch=1, lr=1e-3, label_names=LABELS)
        values.update(overrides)
        return TrialConfig(**values)
    return make


# All WNUT-17 tags, so that the small slices share one label set.
LABELS = ("O,B-corporation,I-corporation,B-creative-work,I-creative-work,B-group,I-group,B-location,I-location,"
          "B-person,I-person,B-product,I-product")


# --- reading -----------------------------------------------------------------------------------------
def test_real_wnut_files_give_the_documented_counts_and_tag_order():
    train, dev, names = load_tagged(WNUT / "train.conll", WNUT / "dev.conll", None, repair=False)
    assert (len(train), len(dev)) == (2394, 1000)  # MANIFEST.md
    assert names == tuple(LABELS.split(","))  # O first, then B-/I- per type, types sorted
    assert len(train.labels) == 46469
    assert train.words[0][:3] == ["@paulwalk", "It", "'s"]
    location = [names[t] for t in train.tags[0][14:17]]
    assert location == ["B-location", "I-location", "I-location"]  # Empire State Building


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("bad_file, text, message", [
    ("dev", "a\tO\nb\tB-animal\n", "dev.conll: line 2: tag 'B-animal' is not in the label set"),
    ("dev", "a\tO\nb\tI-person\n", "dev.conll: line 2: I-person does not continue a person entity"),
    ("dev", "a\tO\nb B-person\n", "dev.conll: line 2: expected a token, a tab and a tag, found no tab"),
    ("dev", "a\tO\n\t O\n", "dev.conll: line 2: empty token"),
    ("train", "a\tO\nb\tX-person\n", "train.conll: line 2: tag 'X-person' is not BIO"),
])
def test_bad_tagged_input_is_one_line_naming_file_and_line(tmp_path, bad_file, text, message):
    good = "Ann\tB-person\nLee\tI-person\n"
    train = write(tmp_path / "train.conll", text if bad_file == "train" else good)
    dev = write(tmp_path / "dev.conll", text if bad_file == "dev" else good)
    with pytest.raises(DataError) as err:
        load_tagged(train, dev, None, repair=False)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_i_tag_without_its_b_is_repaired_on_request(tmp_path):
    train = write(tmp_path / "train.conll", "Ann\tB-person\nLee\tI-person\n")
    dev = write(tmp_path / "dev.conll", "x\tO\nAnn\tI-person\nLee\tI-person\n")
    _, repaired, names = load_tagged(train, dev, None, repair=True)
    assert [names[t] for t in repaired.tags[0]] == ["O", "B-person", "I-person"]


def test_jsonl_form_and_its_empty_sentence(tmp_path):
    train = write(tmp_path / "train.jsonl", json.dumps({"tokens": ["Ann", "runs"], "tags": ["B-person", "O"]}) + "\n")
    dev = write(tmp_path / "dev.jsonl", json.dumps({"tokens": [], "tags": []}) + "\n")
    with pytest.raises(DataError, match=r"dev.jsonl: line 1: empty sentence"):
        load_tagged(train, dev, None, repair=False)
    loaded, _, names = load_tagged(train, train, None, repair=False)
    assert names == ("O", "B-person", "I-person") and loaded.words == [["Ann", "runs"]]


# --- alignment and scoring ---------------------------------------------------------------------------
def test_a_word_of_three_pieces_gets_one_label(minilm_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    word = "Instagramming"
    pieces = tokenizer.tokenize(word)
    assert len(pieces) == 3, pieces
    train = write(tmp_path / "t.conll", f"at\tO\n{word}\tB-location\nnow\tO\n")
    data, _, names = load_tagged(train, train, None, repair=False)
    encoded = encode_tags(data, tokenizer, 32)
    tags = encoded.token_tags[0]
    # [CLS] at ins ##tagram ##ming now [SEP]
    assert len(tags) == 7
    assert tags.tolist() == [IGNORED, 0, names.index("B-location"), IGNORED, IGNORED, 0, IGNORED]


def test_words_cut_off_by_truncation_keep_their_gold_tags(minilm_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    train = write(tmp_path / "t.conll", "".join(f"w{i}\tO\n" for i in range(20)))
    data, _, _ = load_tagged(train, train, None, repair=False)
    encoded = encode_tags(data, tokenizer, 8)
    assert len(encoded.input_ids[0]) == 8
    assert (encoded.token_tags[0] != IGNORED).sum() < 20 and len(encoded.labels) == 20


@pytest.mark.parametrize("pieceless", ["\u200d", "\ufe0f", "\u200b", "\u00ad"])
def test_a_word_without_a_piece_is_predicted_o_and_never_shifts_its_neighbours(minilm_path, tmp_path, pieceless):
    from steadytune.tagging.encoding import collate_tags
    from steadytune.tagging.heads import place_words, predicted_tags

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    train = write(tmp_path / "t.conll", f"Ann\tB-person\n{pieceless}\tO\nvisits\tO\nParis\tB-location\n")
    data, _, names = load_tagged(train, train, None, repair=False)
    encoded = encode_tags(data, tokenizer, 32)
    assert encoded.pieceless == 1 and encoded.tagged_words[0].tolist() == [0, 2, 3]
    labels = collate_tags(encoded, [0], tokenizer.pad_token_id)["labels"]
    logits = torch.full((*labels.shape, len(names)), -10.0)
    tagged = labels != IGNORED
    logits[tagged, labels[tagged]] = 10.0  # a perfect tagger
    out = np.full(len(encoded.labels), names.index("O"))
    place_words(out, encoded.word_offsets, encoded.tagged_words, [0], *predicted_tags(torch.nn.Module(), logits, labels))
    # Placed by count, Paris's B-location landed on "visits" and Paris got O: a perfect tagger scored F1 0.5 here.
    assert out.tolist() == encoded.labels.tolist()
    assert tagging_metrics(names, out, encoded.labels, encoded.word_offsets)["f1"] == 1.0


def test_entity_f1_equals_a_hand_computed_value():
    names = ("O", "B-per", "I-per", "B-loc", "I-loc")
    gold = [[1, 2, 0, 3], [0, 3, 4, 0, 1]]
    predicted = [[1, 2, 0, 0], [0, 3, 0, 0, 2]]
    # Gold entities: per(0-1), loc(3) | loc(1-2), per(4). Predicted: per(0-1) | loc(1), and a lone I-per, which
    # strict IOB2 does not count as an entity. Correct: per(0-1) only. P = 1/2, R = 1/4, F1 = 2PR/(P+R) = 1/3.
    offsets = np.array([0, 4, 9])
    metrics = tagging_metrics(names, np.concatenate(predicted), np.concatenate(gold), offsets)
    assert metrics["precision"] == pytest.approx(1 / 2)
    assert metrics["recall"] == pytest.approx(1 / 4)
    assert metrics["f1"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] == pytest.approx(6 / 9)


# --- CRF ---------------------------------------------------------------------------------------------
def brute_force(emissions, start, end, transitions):
    """log Z and the best path of one sequence by enumerating every tag sequence."""
    length, tags = emissions.shape
    scores = {}
    for path in itertools.product(range(tags), repeat=length):
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(length))
        score += sum(transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = float(score)
    return math.log(sum(math.exp(s) for s in scores.values())), scores


def test_crf_log_likelihood_and_viterbi_equal_brute_force_enumeration():
    g = torch.Generator().manual_seed(0)
    emissions = torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    start, end, transitions = (torch.randn(3, generator=g, dtype=torch.float64),
                               torch.randn(3, generator=g, dtype=torch.float64),
                               torch.randn(3, 3, generator=g, dtype=torch.float64))
    log_z, scores = brute_force(emissions[0], start, end, transitions)
    mask = torch.ones(1, 4, dtype=torch.bool)
    for path, score in scores.items():
        ll = log_likelihood(emissions, torch.tensor([path]), mask, start, end, transitions)
        assert ll.item() == pytest.approx(score - log_z, abs=1e-10)
    best = max(scores, key=scores.get)
    assert tuple(viterbi(emissions, mask, start, end, transitions)[0].tolist()) == best


def test_crf_matches_pytorch_crf_on_padded_batches():
    g = torch.Generator().manual_seed(1)
    reference = torchcrf.CRF(5, batch_first=True)
    ours = LinearChainCRF(["O", "B-a", "I-a", "B-b", "I-b"])
    ours.reset_parameters(g)
    reference.load_state_dict(ours.state_dict())
    emissions = torch.randn(6, 7, 5, generator=g)
    lengths = torch.tensor([7, 1, 3, 5, 7, 2])
    mask = torch.arange(7)[None] < lengths[:, None]
    tags = torch.randint(0, 5, (6, 7), generator=g)
    expected = reference(emissions, tags, mask, reduction="none")
    assert torch.allclose(ours.log_likelihood(emissions, tags, mask), expected, atol=1e-5)
    decoded = ours.decode(emissions, mask)
    for row, path in enumerate(reference.decode(emissions, mask)):
        assert decoded[row, :lengths[row]].tolist() == path


def test_bio_constraints_forbid_an_i_tag_that_continues_nothing():
    names = ["O", "B-a", "I-a", "B-b", "I-b"]
    start, pairs = bio_masks(names)
    assert torch.isinf(start[[2, 4]]).all() and torch.isfinite(start[[0, 1, 3]]).all()
    allowed = {(names[i], names[j]) for i in range(5) for j in range(5) if torch.isfinite(pairs[i, j])}
    assert ("B-a", "I-a") in allowed and ("I-a", "I-a") in allowed
    assert ("O", "I-a") not in allowed and ("B-b", "I-a") not in allowed and ("I-b", "I-a") not in allowed
    crf = LinearChainCRF(names, bio_constraints=True)
    emissions = torch.zeros(1, 3, 5)
    emissions[0, :, 2] = 10.0  # the scores ask for I-a everywhere
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert crf.decode(emissions, mask)[0].tolist() == [1, 2, 2]  # B-a I-a I-a: the best path BIO allows
    assert LinearChainCRF(names).decode(emissions, mask)[0].tolist() == [2, 2, 2]


# --- trials ------------------------------------------------------------------------------------------
def crf_params(trial: Trial) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trial.model.crf.named_parameters()}


def test_crf_transitions_come_from_the_wi_seed_only(ner_config, options):
    base = crf_params(Trial(ner_config(head="crf"), options))
    torch.manual_seed(12345)  # the global RNG must not matter
    same = crf_params(Trial(ner_config(head="crf", do_seed=7, dropout_seed=9), options))
    other = crf_params(Trial(ner_config(head="crf", wi_seed=2), options))
    for name in base:
        assert torch.equal(base[name], same[name]), name
        assert not torch.equal(base[name], other[name]), name
        assert base[name].abs().max() <= 0.1


@pytest.mark.parametrize("head", ["linear", "crf"])
def test_tagging_trials_rerun_bit_identically_and_store_word_predictions(ner_config, options, tmp_path, head):
    config = ner_config(head=head, bio_constraints=head == "crf", evals_per_epoch=2)
    curves = []
    for run in range(2):
        store = Store(tmp_path / f"{head}-{run}.db")
        trial_id, outcome, _ = run_stored(config, options, store)
        assert outcome.status == "complete"
        curves.append(store.curves([trial_id]).drop(columns=["trial_id"]))
        dev_words = sum(1 for line in Path(config.dev_file).read_text().splitlines() if line.strip())
        stored = {(p.split, p.point): p.values for p in outcome.predictions}
        assert len(stored[("dev", "gold")]) == dev_words
        assert set(outcome.final_metrics) == {"f1", "precision", "recall", "accuracy", "loss"}
    assert curves[0].equals(curves[1])
    assert outcome.baseline_metric == 0.0  # all O finds no entity


def test_the_trial_key_of_earlier_trials_is_unchanged_by_the_tagging_fields():
    # Computed before these fields existed (commit 698723d).
    assert TrialConfig(task="rte", lr=1e-4).trial_key() == "12aa000254af7361"
    own = TrialConfig(task="classification", train_file="a.csv", dev_file="b.csv", label_names="a,b", metric="mcc")
    assert own.trial_key() == "ebb4b3c84ff621ae"
    assert TrialConfig(task="ner", train_file="a.conll", dev_file="b.conll", head="crf").trial_key() != \
        TrialConfig(task="ner", train_file="a.conll", dev_file="b.conll").trial_key()


@pytest.mark.parametrize("stabilizer", [dict(optimizer="bertadam"), dict(reinit_layers=1), dict(llrd=0.8),
                                        dict(mixout=0.2), dict(pretrained_wd=1e-2), dict(eval_precision="int8")])
def test_each_stabilizer_runs_on_a_crf_tagger_and_changes_its_result(ner_config, options, stabilizer):
    plain = Trial(ner_config(head="crf"), options).run(lambda points: None)[0]
    stabilized = Trial(ner_config(head="crf", **stabilizer), options).run(lambda points: None)[0]
    assert stabilized.status == "complete" and math.isfinite(stabilized.final_metrics["loss"])
    assert stabilized.final_metrics["loss"] != plain.final_metrics["loss"]


def test_every_command_works_on_a_tagging_store(tiny_bert_dir, ner_files, tmp_path):
    """A study with early stopping, runs, report, diagnose and a landscape, on NER with a CRF head."""
    from typer.testing import CliRunner

    from steadytune.cli import app

    runner, store = CliRunner(), tmp_path / "ner.db"
    spec = write(tmp_path / "spec.yaml", "\n".join([
        "name: ner-tiny", "tasks: [ner]", "wi_seeds: 1-3", "do_seeds: 1", "early_stop: start=3,fraction=0.5,keep=1",
        f"model: {tiny_bert_dir}", f"train_file: {ner_files[0]}", f"dev_file: {ner_files[1]}", f"label_names: {LABELS}",
        "head: crf", "bio_constraints: true", "batch_size: 8", "max_length: 48", "epochs: 2", "lr: 1.0e-3",
        "evals_per_epoch: 2", ""]))
    cache = ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = runner.invoke(app, ["study", "run", str(spec), "--store", str(store), *cache])
    assert result.exit_code == 0, result.output
    with Store(store) as opened:
        trials = opened.trials()
    assert sorted(trials.status) == ["complete", "stopped", "stopped"]
    assert runner.invoke(app, ["runs", str(store)]).exit_code == 0
    result = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "f1" in next((tmp_path / "report").glob("*.html")).read_text()
    result = runner.invoke(app, ["diagnose", str(store), "--out", str(tmp_path / "diag")])
    assert result.exit_code == 0, result.output
    args = ["train", "--task", "ner", "--model", str(tiny_bert_dir), "--train-file", str(ner_files[0]), "--dev-file",
            str(ner_files[1]), "--label-names", LABELS, "--head", "crf", "--batch-size", "8", "--max-length", "48",
            "--epochs", "1", "--lr", "1e-3", "--save-checkpoints", "2", "--store", str(store), *cache]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    trial_id = str(len(trials) + 1)
    out = tmp_path / "landscape"
    result = runner.invoke(app, ["landscape", "line", str(store), trial_id, "--points", "3", "--out", str(out),
                                 "--train-examples", "8", "--dev-examples", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    line = next(out.glob("*.csv"))
    import pandas as pd

    cells = pd.read_csv(line)
    assert {"train_loss", "dev_metric"} <= set(cells.columns) and cells["train_loss"].notna().all()


def test_head_options_outside_tagging_are_one_line_errors(tiny_bert_dir, glue_dir, tmp_path):
    from typer.testing import CliRunner

    from steadytune.cli import app

    result = CliRunner().invoke(app, ["train", "--task", "rte", "--head", "crf", "--store", str(tmp_path / "r.db")])
    assert result.exit_code != 0 and "apply to --task ner" in result.output
    result = CliRunner().invoke(app, ["train", "--task", "ner", "--bio-constraints", "--store", str(tmp_path / "r.db")])
    assert result.exit_code != 0 and "needs --head crf" in result.output


def test_collapse_in_tagging_is_every_word_given_one_tag():
    """A healthy tagger gives ~95% of words O; that is no collapse, while an all-O batch is. The same 0.96 share is
    collapse for a sentence classifier."""
    import pandas as pd

    from steadytune.analysis import build_results
    from steadytune.analysis.gradients import diagnosis

    shares = {1: 0.96, 2: 1.0, 3: 0.96}
    tasks = {1: "ner", 2: "ner", 3: "rte"}
    trials = pd.DataFrame({"id": [1, 2, 3], "task": [tasks[k] for k in (1, 2, 3)], "recipe": None, "status": "complete",
                           "wi_seed": [1, 2, 3], "do_seed": 1, "metric": ["f1", "f1", "accuracy"],
                           "final_metric": [0.3, 0.0, 0.6], "best_metric": [0.3, 0.0, 0.6],
                           "baseline_metric": [0.0, 0.0, 0.5271], "total_steps": 100, "cfg.warmup": 0.1})
    curves = pd.DataFrame([(t, s, s / 100, "diag", "pred_top_share", share) for t, share in shares.items()
                           for s in range(1, 101, 10)], columns=["trial_id", "step", "epoch", "split", "metric", "value"])
    collapsed = diagnosis(build_results(trials, curves)).set_index("id")["class_collapse"]
    assert collapsed.to_dict() == {1: False, 2: True, 3: True}


def test_split_dev_halves_tagged_sentences_and_scores_both(ner_config, options):
    trial = Trial(ner_config(split_dev=True), options)
    assert len(trial.inputs.dev) + len(trial.inputs.test) == 24
    outcome, _ = trial.run(lambda points: None)
    assert {"f1", "test_f1"} <= set(outcome.final_metrics)
    stored = {(p.split, p.point): p.values for p in outcome.predictions}
    assert len(stored[("test", "final")]) == len(trial.inputs.test.labels)
