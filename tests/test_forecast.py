"""The failure forecaster: features (live = stored, and by hand), the model against scikit-learn's pipeline,
its JSON file, and held-out evaluation on planted grids."""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.forecast.evaluation import evaluate, fit_on, pooled
from steadytune.forecast.features import FEATURES, feature_table, trial_features
from steadytune.forecast.model import Forecaster, ForecastError
from steadytune.storage.store import CurvePoint, Store, TrialOutcome
from steadytune.training.trial import Trial

runner = CliRunner()


def frame(points: list[CurvePoint]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(p) for p in points])


def test_features_of_a_stored_curve_equal_those_computed_live(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(epochs=2, evals_per_epoch=2)
    trial = Trial(config, options.model_copy(update={"log_grads_every": 1}))
    live: list[CurvePoint] = []
    outcome, pending = trial.run(live.extend)
    live += pending
    with Store(tmp_path / "r.db") as store:
        trial_id = store.record_trial(config.model_dump(mode="json"), config.trial_key(), 1, None, outcome, live)
        stored = store.curves([trial_id])
    assert trial.total_steps == 8
    for step in range(trial.total_steps + 1):
        at_step = [p for p in live if p.step <= step]  # what the running trial had at that step
        now = trial_features(frame(at_step) if at_step else frame(live).iloc[:0], step, "accuracy",
                             outcome.baseline_metric, 2)
        assert trial_features(stored, step, "accuracy", outcome.baseline_metric, 2) == now
    assert trial_features(stored, 8, "accuracy", outcome.baseline_metric, 2)["has_dev"] == 1.0


def test_features_equal_a_hand_computation():
    points = [CurvePoint(s, s / 10, "train", "loss", v) for s, v in zip(range(1, 11), np.linspace(0.7, 0.6, 10))]
    points += [CurvePoint(s, s / 10, "diag", f"grad.layer_{layer}", g * 10.0 ** -s) for s in (1, 5)
               for layer, g in ((1, 1.0), (2, 3.0), (3, 5.0), (4, 1.0), (5, 1.0), (6, 1.0))]
    points += [CurvePoint(5, 0.5, "diag", "grad.total", 200.0), CurvePoint(5, 0.5, "diag", "pred_top_share", 0.9),
               CurvePoint(5, 0.5, "dev", "accuracy", 0.55)]
    got = trial_features(frame(points), 5, "accuracy", 0.527, 2)
    loss = np.linspace(0.7, 0.6, 10)[:5]
    assert got["loss_ratio"] == pytest.approx(loss[-1] / math.log(2))  # last fifth of 5 points: the last one
    assert got["loss_drop"] == pytest.approx((0.7 - loss[-1]) / math.log(2))
    # lower third of 6 layers = layers 1 and 2: mean 2e-1 at step 1, 2e-5 at step 5
    assert got["lower_grad_log_ratio"] == pytest.approx(-4.0)
    assert got["grad_total_log"] == pytest.approx(math.log10(200))
    assert (got["top_share"], got["pooler_saturation"]) == (0.9, 0.0)
    assert got["dev_margin"] == pytest.approx(0.55 - 0.527) and got["has_dev"] == 1.0
    before = trial_features(frame(points), 4, "accuracy", 0.527, 2)
    assert (before["dev_margin"], before["has_dev"], before["lower_grad_log_ratio"]) == (0.0, 0.0, 0.0)


def planted_grid(task: str, runs: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials of which every third fails, whose loss stays at ln 2 (failed) or falls (learned), plus noise."""
    rng = np.random.default_rng(seed)
    trials, curves = [], []
    for i in range(runs):
        fails = i % 3 == 0
        trial_id = seed * 1000 + i
        trials.append({"id": trial_id, "task": task, "total_steps": 100, "metric": "accuracy",
                       "baseline_metric": 0.5, "failed": fails, "source": "planted"})
        for step in range(1, 101):
            loss = math.log(2) * (1.0 if fails else max(0.3, 1 - step / 40)) + rng.normal(0, 0.02)
            curves.append({"trial_id": trial_id, "step": step, "epoch": step / 100, "split": "train",
                           "metric": "loss", "value": loss})
    return pd.DataFrame(trials), pd.DataFrame(curves)


def test_the_model_computes_what_scikit_learns_pipeline_predicts_and_reads_back_from_json(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    trials, curves = planted_grid("rte", 30, 1)
    forecaster = fit_on(trials, curves, 0.3, "planted")
    table = feature_table(trials, curves, 0.3)
    x, y = table[list(FEATURES)].to_numpy(float), trials["failed"].to_numpy(bool)
    # the reference: scikit-learn's own scaler and model, constant features left as they are
    keep = x.std(axis=0) > 0
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")).fit(x[:, keep], y)
    assert np.allclose(forecaster.probability(table), pipeline.predict_proba(x[:, keep])[:, 1], atol=1e-9)
    path = tmp_path / "f.json"
    forecaster.save(path)
    assert Forecaster.load(path) == forecaster
    path.write_text(path.read_text().replace('"fraction": 0.3', '"fraction": 7'))
    with pytest.raises(ForecastError, match="damaged forecaster"):
        Forecaster.load(path)
    (tmp_path / "pickle.json").write_bytes(b"\x80\x04\x95")
    with pytest.raises(ForecastError, match="not a readable forecaster"):
        Forecaster.load(tmp_path / "pickle.json")


def test_held_out_evaluation_recovers_a_planted_signal():
    first, first_curves = planted_grid("rte", 30, 1)
    second, second_curves = planted_grid("mrpc", 30, 2)
    trials = pd.concat([first, second], ignore_index=True)
    curves = pd.concat([first_curves, second_curves], ignore_index=True)
    table = evaluate(trials, curves, fractions=(0.05, 0.3))
    late = table[table["fraction"] == 0.3]
    assert (late["auc"] == 1.0).all() and (late["recall"] == 1.0).all() and (late["good_stopped"] == 0).all()
    assert late["saved_fitted"].tolist() == pytest.approx([10 * 0.7 / 30] * 2)  # 10 failed runs, stopped at 30%
    assert late["saved_perfect"].tolist() == late["saved_fitted"].tolist()
    with pytest.raises(ForecastError, match="two tasks or two stores"):
        evaluate(first, first_curves)


def test_forecast_commands_on_stores(tmp_path):
    for task, seed in (("rte", 1), ("mrpc", 2)):
        trials, curves = planted_grid(task, 12, seed)
        with Store(tmp_path / f"{task}.db") as store:
            # Two studies per store, split by WI seed: the grid's runs, and another arm's
            study_ids = [store.study_id(f"{task}-{name}", {}) for name in ("grid", "other")]
            for row in trials.itertuples():
                config = {"task": task, "model": "m", "wi_seed": row.id, "do_seed": 1}
                outcome = TrialOutcome("complete", 100, 100, "accuracy", {"accuracy": 0.5 if row.failed else 0.8},
                                       {"accuracy": 0.8}, 100, 0.5, 1.0)
                own = curves[curves.trial_id == row.id]
                store.record_trial(config, f"{row.id:016x}", 1, study_ids[row.id % 3 == 0], outcome,
                                   [CurvePoint(int(c.step), c.epoch, c.split, c.metric, c.value) for c in own.itertuples()])
    stores = [str(tmp_path / "rte.db"), str(tmp_path / "mrpc.db")]
    chosen, chosen_curves = pooled(stores, ["rte-grid", "mrpc-other"])
    rte, mrpc = chosen[chosen["task"] == "rte"], chosen[chosen["task"] == "mrpc"]
    assert len(rte) == 8 and (rte["wi_seed"] % 3 != 0).all()  # the grid's runs only
    assert len(mrpc) == 4 and (mrpc["wi_seed"] % 3 == 0).all()  # the other arm's only
    assert set(chosen_curves["trial_id"]) >= set(chosen["id"])
    with pytest.raises(ForecastError, match="no store holds study nothing"):
        pooled(stores, ["nothing"])
    fitted = runner.invoke(app, ["forecast", "fit", *stores, "--fraction", "0.3", "--out", str(tmp_path / "f.json")],
                           env={"COLUMNS": "200"})
    assert fitted.exit_code == 0, fitted.output
    assert "24 trials (8 failed) of mrpc, rte" in fitted.output and Forecaster.load(tmp_path / "f.json").fraction == 0.3
    assert len(pooled(stores)[0]) == 24
    evaluated = runner.invoke(app, ["forecast", "eval", *stores], env={"COLUMNS": "200"})
    assert evaluated.exit_code == 0, evaluated.output
    assert "held-out forecasts over 24 trials" in evaluated.output and "30%" in evaluated.output
    simulated = runner.invoke(app, ["forecast", "simulate", *stores, "--budget", "3", "--fraction", "0.3"],
                              env={"COLUMNS": "200"})
    assert simulated.exit_code == 0, simulated.output
    assert simulated.output.count("compute to reach the whole grid's expected best: full 100%") == 2
    one = runner.invoke(app, ["forecast", "eval", stores[0]])
    assert one.exit_code == 2 and "two tasks or two stores" in one.output
    grids = runner.invoke(app, ["forecast", "eval", *stores, "--study", "rte-grid", "--study", "mrpc-grid"],
                          env={"COLUMNS": "200"})
    assert grids.exit_code == 0 and "held-out forecasts over 16 trials" in grids.output, grids.output


def test_replace_without_flags_is_plain_training_and_a_perfect_forecaster_saves_compute():
    from steadytune.analysis.expected import expected_max
    from steadytune.forecast.policies import compute_to_reach, simulate

    rng = np.random.default_rng(3)
    failed = np.arange(40) % 4 == 0  # a quarter fail, at the majority baseline
    final = np.where(failed, 0.5, rng.uniform(0.6, 0.8, 40))
    early = np.where(failed, 0.5, final - 0.05)
    nobody = simulate(final, failed, early, np.zeros(40, bool), 0.2, budget=5, n_sim=4000)
    plain = expected_max(final, n=[5]).iloc[0]
    replace = nobody.set_index("policy").loc["replace"]
    assert abs(replace["expected"] - plain["expected"]) < 3 * plain["sd"] / np.sqrt(4000)  # the exact E[max of 5]
    assert replace["failures"] == pytest.approx(5 * 0.25, abs=0.1)

    perfect = simulate(final, failed, early, failed, 0.2, budget=5, n_sim=4000).set_index("policy")
    assert perfect.loc["replace", "failures"] == 0 and perfect.loc["dodge+replace", "failures"] == 0
    assert perfect.loc["replace", "expected"] > perfect.loc["full", "expected"]
    reach = compute_to_reach(final, failed, early, failed, 0.2, n_sim=300).set_index("policy")["compute_share"]
    assert reach["full"] == 1.0 and reach["replace"] < 1.0 and reach["dodge+replace"] <= reach["dodge"]


def replace_args(tiny_bert_dir, glue_dir, tmp_path, store: str, seeds: str, *extra: str) -> list[str]:
    return ["study", "run", "--name", "replacing", "--tasks", "rte", "--wi-seeds", seeds, "--do-seeds", "1",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", "40", "--evals-per-epoch", "1", "--lr", "1e-3", "--threads", "1",
            "--store", store, "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.fixture(scope="module")
def plain_runs(tiny_bert_dir, glue_dir, tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.Series]:
    """WI seeds 1-8 trained to the end without a policy: their store, their trials, and each seed's loss ratio
    at the cut (half of training), which the policies decide on."""
    folder = tmp_path_factory.mktemp("plain")
    plain = runner.invoke(app, replace_args(tiny_bert_dir, glue_dir, folder, str(folder / "plain.db"), "1-8"))
    assert plain.exit_code == 0, plain.output
    with Store(folder / "plain.db", readonly=True) as store:
        trials, curves = store.trials(), store.curves()
    table = feature_table(trials, curves, 0.5).assign(wi_seed=trials["wi_seed"].to_numpy())
    return folder / "plain.db", trials, table.set_index("wi_seed")["loss_ratio"]


def flagging_the_highest_loss_ratio(ratio: pd.Series, path) -> float:
    """A forecaster at half of training that flags exactly the seeds whose loss ratio is at least the midpoint of
    the two highest: P >= 0.5 iff ratio >= cut. Returns the cut."""
    top = sorted(ratio)[-2:]
    cut = (top[0] + top[1]) / 2
    coef = [1.0 if name == "loss_ratio" else 0.0 for name in FEATURES]
    Forecaster(0.5, FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), tuple(coef), -cut, "test").save(path)
    return cut


@pytest.mark.slow
def test_replace_ends_with_the_requested_complete_runs_and_decides_as_the_forecaster_says(tiny_bert_dir, glue_dir,
                                                                                        tmp_path, plain_runs):
    # The eight seeds trained plainly: their features at the cut give what the policy must decide.
    _, trials, ratio = plain_runs
    # A forecaster that flags the requested seed (of 1-3) with the highest loss ratio: P >= 0.5 iff ratio >= cut.
    cut = flagging_the_highest_loss_ratio(ratio.loc[[1, 2, 3]], tmp_path / "f.json")
    expected, stopped, pending, next_seed = [], [], [1, 2, 3], 4
    while pending:  # the policy, replayed by hand on the plain runs' features
        seed = pending.pop(0)
        if ratio[seed] >= cut:
            stopped.append(seed)
            pending.append(next_seed)
            next_seed += 1
        else:
            expected.append(seed)

    store = str(tmp_path / "replace.db")
    args = replace_args(tiny_bert_dir, glue_dir, tmp_path, store, "1-3", "--policy", "replace", "--forecaster",
                        str(tmp_path / "f.json"))
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"3 complete, 0 stopped, {len(stopped)} forecast-stopped" in result.output
    with Store(store, readonly=True) as db:
        replaced = db.trials()
    complete = replaced[replaced.status == "complete"]
    assert sorted(complete.wi_seed) == sorted(expected) and len(complete) == 3
    assert sorted(replaced[replaced.status == "forecast-stopped"].wi_seed) == sorted(stopped) and stopped
    assert replaced[replaced.status == "forecast-stopped"].error.str.startswith("forecast-stopped: P(failed) = ").all()
    # A continued trial ends where an uninterrupted run of it ends.
    finals = trials.set_index("wi_seed").final_metric
    assert (complete.set_index("wi_seed").final_metric == finals.loc[complete.wi_seed].to_numpy()).all()
    again = runner.invoke(app, args, env={"COLUMNS": "200"})  # resumed: the same decisions, nothing run again
    assert again.exit_code == 0 and "ran 0 now" in again.output, again.output

    # Killed (kill -9) as soon as it has forecast-stopped a trial, then run again: the same decisions and results.
    killed = str(tmp_path / "killed.db")
    command = [sys.executable, "-m", "steadytune", *replace_args(tiny_bert_dir, glue_dir, tmp_path, killed, "1-3",
                                                                 "--policy", "replace", "--forecaster",
                                                                 str(tmp_path / "f.json"))]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None and not statuses(killed).count("forecast-stopped"):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert statuses(killed).count("complete") < 3  # it died mid-study
    resumed = runner.invoke(app, command[3:], env={"COLUMNS": "200"})
    assert resumed.exit_code == 0, resumed.output
    with Store(killed, readonly=True) as db:
        after = db.trials()
    for status in ("complete", "forecast-stopped"):
        assert sorted(after[after.status == status].wi_seed) == sorted(replaced[replaced.status == status].wi_seed)
    assert (after.set_index("trial_key").final_metric.dropna().sort_index()
            == replaced.set_index("trial_key").final_metric.dropna().sort_index()).all()


def test_dodge_replace_never_continues_a_flagged_trial_and_keeps_the_best_of_the_others(tiny_bert_dir, glue_dir,
                                                                                        tmp_path, plain_runs):
    plain, trials, ratio = plain_runs
    trials, ratio = trials[trials["wi_seed"] <= 4], ratio.loc[[1, 2, 3, 4]]
    with Store(plain, readonly=True) as store:
        at_cut = {int(row.wi_seed): store.dev_score_at(int(row.id), 20) for row in trials.itertuples()}
    flagging_the_highest_loss_ratio(ratio, tmp_path / "f.json")
    flagged = int(ratio.idxmax())
    others = [seed for seed in range(1, 5) if seed != flagged]
    kept = sorted(sorted(others, key=lambda seed: -at_cut[seed])[:2])  # Dodge's rule among the unflagged

    store = str(tmp_path / "both.db")
    args = replace_args(tiny_bert_dir, glue_dir, tmp_path, store, "1-4", "--early-stop", "start=4,fraction=0.5,keep=2",
                        "--policy", "dodge+replace", "--forecaster", str(tmp_path / "f.json"))
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 complete, 1 stopped, 1 forecast-stopped" in result.output
    with Store(store, readonly=True) as db:
        both = db.trials().set_index("wi_seed")
    assert both.loc[flagged, "status"] == "forecast-stopped" and both.loc[flagged, "steps_done"] == 20
    assert sorted(both.index[both.status == "complete"]) == kept
    finals = trials.set_index("wi_seed").final_metric
    assert (both.loc[kept, "final_metric"] == finals.loc[kept]).all()  # continued = trained in one go
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "ran 0 now" in again.output, again.output

    Forecaster(0.3, FEATURES, (0.0,) * 8, (1.0,) * 8, (0.0,) * 8, 0.0, "test").save(tmp_path / "other.json")
    mismatch = runner.invoke(app, [*args[:-1], str(tmp_path / "other.json")])
    assert mismatch.exit_code == 2 and "cuts once" in mismatch.output
    for extra, message in ((["--policy", "dodge"], "needs --early-stop"),
                           (["--policy", "full", "--early-stop", "start=4,fraction=0.5,keep=2"], "use --policy dodge"),
                           (["--policy", "dodge+replace", "--early-stop", "start=4,fraction=0.5,keep=2"],
                            "needs --forecaster")):
        refused = runner.invoke(app, replace_args(tiny_bert_dir, glue_dir, tmp_path, store, "1-4", *extra))
        assert refused.exit_code == 2 and message in refused.output, refused.output


def statuses(store: str) -> list[str]:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute("SELECT status FROM trials")]
    except sqlite3.OperationalError:  # not created yet
        return []


def test_replace_refuses_a_store_made_before_forecast_stops(tiny_bert_dir, glue_dir, tmp_path):
    from steadytune.storage.store import schema_sql

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(schema_sql("sqlite").replace(", 'forecast-stopped'", ""))
    Forecaster(0.5, FEATURES, (0.0,) * 8, (1.0,) * 8, (0.0,) * 8, 0.0, "test").save(tmp_path / "f.json")
    refused = runner.invoke(app, replace_args(tiny_bert_dir, glue_dir, tmp_path, str(old), "1", "--policy", "replace",
                                              "--forecaster", str(tmp_path / "f.json")))
    assert refused.exit_code == 2 and "created before forecast-stopped trials existed" in refused.output
    assert statuses(str(old)) == []  # nothing ran
    # Without a forecaster file the study fits its own (online), which needs the new status as much.
    online = runner.invoke(app, replace_args(tiny_bert_dir, glue_dir, tmp_path, str(old), "1", "--policy", "replace"))
    assert online.exit_code == 2 and "created before forecast-stopped trials existed" in online.output


def test_the_default_forecaster_is_what_its_script_fits_on_the_real_rows_beside_it(tmp_path):
    from steadytune.forecast.model import DEFAULT_PATH, fit, resolve

    shipped = Forecaster.load(resolve("default"))
    assert resolve("default") == DEFAULT_PATH and shipped.fraction == 0.2
    rows = pd.read_csv(DEFAULT_PATH.with_name("default-trials.csv"))
    assert set(rows["model"]) == {"minilm-l6"} and rows["failed"].isin((0, 1)).all() and 0 < rows["failed"].mean() < 1
    assert (rows["step"] == [max(1, math.ceil(0.2 * total)) for total in rows["total_steps"]]).all()
    refit = fit(rows, rows["failed"].astype(bool), 0.2, shipped.fitted_on)
    assert refit.features == shipped.features
    for name in ("mean", "scale", "coef"):
        assert np.allclose(getattr(refit, name), getattr(shipped, name), rtol=1e-9, atol=1e-12), name
    assert refit.intercept == pytest.approx(shipped.intercept, rel=1e-9)
    assert f"{len(rows)} real MiniLM-L6 trials" in shipped.fitted_on

    # It scores any store's trials at its own fraction, by task.
    trials, curves = planted_grid("rte", 12, 1)
    with Store(tmp_path / "s.db") as store:
        for row in trials.itertuples():
            outcome = TrialOutcome("complete", 100, 100, "accuracy", {"accuracy": 0.5 if row.failed else 0.8},
                                   {"accuracy": 0.8}, 100, 0.5, 1.0)
            own = curves[curves.trial_id == row.id]
            store.record_trial({"task": "rte", "model": "m", "wi_seed": row.id, "do_seed": 1}, f"{row.id:016x}", 1,
                               None, outcome,
                               [CurvePoint(int(c.step), c.epoch, c.split, c.metric, c.value) for c in own.itertuples()])
    scored = runner.invoke(app, ["forecast", "eval", str(tmp_path / "s.db"), "--forecaster", "default"],
                           env={"COLUMNS": "200"})
    assert scored.exit_code == 0, scored.output
    assert "forecaster default (fit on" in scored.output and "20%" in scored.output


def test_the_grids_lr_rule_picks_the_most_even_mix_and_says_why():
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "forecast_grids.py"
    spec = importlib.util.spec_from_file_location("forecast_grids", path)
    grids = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grids)

    def check(finals: dict[float, list[float]]) -> pd.DataFrame:
        return pd.DataFrame([{"cfg.lr": lr, "final": f, "baseline_metric": 0.5, "status": "complete"}
                             for lr, values in finals.items() for f in values])

    # 5e-5 never learns, 1e-4 fails 1 of 3, 2e-4 fails 2 of 3: both mix, 1e-4 and 2e-4 are as even; the smaller wins.
    lr, why = grids.chosen_lr(check({5e-5: [0.5, 0.5, 0.5], 1e-4: [0.5, 0.7, 0.7], 2e-4: [0.5, 0.5, 0.7]}))
    assert lr == 1e-4 and "lr 0.0001: 3 runs, 2 learned, 1 failed" in why
    lr, why = grids.chosen_lr(check({5e-5: [0.6, 0.6, 0.6], 1e-4: [0.7, 0.7, 0.7], 2e-4: [0.5, 0.5, 0.5]}))
    assert lr == 1e-4 and "largest that learns" in why
    assert grids.chosen_lr(check({5e-5: [0.5] * 3, 1e-4: [0.5] * 3, 2e-4: [0.5] * 3}))[0] is None
