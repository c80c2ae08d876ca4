"""Packed trials: each seed of a pack trains as it trains alone (within float rounding), whatever else shares the
pack; a seed that stops leaves it; what cannot be packed is refused in one line."""
from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import curve_by_key

from steadytune.packed.model import NotPackable
from steadytune.packed.trial import PackedTrial
from steadytune.training.trial import Trial

# Batched products sum in another order than single ones: curves agree to float rounding, not bitwise.
RELATIVE, ABSOLUTE = 1e-5, 1e-7


def assert_same_curve(packed: dict[tuple, float], alone: dict[tuple, float]) -> float:
    assert set(packed) == set(alone)
    worst = 0.0
    for key, value in alone.items():
        assert math.isclose(packed[key], value, rel_tol=RELATIVE, abs_tol=ABSOLUTE), (key, packed[key], value)
        worst = max(worst, abs(packed[key] - value))
    return worst


@pytest.fixture(scope="module")
def seeds(tiny_bert_dir, glue_dir, tmp_path_factory):
    """Four seed triples of one config (BERTAdam, re-initialized top layer and pooler, diagnostics every step), each
    trained alone; 36 examples at batch 8, so each epoch ends on a smaller batch that falls in another place per DO
    seed."""
    from steadytune.config import RunOptions, TrialConfig

    options = RunOptions(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"), threads=1, log_grads_every=1)

    def config(wi: int, do: int, **overrides) -> TrialConfig:
        values = dict(task="rte", model=str(tiny_bert_dir), glue_dir=str(glue_dir), max_train=36, batch_size=8,
                      max_length=48, epochs=2, evals_per_epoch=2, lr=1e-3, optimizer="bertadam", reinit_layers=1,
                      reinit_pooler=True, wi_seed=wi, do_seed=do)
        return TrialConfig(**{**values, **overrides})

    configs = [config(1, 1), config(2, 3), config(3, 2), config(4, 4)]
    alone = []
    for c in configs:
        points: list = []
        outcome, pending = Trial(c, options).run(points.extend)
        alone.append((outcome, curve_by_key(points + pending)))
    stopped_points: list = []
    stopped, pending = Trial(configs[1], options).run(stopped_points.extend, stop_at=4)
    return configs, options, alone, (stopped, curve_by_key(stopped_points + pending)), config


def run_pack(configs, options, stop_at=None):
    got: dict[int, list] = {k: [] for k in range(len(configs))}
    results = PackedTrial.from_configs(configs, options).run(lambda k, points: got[k].extend(points), stop_at)
    return [(outcome, curve_by_key(got[k] + pending)) for k, (outcome, pending) in enumerate(results)]


def test_each_seed_of_a_pack_trains_as_it_trains_alone(seeds):
    configs, options, alone, _, _ = seeds
    packed = run_pack(configs[:3], options)
    for (outcome, points), (single, single_points) in zip(packed, alone):
        assert outcome.status == single.status == "complete"
        assert len([key for key in single_points if key[1] == "diag"]) > 50  # diagnostics are compared too
        assert_same_curve(points, single_points)
        assert outcome.final_metrics == pytest.approx(single.final_metrics, rel=RELATIVE)
        assert outcome.best_step == single.best_step and outcome.steps_done == single.steps_done
        final = {p.split: p.values for p in outcome.predictions if p.point == "final"}
        assert (final["dev"] == {p.split: p.values for p in single.predictions if p.point == "final"}["dev"]).all()
        assert outcome.device == "cpu, packed with 2 other seed(s)"


def test_a_seed_does_not_depend_on_its_pack_and_a_stopped_seed_leaves_it(seeds):
    configs, options, alone, (stopped, stopped_points), _ = seeds
    packed = run_pack(configs[:3], options, stop_at=[None, 4, None])
    outcome, points = packed[1]
    assert outcome.status == stopped.status == "stopped" and outcome.steps_done == 4
    assert_same_curve(points, stopped_points)
    for k in (0, 2):  # the others went on without it, as they train alone
        assert_same_curve(packed[k][1], alone[k][1])
    other = run_pack([configs[3], configs[2]], options)  # seed 3 in another pack
    assert_same_curve(other[1][1], alone[2][1])
    assert_same_curve(other[0][1], alone[3][1])


def test_bf16_training_moves_results_a_little_and_a_pack_trains_as_alone(seeds):
    configs, options, alone, _, config = seeds
    bf16 = [config(1, 1, train_precision="bf16"), config(2, 3, train_precision="bf16")]
    assert bf16[0].trial_key() != configs[0].trial_key()  # other numerics, another computation
    singles = []
    for c in bf16:
        points: list = []
        outcome, pending = Trial(c, options).run(points.extend)
        assert outcome.status == "complete"
        singles.append(curve_by_key(points + pending))
    # bf16 products round to 8 significant bits: the losses move, a little.
    moved = [abs(singles[0][key] - value) for key, value in alone[0][1].items() if key[1:] == ("train", "loss")]
    assert 0 < max(moved) < 0.01
    # Packed, each bf16 seed follows its bf16 single run within bf16 rounding (seen: 1.5e-3 relative).
    for (outcome, points), single in zip(run_pack(bf16, options), singles):
        assert outcome.status == "complete" and set(points) == set(single)
        for key, value in single.items():
            assert math.isclose(points[key], value, rel_tol=1e-2, abs_tol=1e-4), (key, points[key], value)


def test_what_cannot_be_packed_is_refused_in_one_line(seeds):
    configs, options, _, _, config = seeds
    for pack, message in (([configs[0], config(2, 1, lr=2e-3)], "differ only in their seeds"),
                          ([config(1, 1, mixout=0.1), config(2, 1, mixout=0.1)], "Mixout"),
                          ([config(1, 1, eval_precision="int8"), config(2, 1, eval_precision="int8")], "int8")):
        with pytest.raises(NotPackable, match=message) as raised:
            PackedTrial.from_configs(pack, options)
        assert "\n" not in str(raised.value)
    with pytest.raises(NotPackable, match="autosaves run unpacked"):
        PackedTrial.from_configs(configs[:2], options.model_copy(update={"checkpoint_every": 1.0}))


@pytest.mark.slow
def test_a_study_with_pack_records_each_seed_as_its_own_trial(tiny_bert_dir, glue_dir, tmp_path):
    from typer.testing import CliRunner

    from steadytune.cli import app
    from steadytune.storage.store import Store

    def study_args(store: str, *extra: str) -> list[str]:
        return ["study", "run", "--name", "packing", "--tasks", "rte", "--wi-seeds", "1-3", "--do-seeds", "1-2",
                "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
                "--max-length", "48", "--max-steps", "6", "--evals-per-epoch", "1", "--lr", "1e-3", "--threads", "1",
                "--store", store, "--cache-dir", str(tmp_path / "cache"), *extra]

    def study(store: str, *extra: str):
        return CliRunner().invoke(app, study_args(store, *extra), env={"COLUMNS": "200"})

    def complete(store: Path) -> int:
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                return db.execute("SELECT count(*) FROM trials WHERE status = 'complete'").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    plain = study(str(tmp_path / "plain.db"))
    # A CPU trains a pack's seeds one at a time unless --pack-pass says otherwise: as the plain study, and says so.
    one_at_a_time = study(str(tmp_path / "one-at-a-time.db"), "--pack", "4")
    assert one_at_a_time.exit_code == 0 and "on a CPU the seeds train one at a time" in one_at_a_time.output
    with Store(tmp_path / "one-at-a-time.db", readonly=True) as db:
        assert set(db.trials()["device"]) == {"cpu"}
    assert "--pack-pass splits a pack" in study(str(tmp_path / "x.db"), "--pack-pass", "2").output
    packed = study(str(tmp_path / "packed.db"), "--pack", "4", "--pack-pass", "4")
    assert plain.exit_code == 0 and packed.exit_code == 0, packed.output
    assert "6 complete" in packed.output and "ran 6 now" in packed.output
    with Store(tmp_path / "plain.db", readonly=True) as a, Store(tmp_path / "packed.db", readonly=True) as b:
        alone, together = a.trials().set_index("trial_key"), b.trials().set_index("trial_key")
        curves_alone, curves_together = a.curves(), b.curves()
    assert sorted(alone.index) == sorted(together.index)  # the same trial keys
    # Six trials, packs of up to four: one pack of four and one of two.
    assert sorted(together["device"].value_counts().to_dict().items()) == [
        ("cpu, packed with 1 other seed(s)", 2), ("cpu, packed with 3 other seed(s)", 4)]
    losses = [curves[curves.metric == "loss"].merge(trials[["id"]].reset_index(), left_on="trial_id", right_on="id")
              .set_index(["trial_key", "split", "step"])["value"]
              for curves, trials in ((curves_alone, alone), (curves_together, together))]
    assert losses[0].index.equals(losses[1].sort_index().reindex(losses[0].index).index)
    assert np.allclose(losses[1].reindex(losses[0].index), losses[0], rtol=1e-5, atol=1e-7)
    again = study(str(tmp_path / "packed.db"), "--pack", "4", "--pack-pass", "4")
    assert again.exit_code == 0 and "ran 0 now" in again.output
    # One pack of six in passes of at most four: passes of four and two, and it says so.
    passes = study(str(tmp_path / "passes.db"), "--pack", "6", "--pack-pass", "4")
    assert passes.exit_code == 0 and "passes of at most 4 seeds" in passes.output, passes.output
    with Store(tmp_path / "passes.db", readonly=True) as c:
        in_passes = c.trials().set_index("trial_key")
    assert in_passes["device"].to_dict() == together["device"].to_dict()
    assert (in_passes["final_metric"] == together["final_metric"]).all()

    # Killed (kill -9) once its first pack is recorded, then run again: the same packs, the same results, bit for bit.
    command = [sys.executable, "-m", "steadytune",
               *study_args(str(tmp_path / "killed.db"), "--pack", "4", "--pack-pass", "4")]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None and complete(tmp_path / "killed.db") < 4:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert complete(tmp_path / "killed.db") == 4  # the first pack, not the second
    resumed = CliRunner().invoke(app, command[3:], env={"COLUMNS": "200"})
    assert resumed.exit_code == 0 and "ran 2 now" in resumed.output, resumed.output
    with Store(tmp_path / "killed.db", readonly=True) as db:
        after = db.trials().set_index("trial_key").sort_index()
    assert after["final_metric"].equals(together["final_metric"].sort_index())
    assert after["device"].equals(together["device"].sort_index())

    # Dodge's rule: the first pass to the cut and the survivors' continuation from saved states run packed too.
    cut = ("--early-stop", "start=6,fraction=0.5,keep=2")
    plain_cut, packed_cut = study(str(tmp_path / "plain-cut.db"), *cut), study(str(tmp_path / "cut.db"), *cut,
                                                                               "--pack", "3", "--pack-pass", "3")
    assert plain_cut.exit_code == 0 and packed_cut.exit_code == 0, packed_cut.output
    assert "2 complete, 4 stopped" in packed_cut.output
    with Store(tmp_path / "plain-cut.db", readonly=True) as a, Store(tmp_path / "cut.db", readonly=True) as b:
        alone, together = a.trials().set_index("trial_key"), b.trials().set_index("trial_key")
    assert (together["status"].sort_index() == alone["status"].sort_index()).all()
    # Six to the cut in two packs of three; the two survivors continue as one pack of two.
    assert (together.groupby("status")["device"].unique().map(list).to_dict()
            == {"stopped": ["cpu, packed with 2 other seed(s)"], "complete": ["cpu, packed with 1 other seed(s)"]})
    finals = together["final_metric"].dropna().sort_index()
    assert np.allclose(finals, alone["final_metric"].dropna().sort_index(), rtol=1e-5)

    refused = study(str(tmp_path / "mixout.db"), "--pack", "2", "--mixout", "0.1", "--wi-seeds", "1-2",
                    "--do-seeds", "1")
    assert refused.exit_code == 0 and "--pack 2: Mixout changes training step by step: runs unpacked" in refused.output
    with Store(tmp_path / "mixout.db", readonly=True) as db:
        assert set(db.trials()["device"]) == {"cpu"}


def test_a_pack_stopped_at_a_cut_saves_each_seed_to_continue_alone_or_packed(seeds, tmp_path):
    configs, options, alone, _, _ = seeds
    pack = PackedTrial.from_configs(configs[:3], options)
    paths = [tmp_path / f"seed{k}.safetensors" for k in range(3)]
    got: dict[int, list] = {k: [] for k in range(3)}
    first = pack.run(lambda k, points: got[k].extend(points), [4, 4, 4], on_stop=lambda k: pack.save_member_state(
        k, paths[k]))
    assert [outcome.status for outcome, _ in first] == ["stopped"] * 3 and all(p.exists() for p in paths)
    # Seed 0 continues alone from its saved state; seeds 1 and 2 continue as a pack from theirs.
    single = Trial(configs[0], options)
    single.restore_state(paths[0])
    rest: list = []
    outcome, pending = single.run(rest.extend)
    assert outcome.status == "complete"
    assert_same_curve(curve_by_key(got[0] + first[0][1] + rest + pending), alone[0][1])
    members = []
    for k in (1, 2):
        member = Trial(configs[k], options)
        member.restore_state(paths[k])
        members.append(member)
    again: dict[int, list] = {0: [], 1: []}
    continued = PackedTrial(members, options).run(lambda k, points: again[k].extend(points))
    for slot, k in enumerate((1, 2)):
        assert continued[slot][0].status == "complete"
        assert_same_curve(curve_by_key(got[k] + first[k][1] + again[slot] + continued[slot][1]), alone[k][1])

    # A damaged state file is untrusted input: that seed starts again from scratch, the pack cannot stand at one
    # step, and the study's pack job runs its trials one by one, each to the result it would have had.
    from steadytune.studies.jobs import Job, execute_pack
    from steadytune.training.layout import file_sha256

    pack = PackedTrial.from_configs(configs[:2], options)
    pack.run(lambda k, points: None, [4, 4], on_stop=lambda k: pack.save_member_state(k, paths[k]))
    paths[1].write_bytes(b"not a state file")
    in_one_pass = options.model_copy(update={"pack": 2, "pack_pass": 2}).model_dump(mode="json")
    jobs = [Job(c.model_dump(mode="json"), in_one_pass, state_in=str(path), state_sha256=file_sha256(path))
            for c, path in zip(configs[:2], paths)]
    results = execute_pack(replace(jobs[0], pack=(jobs[1],)))
    assert [r.outcome.status for r in results] == ["complete", "complete"]
    assert [r.resumed_at for r in results] == [4, 0]
    assert all("packed" not in r.outcome.device for r in results)
    for result, (single, _) in zip(results, alone):
        assert result.outcome.final_metrics == pytest.approx(single.final_metrics, rel=RELATIVE)


@pytest.mark.parametrize("overrides", [{"task": "stsb", "max_train": 24, "epochs": 1},  # regression
                                       {"lr": 1e4, "max_grad_norm": 0.0, "epochs": 1}])  # a divergent rate
def test_regression_and_divergence_pack_as_they_run_alone(seeds, overrides):
    _, options, _, _, config = seeds
    configs = [config(1, 1, **overrides), config(2, 2, **overrides)]
    packed = run_pack(configs, options)
    for (outcome, points), c in zip(packed, configs):
        single: list = []
        alone, pending = Trial(c, options).run(single.extend)
        assert (outcome.status, outcome.steps_done) == (alone.status, alone.steps_done)
        expected = curve_by_key(single + pending)
        if alone.status == "diverged":
            assert not math.isfinite(points[(alone.steps_done, "train", "loss")]) and set(points) == set(expected)
            continue
        # An untrained regressor predicts almost one value, and the correlation of nearly constant predictions
        # amplifies rounding: the predictions themselves are compared instead.
        correlations = {key for key in expected if key[2] in ("pearson", "spearman", "combined")}
        assert correlations
        assert_same_curve({k: v for k, v in points.items() if k not in correlations},
                          {k: v for k, v in expected.items() if k not in correlations})
        final = [{p.split: p.values for p in o.predictions if p.point == "final"}["dev"] for o in (outcome, alone)]
        assert np.allclose(final[0], final[1], rtol=1e-5, atol=1e-6)
