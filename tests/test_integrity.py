"""Files beside a store are untrusted: snapshots, tokenization caches and trial keys are checked on read."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from steadytune.checkpoints import CheckpointError, checkpoint_dir, load_checkpoint
from steadytune.cli import app
from steadytune.config import RunOptions, TrialConfig
from steadytune.encoding import encode
from steadytune.landscape.analyses import line
from steadytune.landscape.sources import EvaluationSettings, TrialSnapshots
from steadytune.models import load_tokenizer
from steadytune.store import Store
from steadytune.trial import run_stored

runner = CliRunner()


@pytest.fixture
def snapshots(tiny_trial_config, options, tmp_path):
    """A store with one complete tiny trial that kept 3 snapshots (steps 0, 2, 4)."""
    store = Store(tmp_path / "runs.db")
    trial_id = run_stored(tiny_trial_config(), options.model_copy(update={"save_checkpoints": 3}), store)[0]
    yield store, trial_id, checkpoint_dir(store.path, store.trial_config(trial_id)[1])
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
    with pytest.raises(CheckpointError, match="damaged snapshot"):
        TrialSnapshots.load(store, trial_id).end()


def test_landscape_cells_are_keyed_by_the_snapshots_content(snapshots, options):
    store, trial_id, folder = snapshots
    settings = EvaluationSettings(train_examples=8, dev_examples=8, batch_size=8, options=options)
    a = np.array([0.0, 1.0])
    first = line(store, TrialSnapshots.load(store, trial_id), a, settings)
    # The end snapshot is replaced by another valid one (here the middle snapshot): the cached cells must not serve it.
    shutil.copy(folder / "step-000002.safetensors", folder / "step-000004.safetensors")
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
    from steadytune.data import load_glue
    from steadytune.tasks import get_task

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
    from steadytune.encoding import _checksum, _save_atomic

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
