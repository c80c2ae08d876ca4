"""Paused-trial state files hold tensors and plain values only: a crafted pickle beside a store never runs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from steadytune.config import RunOptions
from steadytune.studies.jobs import Job, execute
from steadytune.training.layout import file_sha256
from steadytune.training.state_file import StateFileError, load_state_file, save_state_file
from steadytune.training.trial import Trial


class Payload:
    """Unpickling this runs a shell command: what an attacker would place at a state file's path."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_keeps_tensors_integer_keys_and_values(tmp_path):
    state = {"step": 7, "best": -float("inf"), "none": None, "names": ["a", "b"], "rng": torch.arange(4).byte(),
             "optimizer": {"state": {0: {"exp_avg": torch.ones(2, 3)}, 5: {"step": torch.tensor(3.0)}}}}
    state["alias"] = state["rng"]  # one tensor referenced twice is stored once
    save_state_file(tmp_path / "s.safetensors", state)
    back = load_state_file(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["best"] == -float("inf") and back["none"] is None and back["names"] == ["a", "b"]
    assert sorted(back["optimizer"]["state"]) == [0, 5]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2, 3))
    assert torch.equal(back["alias"], state["rng"])
    with pytest.raises(TypeError, match="cannot store a Payload"):
        save_state_file(tmp_path / "bad.safetensors", {"x": Payload("nowhere")})


def test_a_malicious_pickle_at_the_state_path_does_not_run(tiny_trial_config, tmp_path):
    marker = tmp_path / "pwned"
    exploit = tmp_path / "state.safetensors"
    exploit.write_bytes(pickle.dumps(Payload(marker)))
    # The file is a working exploit: unpickled elsewhere it runs its command.
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(exploit)!r}, 'rb').read())"],
                   check=True, cwd=os.path.dirname(__file__))
    assert marker.exists()
    marker.unlink()

    options = RunOptions(device="cpu", cache_dir=tmp_path / "cache", log_grads_every=0)
    config = tiny_trial_config()
    with pytest.raises(StateFileError, match="not a steadytune state file"):
        Trial(config, options).restore_state(exploit)
    # A study that finds it where a paused trial's state should be runs the trial from the start instead: the store
    # holds no record of it; and given its hash (as if the store had recorded it), the reader refuses it.
    job = Job(config.model_dump(mode="json"), options.model_dump(mode="json"), state_in=str(exploit))
    for refused_for, given in (("the store holds no record of this state", job),
                               ("not a steadytune state file", replace(job, state_sha256=file_sha256(exploit)))):
        result = execute(given)
        assert result.outcome.status == "complete" and result.outcome.steps_done == 4
        assert not marker.exists()
        assert refused_for in result.state_refused  # and it says so, where it was silent


def test_a_study_says_in_one_line_that_it_refused_a_planted_state(tiny_bert_dir, glue_dir, tmp_path):
    from typer.testing import CliRunner

    from steadytune.cli import app
    from steadytune.studies.spec import StudySpec, expand

    store = tmp_path / "runs.db"
    flags = ["--name", "planted", "--tasks", "rte", "--wi-seeds", "1", "--model", str(tiny_bert_dir), "--glue-dir",
             str(glue_dir), "--max-train", "16", "--batch-size", "8", "--max-length", "48", "--max-steps", "4",
             "--evals-per-epoch", "0", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    spec = StudySpec(name="planted", tasks=["rte"], config={"model": str(tiny_bert_dir), "glue_dir": str(glue_dir),
                                                             "max_train": 16, "batch_size": 8, "max_length": 48,
                                                             "max_steps": 4, "evals_per_epoch": 0})
    key = expand(spec)[0].config.trial_key()
    states = tmp_path / "runs-states"
    states.mkdir()
    (states / f"study1-{key}.safetensors").write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    result = CliRunner().invoke(app, ["study", "run", *flags, "--store", str(store), "--checkpoint-every", "0.5"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "its saved state was refused" in line]
    assert len(notes) == 1 and "holds no record of this state" in notes[0] and "from the start" in notes[0]
    assert not (tmp_path / "pwned").exists()


def test_states_that_do_not_fit_are_refused(tiny_trial_config, tmp_path):
    options = RunOptions(device="cpu", cache_dir=tmp_path / "cache", log_grads_every=0)
    trial = Trial(tiny_trial_config(epochs=2), options)
    trial.run(lambda points: None, stop_at=3)
    trial.save_state(tmp_path / "s.safetensors")
    data = bytearray((tmp_path / "s.safetensors").read_bytes())
    (tmp_path / "truncated.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(StateFileError, match="not a steadytune state file"):
        Trial(tiny_trial_config(epochs=2), options).restore_state(tmp_path / "truncated.safetensors")
    with pytest.raises(StateFileError, match="another trial"):
        Trial(tiny_trial_config(epochs=2, wi_seed=9), options).restore_state(tmp_path / "s.safetensors")
    save_state_file(tmp_path / "foreign.safetensors", {"trial_key": tiny_trial_config(epochs=2).trial_key(),
                                                        "model": {"x": torch.zeros(1)}})
    with pytest.raises(StateFileError, match="do not match|does not fit"):
        Trial(tiny_trial_config(epochs=2), options).restore_state(tmp_path / "foreign.safetensors")
