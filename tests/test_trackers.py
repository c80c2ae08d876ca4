"""Experiment trackers: what a trial logs to MLflow and TensorBoard, read back with their own readers
(mlflow's client, tensorboard's EventAccumulator) and compared with the store."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.storage.store import Store

mlflow = pytest.importorskip("mlflow")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

runner = CliRunner()


@pytest.fixture(autouse=True)
def _as_installed(monkeypatch):
    """MLflow as `make install` installs it (mlflow-skinny), with nothing set by hand: no file-store opt-in, no
    tracking URI; what steadytune sets for a folder it names is undone after each test."""
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def train_args(tiny_bert_dir, glue_dir, tmp_path, *extra: str) -> list[str]:
    return ["train", "--task", "rte", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32",
            "--batch-size", "8", "--max-length", "48", "--epochs", "2", "--evals-per-epoch", "2", "--log-grads-every",
            "2", "--wi-seed", "3", "--do-seed", "4", "--store", str(tmp_path / "runs.db"), "--cache-dir",
            str(tmp_path / "cache"), *extra]


def store_curve(store_path, split: str, metric: str) -> list[tuple[int, float]]:
    with Store(store_path, readonly=True) as store:
        curves = store.curves()
    rows = curves[(curves.split == split) & (curves.metric == metric)].sort_values("step")
    return list(zip(rows.step.astype(int), rows.value))


def test_a_trial_logs_its_config_seeds_and_curves_to_mlflow_and_tensorboard(tiny_bert_dir, glue_dir, tmp_path):
    uri, board = (tmp_path / "mlruns").as_uri(), tmp_path / "tb"
    result = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, tmp_path, "--track",
                                           f"mlflow={uri},tensorboard={board}"))
    assert result.exit_code == 0, result.output
    dev, loss = store_curve(tmp_path / "runs.db", "dev", "accuracy"), store_curve(tmp_path / "runs.db", "train", "loss")
    assert len(dev) == 4 and len(loss) > 4

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("steadytune").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["steadytune.status"] == "complete"
    params = run.data.params
    assert (params["task"], params["wi_seed"], params["do_seed"], params["lr"]) == ("rte", "3", "4", "2e-05")
    assert run.info.run_name.startswith("rte wi3 do4 ")
    assert run.data.tags["steadytune.dropout_seed"] == "3"  # unset: the WI seed's, as the trial used it
    with Store(tmp_path / "runs.db", readonly=True) as store:
        [trial] = store.trials().itertuples()
    summary = run.data.metrics  # the latest value of each metric: the summary's are logged once, at the end
    assert summary["summary/final_accuracy"] == trial.final_metric == dev[-1][1]
    assert summary["summary/best_accuracy"] == trial.best_metric
    assert summary["summary/majority_baseline"] == trial.baseline_metric
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "dev/accuracy"))
    assert history == dev  # the same floats at the same steps
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")) == loss
    grads = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "diag/grad.layer_1"))
    assert grads == store_curve(tmp_path / "runs.db", "diag", "grad.layer_1") and len(grads) >= 3

    [run_dir] = {p.parent for p in board.rglob("events.out.tfevents.*")}  # scalars and HParams: one run folder
    events = event_accumulator.EventAccumulator(str(run_dir))
    events.Reload()
    scalars = [(e.step, e.value) for e in events.Scalars("dev/accuracy")]
    assert [s for s, _ in scalars] == [s for s, _ in dev]
    assert all(abs(v - w) < 1e-6 for (_, v), (_, w) in zip(scalars, dev))  # TensorBoard keeps float32
    assert "dev/accuracy" in events.Tags()["scalars"] and "train/loss" in events.Tags()["scalars"]
    # The HParams plugin's record: the seeds to filter runs by, and the summary beside them.
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = [plugin_data_pb2.HParamsPluginData.FromString(content)
               for content in events.PluginTagToContent("hparams").values()]
    [start] = [h.session_start_info for h in hparams if h.HasField("session_start_info")]
    assert {name: value.number_value for name, value in start.hparams.items()
            if name.endswith("_seed")} == {"wi_seed": 3, "do_seed": 4, "dropout_seed": 3}
    assert events.Scalars("summary/final_accuracy")[0].value == pytest.approx(dev[-1][1], abs=1e-6)


@pytest.mark.parametrize("where", ["file-uri", "folder", "default"])
def test_mlflow_as_installed_logs_to_the_folders_it_is_given(where, tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = {"file-uri": f"mlflow={(tmp_path / 'a').as_uri()}", "folder": "mlflow=b", "default": "mlflow"}[where]
    folder = {"file-uri": tmp_path / "a", "folder": tmp_path / "b", "default": tmp_path / "mlruns"}[where]
    result = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, tmp_path, "--max-steps", "2", "--track", target))
    assert result.exit_code == 0 and "failed" not in result.output, result.output
    client = mlflow.tracking.MlflowClient(tracking_uri=folder.as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("steadytune").experiment_id])
    assert run.info.status == "FINISHED"


def test_tracking_uris_that_cannot_work_as_installed_are_refused_before_anything_runs(tiny_bert_dir, glue_dir,
                                                                                        tmp_path):
    for uri, says in (("sqlite:///mlflow.db", "needs the full mlflow package"),
                      ("nosuchscheme://x", "not a tracking URI MLflow can log to here")):
        refused = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, tmp_path, "--track", f"mlflow={uri}"))
        assert refused.exit_code == 2 and says in refused.output and "http://HOST:PORT" in refused.output
        assert len(refused.output.strip().splitlines()) == 1, refused.output
        pushed = runner.invoke(app, ["export", str(tmp_path / "none.db"), "--to", f"mlflow={uri}"])
        assert pushed.exit_code == 2 and says in pushed.output
    assert not (tmp_path / "runs.db").exists()  # refused before the store was opened


def test_export_pushes_a_finished_store_to_mlflow_once(tiny_bert_dir, glue_dir, tmp_path):
    args = ["study", "run", "--name", "pushed", "--tasks", "rte", "--wi-seeds", "1-2", "--do-seeds", "1",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", "6", "--evals-per-epoch", "2", "--store", str(tmp_path / "runs.db"),
            "--cache-dir", str(tmp_path / "cache")]
    assert runner.invoke(app, args).exit_code == 0
    uri = (tmp_path / "mlruns").as_uri()
    pushed = runner.invoke(app, ["export", str(tmp_path / "runs.db"), "--to", f"mlflow={uri}"])
    assert pushed.exit_code == 0 and "pushed 2 trial(s)" in pushed.output, pushed.output
    again = runner.invoke(app, ["export", str(tmp_path / "runs.db"), "--to", f"mlflow={uri}"])
    assert "pushed 0 trial(s)" in again.output and "2 were there already" in again.output
    # The store is known by the id it keeps, not by the path or URL it was opened by.
    (tmp_path / "runs.db").rename(tmp_path / "moved.db")
    moved = runner.invoke(app, ["export", str(tmp_path / "moved.db"), "--to", f"mlflow={uri}"])
    assert "pushed 0 trial(s)" in moved.output and "2 were there already" in moved.output, moved.output
    (tmp_path / "moved.db").rename(tmp_path / "runs.db")

    for wrong, says in ((["--to", "tensorboard"], "--to takes mlflow"), (["--to", f"mlflow={uri},mlflow"], "--to takes"),
                        (["--to", "mlflow", "--what", "curves"], "apply to files")):
        refused = runner.invoke(app, ["export", str(tmp_path / "runs.db"), *wrong])
        assert refused.exit_code == 2 and says in refused.output, refused.output

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("pushed").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    with Store(tmp_path / "runs.db", readonly=True) as store:
        trials = store.trials().set_index("trial_key")
    for run in runs:
        key = run.data.tags["steadytune.trial_key"]
        assert run.info.start_time == int(trials.loc[key, "started_at"] * 1000)
        history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "dev/accuracy"),
                                           key=lambda m: m.step)]
        assert history[-1] == trials.loc[key, "final_metric"]


def test_a_broken_tracker_warns_once_and_the_study_goes_on(tiny_bert_dir, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server that is down: refused at once
    args = ["study", "run", "--name", "down", "--tasks", "rte", "--wi-seeds", "1-3", "--model", str(tiny_bert_dir),
            "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8", "--max-length", "48",
            "--max-steps", "4", "--evals-per-epoch", "0", "--store", str(tmp_path / "runs.db"), "--cache-dir",
            str(tmp_path / "cache"), "--track", "mlflow=http://127.0.0.1:9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("--track mlflow failed") == 1 and "3 complete" in result.output, result.output
    unknown = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, tmp_path, "--track", "wandb"))
    assert unknown.exit_code == 2 and "unknown tracker 'wandb'" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
