"""Files beside a store are untrusted: snapshots, tokenization caches and trial keys are checked on read."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.config import RunOptions, TrialConfig
from steadytune.data.encoding import encode
from steadytune.errors import CheckpointError
from steadytune.landscape.analyses import line
from steadytune.landscape.sources import EvaluationSettings, TrialSnapshots
from steadytune.models.loading import load_tokenizer
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.checkpoints import load_checkpoint
from steadytune.training.layout import file_sha256

runner = CliRunner()


@pytest.fixture
def snapshots(tiny_trial_config, options, tmp_path):
    """A store with one complete tiny trial that kept 3 snapshots (steps 0, 2, 4)."""
    store = Store(tmp_path / "runs.db")
    trial_id = run_stored(tiny_trial_config(), options.model_copy(update={"save_checkpoints": 3}), store)[0]
    yield store, trial_id, store.layout.snapshots(store.trial_config(trial_id)[1])
    store.close()


def test_a_missing_final_snapshot_is_refused_not_replaced_by_a_middle_one(snapshots):
    store, trial_id, folder = snapshots
    assert sorted(p.name for p in folder.iterdir()) == [f"step-{s:06d}.safetensors" for s in (0, 2, 4)]
    (folder / "step-000004.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ended at step 4 but its newest snapshot is of step 2"):
        TrialSnapshots.load(store, trial_id)


def test_damaged_snapshots_are_refused(snapshots):
    store, trial_id, folder = snapshots
    path = folder / "step-000004.safetensors"
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)  # a flipped tail: the file still parses, its tensors changed
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the hash written with it"):
        load_checkpoint(path)
    path.write_bytes(b"garbage, not a safetensors file")
    with pytest.raises(CheckpointError, match="damaged snapshot"):
        load_checkpoint(path)
    path.write_bytes(bytes(data[:1000]))  # truncated
    with pytest.raises(CheckpointError, match="differs from the one the store recorded"):
        TrialSnapshots.load(store, trial_id)


def test_a_replaced_snapshot_is_refused_by_the_stores_record(snapshots):
    store, trial_id, folder = snapshots
    # A consistent forgery: another genuine snapshot (its own hash inside it checks out) under the end's name.
    shutil.copy(folder / "step-000002.safetensors", folder / "step-000004.safetensors")
    assert load_checkpoint(folder / "step-000004.safetensors")  # the file's own hash cannot tell
    with pytest.raises(CheckpointError, match="differs from the one the store recorded when it was written"):
        TrialSnapshots.load(store, trial_id)
    store._conn.execute("DELETE FROM files")
    with pytest.raises(CheckpointError, match="the store holds no record of this snapshot"):
        TrialSnapshots.load(store, trial_id)
    # A trial that ran before its store recorded file hashes is checked by the hash inside each file alone.
    store._conn.execute("UPDATE store_meta SET value = ? WHERE key = 'files_recorded_since'", (repr(2e9),))
    assert TrialSnapshots.load(store, trial_id).last_step == 4


def test_landscape_cells_are_keyed_by_the_snapshots_content(snapshots, options):
    store, trial_id, folder = snapshots
    settings = EvaluationSettings(train_examples=8, dev_examples=8, batch_size=8, options=options)
    a = np.array([0.0, 1.0])
    first = line(store, TrialSnapshots.load(store, trial_id), a, settings)
    # The end snapshot is rewritten with other weights (here the middle snapshot's, recorded as a re-run records
    # what it writes): the cached cells must not serve it.
    shutil.copy(folder / "step-000002.safetensors", folder / "step-000004.safetensors")
    store.record_files([(folder / "step-000004.safetensors", file_sha256(folder / "step-000004.safetensors"))])
    second = line(store, TrialSnapshots.load(store, trial_id), a, settings)
    assert store._conn.execute("SELECT count(*) FROM landscapes").fetchone()[0] == 2
    assert first["train_loss"].iloc[1] != second["train_loss"].iloc[1]
    assert first["train_loss"].iloc[0] == second["train_loss"].iloc[0]  # same start, same value


def test_a_trial_key_from_the_store_cannot_name_a_path(snapshots, tmp_path):
    store, trial_id, _ = snapshots
    store._conn.execute("UPDATE trials SET trial_key = '../../../etc' WHERE id = ?", (trial_id,))
    result = runner.invoke(app, ["landscape", "line", str(store.path), str(trial_id), "--out", str(tmp_path / "l")])
    assert result.exit_code == 2 and "is not a trial key" in result.output and "Traceback" not in result.output


def test_a_snapshot_that_cannot_be_written_fails_the_trial_in_one_line(tiny_bert_dir, glue_dir, tmp_path):
    # Files over 1 MB cannot be written (RLIMIT_FSIZE, as on a full disk): the store fits, a snapshot does not.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        from steadytune.cli import app
        sys.argv = ["steadytune", "train", "--model", {str(tiny_bert_dir)!r}, "--glue-dir", {str(glue_dir)!r},
                    "--max-train", "32", "--batch-size", "8", "--max-length", "48", "--epochs", "1",
                    "--save-checkpoints", "2", "--store", {str(tmp_path / "runs.db")!r},
                    "--cache-dir", {str(tmp_path / "cache")!r}]
        app()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"COLUMNS": "300", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "cannot write snapshot" in text and "File too large" in text and "Traceback" not in text
    assert "as 'failed'" in text
    with Store(tmp_path / "runs.db", readonly=True) as store:
        row = store.trials().iloc[0]
        assert row.status == "failed" and "cannot write snapshot" in row.error


def test_bad_tokenization_cache_entries_are_rebuilt(minilm_path, glue_dir, tmp_path):
    from steadytune.data.datasets import load_glue
    from steadytune.data.tasks import get_task

    tokenizer = load_tokenizer(str(minilm_path))
    rte, wnli = (load_glue(glue_dir, get_task(name), "dev") for name in ("rte", "wnli"))
    reference = encode(rte, tokenizer, 64, cache_dir=None)
    cache = tmp_path / "cache"
    encode(rte, tokenizer, 64, cache)
    [entry] = cache.iterdir()
    good = entry.read_bytes()
    encode(wnli, tokenizer, 64, tmp_path / "other")
    [foreign] = (tmp_path / "other").iterdir()
    for damage in (b"garbage", good[: len(good) // 2], foreign.read_bytes(),
                   good.replace(good[200:208], bytes(8))):
        entry.write_bytes(damage)
        again = encode(rte, tokenizer, 64, cache)
        assert all(np.array_equal(x, y) for x, y in zip(again.input_ids, reference.input_ids))
        assert len(again) == len(reference) and entry.read_bytes() != damage  # rebuilt and rewritten
    # A crafted entry: its own key and a valid checksum, but ids the tokenizer could not have made (the trial then
    # failed with "IndexError: index out of range in self", and again on every retry).
    from steadytune.data.encoding import _checksum, _save_atomic

    with np.load(entry, allow_pickle=False) as cached:
        arrays = {name: cached[name] for name in cached.files}
    key = str(arrays.pop("key"))
    arrays.pop("checksum")
    arrays["input_ids"] = arrays["input_ids"].copy()
    arrays["input_ids"][5] = 10**6
    entry.unlink()
    _save_atomic(entry, key=np.array(key), checksum=np.array(_checksum(arrays)), **arrays)
    assert len(list(cache.iterdir())) == 1
    again = encode(rte, tokenizer, 64, cache)
    assert all(np.array_equal(x, y) for x, y in zip(again.input_ids, reference.input_ids))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    unwritable = encode(rte, tokenizer, 64, blocked / "cache")  # cannot be created: the trial still gets its data
    assert all(np.array_equal(x, y) for x, y in zip(unwritable.input_ids, reference.input_ids))


def test_a_trial_runs_when_its_cache_is_garbage(tiny_trial_config, tmp_path):
    options = RunOptions(device="cpu", cache_dir=tmp_path / "cache", log_grads_every=0)
    config: TrialConfig = tiny_trial_config()
    with Store(tmp_path / "runs.db") as store:
        run_stored(config, options, store)
        for entry in (tmp_path / "cache").iterdir():
            entry.write_bytes(b"\x00" * 10)
        second = run_stored(config.model_copy(update={"wi_seed": 2}), options, store)[1]
    assert second.status == "complete"


def test_a_forged_state_file_cannot_fake_a_result(tiny_trial_config, options, tmp_path):
    """A paused trial's state edited to claim best 0.99 is refused in one line; the trial restarts and records
    what its own curve shows."""
    from steadytune.studies.jobs import Job, execute
    from steadytune.training.state_file import load_state_file, save_state_file

    store = Store(tmp_path / "runs.db")
    config = tiny_trial_config(epochs=2, evals_per_epoch=2)
    state = tmp_path / "runs-states" / "paused.safetensors"
    job = Job(config.model_dump(mode="json"), options.model_dump(mode="json"), store_location=str(store.path))
    paused = execute(replace(job, stop_at_fraction=0.5, state_out=str(state)))
    assert paused.outcome.status == "stopped" and paused.outcome.files[0][0] == str(state)
    trial_id = store.record_trial(config.model_dump(mode="json"), config.trial_key(), config.effective_dropout_seed,
                                  None, paused.outcome, paused.points)
    assert store.recorded_hash(state) == file_sha256(state)  # recorded with the trial's progress

    genuine = execute(replace(job, state_in=str(state)))
    assert genuine.state_refused is None and genuine.resumed_at == paused.outcome.steps_done

    forged = load_state_file(state)
    forged["tracked"]["best_value"] = 0.99
    forged["tracked"]["best_metrics"] = {**forged["tracked"]["best_metrics"], "accuracy": 0.99}
    save_state_file(state, forged)
    result = execute(replace(job, state_in=str(state)))
    assert "state differs from the one the store recorded when it was written" in result.state_refused
    assert "\n" not in result.state_refused
    assert result.resumed_at == 0 and result.outcome.status == "complete"
    store.finish_trial(trial_id, result.outcome, result.points)
    row = store.trial_row(trial_id)
    dev = store.curves([trial_id]).query("split == 'dev' and metric == @row['metric']")
    assert row["best_metric"] == dev["value"].max() < 0.99
    assert row["best_metric"] == genuine.outcome.best_metrics[row["metric"]]  # what the untouched state gives


def test_the_best_and_final_evaluation_are_recomputed_from_the_stored_curve(tmp_path):
    from steadytune.storage.store import CurvePoint, TrialOutcome

    store = Store(tmp_path / "runs.db")
    trial_id = store.start_trial({"task": "rte", "model": "m", "wi_seed": 1, "do_seed": 1}, "0" * 16, 1)
    points = [CurvePoint(step, 0.0, "dev", "accuracy", value)
              for step, value in ((2, 0.51), (4, 0.55), (6, float("nan")), (8, 0.55), (10, 0.53))]
    points += [CurvePoint(4, 0.0, "dev", "accuracy.swa", 0.9), CurvePoint(4, 0.0, "test", "accuracy", 0.5)]
    claimed = TrialOutcome(status="complete", steps_done=10, total_steps=10, metric="accuracy",
                           final_metrics={"accuracy": 0.99}, best_metrics={"accuracy": 0.99}, best_step=6,
                           baseline_metric=0.5, wall_seconds=1.0)
    store.finish_trial(trial_id, claimed, points)
    row = store.trial_row(trial_id)
    # The first of the highest scores, NaN never best, extra models' scores not the trial's, test kept beside dev.
    assert (row["best_metric"], row["best_step"], row["final_metric"]) == (0.55, 4, 0.53)
    assert json.loads(row["best_metrics_json"]) == {"accuracy": 0.55, "test_accuracy": 0.5}


def test_a_cache_entry_changed_after_its_first_use_is_rebuilt(tiny_trial_config, options, tmp_path):
    """In-range but wrong ids pass every check an entry can make of itself; the store's record of the entry's
    checksum, taken when a trial first used it, catches them, and the entry is rebuilt."""
    store = Store(tmp_path / "runs.db")
    config = tiny_trial_config()
    first_id = run_stored(config, options, store)[0]
    records = store.cache_records()
    entries = sorted((options.cache_dir).glob("enc-*.npz"))
    assert sorted(records) == sorted(p.name for p in entries) and len(entries) == 2  # train and dev
    from steadytune.data.encoding import _checksum

    def tamper(path):
        with np.load(path) as cached:
            arrays = {name: cached[name] for name in cached.files}
        arrays["input_ids"] = (arrays["input_ids"] + 1) % 100  # still ids of the vocabulary: other text
        body = {k: v for k, v in arrays.items() if k not in ("key", "checksum")}
        np.savez(path, **{**arrays, "checksum": np.array(_checksum(body))})
        return body

    for path in entries:
        tamper(path)
    tokenizer = load_tokenizer(config.model)
    from steadytune.training.inputs import prepare_inputs

    trusting = prepare_inputs(config, tokenizer, options.cache_dir)  # without the store: the forgery passes
    assert {name: checksum for name, checksum in trusting.cache_entries} != records
    checked = prepare_inputs(config, tokenizer, options.cache_dir, records)
    assert dict(checked.cache_entries) == records  # rebuilt: the same ids as the first trial's
    for path in entries:
        tamper(path)
    # Another trial of the store on the same data trains on the rebuilt entries, as with a clean cache.
    other = tiny_trial_config(wi_seed=2)
    second_id, _, reused = run_stored(other, options, store)
    clean = Store(tmp_path / "clean.db")
    clean_id = run_stored(other, options.model_copy(update={"cache_dir": tmp_path / "clean-cache"}), clean)[0]
    assert not reused and first_id != second_id
    assert store.curves([second_id])["value"].tolist() == clean.curves([clean_id])["value"].tolist()
    assert store.cache_records() == records
