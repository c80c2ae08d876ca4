"""The SQLite store: round trip, atomic completion, interrupted trials, export."""
from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.storage.store import CurvePoint, Store, StoreError, TrialOutcome, export, schema_sql
from steadytune.studies.claims import Claim, Claims
from steadytune.training.records import RESULT_STATUSES

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
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60000


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


# --- durability: claims, read-only files, full disks, damaged files, old stores -----------------------
def test_claims_are_exclusive_expire_and_end_with_the_result(tmp_path):
    now = [1000.0]  # the claims' clock, moved by hand: a lapsed lease needs no sleep

    def clock() -> float:
        return now[0]

    with Store(tmp_path / "r.db") as first, Store(tmp_path / "r.db") as second:
        a = Claims(first, None, "driver-a", lease_seconds=60, clock=clock)
        b = Claims(second, None, "driver-b", lease_seconds=60, clock=clock)
        assert a.take("key1", RESULT_STATUSES) is Claim.CLAIMED
        assert b.take("key1", RESULT_STATUSES) is Claim.BUSY
        assert b.holder("key1") == "driver-a"
        assert a.take("key1", RESULT_STATUSES) is Claim.CLAIMED  # renewing one's own claim
        first.record_trial(CONFIG, "key1", 1, None, outcome(), [])
        assert a.take("key1", RESULT_STATUSES) is Claim.DONE and b.holder("key1") is None
        assert b.take("key2", RESULT_STATUSES) is Claim.CLAIMED
        now[0] += 59
        assert a.take("key2", RESULT_STATUSES) is Claim.BUSY  # within driver-b's lease
        now[0] += 2  # driver-b died: its claim lapses and another driver may take the trial
        assert a.take("key2", RESULT_STATUSES) is Claim.CLAIMED
        a.release()
        assert b.take("key2", RESULT_STATUSES) is Claim.CLAIMED


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}:{finished.stdout.strip()}:0badc0de"  # a process that has exited
    elsewhere = f"another-host-{socket.gethostname()}:1:0badc0de"
    with Store(tmp_path / "r.db") as store:
        def take(key: str, owner: str | None = None) -> Claim:
            return Claims(store, None, owner).take(key, RESULT_STATUSES)

        assert take("k1", dead) is Claim.CLAIMED
        assert take("k1") is Claim.CLAIMED  # no need to wait out the 60 s lease
        assert take("k2", elsewhere) is Claim.CLAIMED
        assert take("k2") is Claim.BUSY  # another host's process may be alive
        assert take("k3") is Claim.CLAIMED
        assert take("k3") is Claim.BUSY  # this live process holds it


def test_a_heartbeat_keeps_claims_alive_and_the_end_releases_them(tmp_path):
    now = [1000.0]
    with Store(tmp_path / "r.db") as store:
        claims = Claims(store, 3, "me", lease_seconds=60, clock=lambda: now[0])
        assert claims.take("key1", ()) is Claim.CLAIMED
        now[0] += 50
        claims.renew()  # what the heartbeat does every 20 s
        now[0] += 50  # past the first lease, within the renewed one
        assert claims.holder("key1") == "me"
        now[0] += 11
        assert claims.holder("key1") is None  # no heartbeat: the claim lapsed


def test_the_heartbeat_thread_renews_claims_until_the_block_ends(tmp_path):
    with Store(tmp_path / "r.db") as store:
        claims = Claims(store, 3, "me", lease_seconds=0.3)
        assert claims.take("key1", ()) is Claim.CLAIMED

        def expiry() -> float:
            return store.connect().execute("SELECT expires_at FROM claims WHERE owner = 'me'").fetchone()[0]

        first = expiry()
        with claims:
            deadline = time.monotonic() + 60
            while expiry() == first:  # waits on the renewal itself, however loaded the machine
                assert time.monotonic() < deadline, "the heartbeat never renewed the claim"
                time.sleep(0.02)
        assert claims.holder("key1") is None  # released at the end of the block, not left to lapse


def test_study_trials_keep_their_real_start_time(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.record_trial(CONFIG, "key1", 1, None, outcome(), [], started_at=time.time() - 30)
        row = store.trials().iloc[0]
        assert 29 < row.finished_at - row.started_at < 60


def test_a_full_disk_is_one_line_and_keeps_what_was_stored(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.record_trial(CONFIG, "kept", 1, None, outcome(), [CurvePoint(1, 0.1, "dev", "accuracy", 0.5)])
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite reports SQLITE_FULL, as on ENOSPC
        trial_id = store.start_trial(CONFIG, "big", dropout_seed=1)
        many = [CurvePoint(s, s / 10, "train", "loss", 0.5) for s in range(20000)]
        with pytest.raises(StoreError, match="disk full .* while writing curve points; that write was rolled back"):
            store.add_points(trial_id, many)
        assert store.curves([trial_id]).empty
        assert store.latest_trial("kept", None)["status"] == "complete" and len(store.curves()) == 1


def test_a_disk_full_mid_trial_says_what_was_kept(tiny_trial_config, options, tmp_path):
    from steadytune.studies.single import run_stored

    with Store(tmp_path / "r.db") as store:
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 12}")
        with pytest.raises(StoreError) as caught:
            run_stored(tiny_trial_config(max_steps=3000, evals_per_epoch=1), options, store)
    message = str(caught.value)
    assert "disk full" in message and "training stopped at step" in message and "\n" not in message, message
    with Store(tmp_path / "r.db", readonly=True) as store:
        row = store.trials().iloc[0]
        # The failed curve write was rolled back; the small status update still fitted, and the message says so.
        assert row.status == "failed" and "kept in" in message and "as 'failed'" in message
        assert "disk full" in row.error and len(store.curves()) > 0  # the curve up to the last evaluation


def test_a_damaged_file_is_reported_in_one_line(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as store:
        for k in range(300):
            store.record_trial(CONFIG, f"key{k}", 1, None, outcome(), [CurvePoint(s, 0.1, "train", "loss", 0.5)
                                                                       for s in range(20)])
    data = bytearray(path.read_bytes())
    data[8192:len(data) - 4096] = b"\xff" * (len(data) - 12288)  # pages in the middle overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="the store file is damaged .*malformed.* .recover"):
        with Store(path, readonly=True) as store:
            store.trials()
            store.curves()


def test_read_only_opening_writes_nothing_and_reads_old_stores(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # a store written before the threads/device/data_hash columns existed
    db.executescript(schema_sql("sqlite").replace("    error TEXT,\n    threads INTEGER,\n    device TEXT,\n    data_hash TEXT\n",
                                    "    error TEXT\n"))
    db.execute("INSERT INTO trials (trial_key, task, model, wi_seed, do_seed, dropout_seed, config_json, status,"
               " started_at) VALUES ('k', 'rte', 'm', 1, 1, 1, '{\"lr\": 1}', 'complete', 0)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with Store(path, readonly=True) as store:
        row = store.trials().iloc[0]
        assert row.status == "complete" and row.threads is None and row["cfg.lr"] == 1
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
    with Store(path) as store:  # opened for writing, it gains the new columns
        assert {"threads", "device", "data_hash"} <= set(store.trials().columns)
        store.record_trial(CONFIG, "k2", 1, None, outcome(threads=2, device="cpu", data_hash="ab"), [])
        assert store.trials().iloc[1].threads == 2
    with pytest.raises(StoreError, match="not a steadytune store"):
        sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE x (y)").connection.commit()
        Store(tmp_path / "other.db", readonly=True)
    with pytest.raises(StoreError, match="store file does not exist"):
        Store(tmp_path / "missing.db", readonly=True)


def test_gc_frees_only_what_no_trial_can_use(tmp_path):
    from steadytune.storage.cleanup import collect

    keys = {name: f"{n:016x}" for n, name in enumerate(["done", "paused", "interrupted", "failed", "running"], 1)}
    with Store(tmp_path / "r.db") as store:
        study = store.study_id("s", {})
        store.record_trial(CONFIG, keys["done"], 1, study, outcome(), [])
        store.record_trial(CONFIG, keys["paused"], 1, study, outcome("stopped", steps_done=3), [])
        store.record_trial(CONFIG, keys["failed"], 1, study, outcome("failed", error="OSError"), [])
        Claims(store, study, "a-live-driver").take(keys["running"], ())
        layout = store.layout
        layout.states.mkdir()
        states = {name: layout.state(study, key) for name, key in keys.items()}
        for path in states.values():
            path.write_bytes(b"x" * 100)
        orphan = layout.state(study + 7, keys["done"])  # of a study the store does not hold
        orphan.write_bytes(b"x" * 50)
        (layout.states / "notes.txt").write_text("mine")  # not a file steadytune names: left alone
        snapshots = {name: layout.snapshots(key) / "step-4.safetensors" for name, key in keys.items()}
        for path in snapshots.values():
            path.parent.mkdir(parents=True)
            path.write_bytes(b"y" * 1000)
        store.record_files([(snapshots["failed"], "ab" * 32)])

        planned = collect(store, dry_run=True)
        assert all(item.path.exists() for item in planned)  # a dry run removes nothing
        gone = {item.path for item in collect(store)}
        assert gone == {item.path for item in planned} == {states["done"], orphan, snapshots["failed"],
                                                             snapshots["interrupted"]}
        assert not any(path.exists() for path in gone) and not snapshots["failed"].parent.exists()
        assert all(path.exists() for path in (states["paused"], states["interrupted"], states["failed"],
                                              states["running"], snapshots["done"], snapshots["paused"],
                                              snapshots["running"], layout.states / "notes.txt"))
        assert store.recorded_hash(snapshots["failed"]) is None  # its record went with it
    result = CliRunner().invoke(app, ["gc", str(tmp_path / "r.db")])
    assert result.exit_code == 0 and "0 file(s), 0 bytes" in result.output, result.output
