"""Seed soups: a soup of one model is the model, the uniform soup is the mean, greedy never loses dev, end to end."""
from __future__ import annotations

import pandas as pd
import torch
from typer.testing import CliRunner

from steadytune.analysis.soup import SoupEvaluator, average, ingredients, soups
from steadytune.cli import app
from steadytune.config import RunOptions
from steadytune.storage.store import Store
from steadytune.training.checkpoints import list_checkpoints, load_checkpoint
from steadytune.training.layout import StoreFiles


def _study(tmp_path, tiny_bert_dir, glue_dir, *extra):
    store = tmp_path / "s.db"
    result = CliRunner().invoke(app, [
        "study", "run", "--tasks", "rte", "--recipes", "devlin2019", "--wi-seeds", "1-3", "--model", str(tiny_bert_dir),
        "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8", "--max-length", "48", "--max-steps",
        "4", "--lr", "1e-3", "--split-dev", "--keep-weights", "--store", str(store), "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    return store


def test_soups_of_an_arm(tmp_path, tiny_bert_dir, glue_dir):
    store = _study(tmp_path, tiny_bert_dir, glue_dir)
    items = ingredients(store, "devlin2019")
    assert len(items) == 3 and [i.dev for i in items] == sorted((i.dev for i in items), reverse=True)
    assert all(i.test is not None for i in items)
    with Store(store, readonly=True) as db:
        keys = db.trials()["trial_key"]
    assert all(list(list_checkpoints(StoreFiles(store).snapshots(k))) == [4] for k in keys)  # the final step alone
    evaluate = SoupEvaluator(items[0].config, RunOptions(device="cpu", threads=1), store)
    weights = [load_checkpoint(i.weights) for i in items]
    # A soup of one model, twice, is that model: the trial's own final dev and test scores, exactly.
    for item, w in zip(items, weights):
        assert evaluate(average([w, w])) == (item.dev, item.test)
    mean = average(weights)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(mean[name], (weights[0][name] + weights[1][name] + weights[2][name]) / 3)
    table = soups(items, evaluate).set_index("model")
    greedy = table[table.index.str.startswith("greedy")].iloc[0]
    assert greedy["dev"] >= items[0].dev and 1 <= greedy["ingredients"] <= 3
    assert table.filter(like="E[max of 3]", axis=0)["test"].iloc[0] <= max(i.test for i in items)
    result = CliRunner().invoke(app, ["soup", str(store), "--arm", "devlin2019", "--out", str(tmp_path / "soup.csv"),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "uniform soup" in result.output and "test half" in result.output
    assert len(pd.read_csv(tmp_path / "soup.csv")) == len(table)


def test_adapter_trials_keep_adapters_and_head_only(tmp_path, tiny_bert_dir, glue_dir):
    store = _study(tmp_path, tiny_bert_dir, glue_dir, "--adapter", "lora", "--lora-rank", "2")
    items = ingredients(store, "devlin2019")
    kept = load_checkpoint(items[0].weights)
    assert kept and all(".lora_" in n or n.startswith("classifier.") for n in kept)
    evaluate = SoupEvaluator(items[0].config, RunOptions(device="cpu", threads=1), store)
    assert evaluate(load_checkpoint(items[1].weights)) == (items[1].dev, items[1].test)


def test_a_soup_needs_kept_weights(tmp_path, tiny_bert_dir, glue_dir):
    store = tmp_path / "s.db"
    result = CliRunner().invoke(app, [
        "study", "run", "--tasks", "rte", "--wi-seeds", "1-2", "--model", str(tiny_bert_dir), "--glue-dir",
        str(glue_dir), "--max-train", "16", "--batch-size", "8", "--max-length", "48", "--max-steps", "1",
        "--store", str(store), "--threads", "1"])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(app, ["soup", str(store), "--arm", "(no recipe)"])
    assert refused.exit_code == 2 and "--keep-weights" in refused.output
    refused = CliRunner().invoke(app, ["soup", str(store), "--arm", "nope"])
    assert refused.exit_code == 2 and "no complete trials of arm 'nope'" in refused.output
