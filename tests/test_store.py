"""The SQLite store: round trip, atomic completion, interrupted trials, export."""
from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from steadytune.store import CurvePoint, Store, StoreError, TrialOutcome, export

CONFIG = {"task": "rte", "model": "m", "recipe": "devlin2019", "wi_seed": 1, "do_seed": 2, "lr": 2e-5}


def outcome(status="complete", **overrides) -> TrialOutcome:
    values = dict(status=status, steps_done=10, total_steps=10, metric="accuracy",
                  final_metrics={"accuracy": 0.6, "loss": 0.7}, best_metrics={"accuracy": 0.65, "loss": 0.69},
                  best_step=5, baseline_metric=0.527, wall_seconds=3.5)
    values.update(overrides)
    return TrialOutcome(**values)


def test_round_trip(tmp_path):
    with Store(tmp_path / "r.db") as store:
        trial_id = store.start_trial(CONFIG, "key1", dropout_seed=1)
        store.add_points(trial_id, [CurvePoint(1, 0.1, "train", "loss", 0.9), CurvePoint(5, 0.5, "dev", "accuracy", 0.65)])
        store.finish_trial(trial_id, outcome(), [CurvePoint(10, 1.0, "dev", "accuracy", 0.6)])
    with Store(tmp_path / "r.db") as store:  # reopened: everything persisted
        trials = store.trials()
        row = trials.iloc[0]
        assert (row.status, row.wi_seed, row.do_seed, row.dropout_seed) == ("complete", 1, 2, 1)
        assert (row.final_metric, row.best_metric, row.best_step, row.baseline_metric) == (0.6, 0.65, 5, 0.527)
        assert row["cfg.lr"] == 2e-5 and row["cfg.recipe"] == "devlin2019"
        curves = store.curves()
        assert curves[["step", "split", "metric", "value"]].values.tolist() == [
            [5, "dev", "accuracy", 0.65], [10, "dev", "accuracy", 0.6], [1, "train", "loss", 0.9]]
        assert store.latest_trial("key1", None)["id"] == trial_id
        assert store.dev_score_at(trial_id, 7) == 0.65 and store.dev_score_at(trial_id, 10) == 0.6
        assert store.dev_score_at(trial_id, 4) is None


def test_wal_mode_and_busy_timeout(tmp_path):
    with Store(tmp_path / "r.db") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 60000


def test_failed_finish_leaves_trial_running_without_partial_rows(tmp_path):
    with Store(tmp_path / "r.db") as store:
        trial_id = store.start_trial(CONFIG, "key1", dropout_seed=1)

        def bad_points():
            yield CurvePoint(1, 0.1, "dev", "accuracy", 0.5)
            raise RuntimeError("crash while writing")

        with pytest.raises(RuntimeError):
            store.finish_trial(trial_id, outcome(), bad_points())
        assert store.trials().iloc[0].status == "running"
        assert len(store.curves()) == 0
        assert store.latest_trial("key1", None)["status"] == "running"


def test_record_trial_replaces_unfinished_attempts(tmp_path):
    with Store(tmp_path / "r.db") as store:
        study = store.study_id("s", {"tasks": ["rte"]})
        assert store.study_id("s", {"tasks": ["rte"]}) == study
        crashed = store.start_trial(CONFIG, "key1", dropout_seed=1, study_id=study)
        store.add_points(crashed, [CurvePoint(1, 0.1, "train", "loss", 0.9)])
        outside = store.start_trial(CONFIG, "key1", dropout_seed=1)  # same trial, no study: not touched
        rerun = store.record_trial(CONFIG, "key1", 1, study, outcome(), [CurvePoint(2, 0.2, "dev", "accuracy", 0.6)])
        stopped = store.record_trial(CONFIG, "key2", 1, study, outcome(status="stopped", steps_done=3), [])
        assert store.latest_trial("key2", study)["id"] == stopped
        done = store.record_trial(CONFIG, "key2", 1, study, outcome(), [])
        assert store.trials().id.tolist() == [outside, rerun, done]
        assert store.curves().trial_id.tolist() == [rerun]  # the crashed attempt's rows went with it
        again = store.record_trial(CONFIG, "key1", 1, study, outcome(), [])  # finished attempts are kept
        assert store.trials().id.tolist() == [outside, rerun, done, again]


def test_terminal_status_required(tmp_path):
    with Store(tmp_path / "r.db") as store:
        trial_id = store.start_trial(CONFIG, "k", dropout_seed=1)
        with pytest.raises(ValueError):
            store.finish_trial(trial_id, outcome(status="running"))


def test_not_a_store(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        Store(path)
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing" / "r.db")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path, fmt):
    with Store(tmp_path / "r.db") as store:
        trial_id = store.start_trial(CONFIG, "key1", dropout_seed=1)
        store.finish_trial(trial_id, outcome(), [CurvePoint(s, s / 10, "train", "loss", 1 / s) for s in range(1, 11)])
        assert export(store, "trials", fmt, tmp_path / f"t.{fmt}") == 1
        assert export(store, "curves", fmt, tmp_path / f"c.{fmt}") == 10
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    trials, curves = read(tmp_path / f"t.{fmt}"), read(tmp_path / f"c.{fmt}")
    assert trials.loc[0, "best_metric"] == 0.65 and trials.loc[0, "cfg.task"] == "rte"
    assert curves.value.tolist() == pytest.approx([1 / s for s in range(1, 11)])


def test_concurrent_writers_share_the_file(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as first, Store(path) as second:
        a = first.start_trial(CONFIG, "a", dropout_seed=1)
        b = second.start_trial(CONFIG, "b", dropout_seed=1)
        first.finish_trial(a, outcome())
        second.finish_trial(b, outcome())
    assert sqlite3.connect(path).execute("SELECT count(*) FROM trials WHERE status='complete'").fetchone()[0] == 2
