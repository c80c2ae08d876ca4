"""The command line, run in-process: train, runs, export, recipes, and one-line errors."""
from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from steadytune.cli import app

runner = CliRunner()


def tiny_train_args(tiny_bert_dir, glue_dir, store, *extra):
    return ["train", "--task", "rte", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32",
            "--batch-size", "8", "--max-length", "48", "--epochs", "1", "--store", str(store), *extra]


def test_train_runs_export(tiny_bert_dir, glue_dir, tmp_path):
    store = tmp_path / "runs.db"
    result = runner.invoke(app, tiny_train_args(tiny_bert_dir, glue_dir, store, "--wi-seed", "2", "--do-seed", "3",
                                                "--evals-per-epoch", "2", "--cache-dir", str(tmp_path / "cache")))
    assert result.exit_code == 0, result.output
    assert "dev curve" in result.output and "status complete" in result.output

    listing = runner.invoke(app, ["runs", str(store)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0 and "complete" in listing.output and "1 trials" in listing.output

    out = tmp_path / "curves.parquet"
    exported = runner.invoke(app, ["export", str(store), "--what", "curves", "--format", "parquet", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    curves = pd.read_parquet(out)
    assert sorted(curves.query("split == 'dev' and metric == 'accuracy'").step.tolist()) == [2, 4]
    trials_csv = tmp_path / "trials.csv"
    assert runner.invoke(app, ["export", str(store), "--out", str(trials_csv)]).exit_code == 0
    row = pd.read_csv(trials_csv).iloc[0]
    assert (row.wi_seed, row.do_seed, row.dropout_seed, row["cfg.max_train"]) == (2, 3, 2, 32)


def test_config_file_and_recipe(tiny_bert_dir, glue_dir, tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text(f"model: {tiny_bert_dir}\nglue_dir: {glue_dir}\nmax_train: 16\nbatch_size: 8\nmax_length: 32\n")
    store = tmp_path / "runs.db"
    result = runner.invoke(app, ["train", "--config", str(config), "--recipe", "devlin2019", "--epochs", "1",
                                 "--store", str(store)])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "t.csv"
    runner.invoke(app, ["export", str(store), "--out", str(exported)])
    row = pd.read_csv(exported).iloc[0]
    assert (row.recipe, row["cfg.optimizer"], row["cfg.epochs"], row["cfg.max_train"]) == ("devlin2019", "bertadam", 1.0, 16)


def test_errors_are_one_line(tiny_bert_dir, tmp_path):
    cases = [
        (["train", "--glue-dir", str(tmp_path / "nowhere"), "--model", str(tiny_bert_dir), "--store",
          str(tmp_path / "r.db")], "nowhere"),
        (["train", "--lr", "-1", "--store", str(tmp_path / "r.db")], "--lr"),
        (["train", "--task", "nosuchtask", "--store", str(tmp_path / "r.db")], "nosuchtask"),
        (["train", "--model", str(tmp_path / "no-model"), "--store", str(tmp_path / "r.db")], "no-model"),
        (["export", str(tmp_path / "missing.db")], "missing.db"),
        (["recipes", "nope"], "unknown recipe"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_help_explains_every_option():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--wi-seed", "--do-seed", "--dropout-seed", "--evals-per-epoch", "--max-train", "--reinit-layers",
                 "--mixout", "--llrd", "--pretrained-wd", "--optimizer"):
        assert flag in result.output
    assert "default: 2e-05" in result.output


def test_recipes_lists_all():
    result = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("devlin2019", "mosbach2021", "zhang2021", "mixout", "llrd", "pretrained-wd"):
        assert name in result.output


def test_stabilizer_the_model_cannot_take_is_a_one_line_error(tiny_bert_dir, glue_dir, tmp_path):
    result = runner.invoke(app, tiny_train_args(tiny_bert_dir, glue_dir, tmp_path / "r.db", "--reinit-layers", "9"))
    assert result.exit_code == 2, result.output
    assert "3 transformer layers" in result.output and "Traceback" not in result.output


def test_runs_lists_unfinished_trials(tmp_path):
    from steadytune.storage.store import Store

    with Store(tmp_path / "r.db") as store:
        store.start_trial({"task": "rte", "model": "m", "wi_seed": 1, "do_seed": 2}, "k", dropout_seed=1)
    result = runner.invoke(app, ["runs", str(tmp_path / "r.db")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "running" in result.output and "0/?" in result.output


def test_study_plan_lists_trials_and_cost(tiny_bert_dir, glue_dir, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(f"tasks: [rte]\nrecipes: [devlin2019, mosbach2021]\nwi_seeds: 1-2\ndo_seeds: 1-3\n"
                    f"model: {tiny_bert_dir}\nglue_dir: {glue_dir}\nmax_train: 100\nepochs: 2\n"
                    f"early_stop: start=4,fraction=0.25,keep=2\n")
    result = runner.invoke(app, ["study", "plan", str(spec), "--batch-size", "10"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "8 trials" in result.output  # early stopping starts 4 per task x recipe
    assert "160 training steps" in result.output  # 8 trials x 2 epochs x 10 steps
    assert "cost 5.00 full-trial units" in result.output  # 2 groups x (4 x 0.25 + 2 x 0.75)
    bad = runner.invoke(app, ["study", "plan", str(spec), "--wi-seed", "3"])
    assert bad.exit_code == 2 and "wi_seeds" in bad.output
