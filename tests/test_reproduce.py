"""`steadytune reproduce --scale smoke` on a tiny model: every row answered, resumable, selectable."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.reproduce.claims import CLAIMS
from steadytune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from steadytune.storage.store import Store

VERDICTS = {HOLDS, DOES_NOT_HOLD, INCONCLUSIVE}


@pytest.fixture(scope="module")
def tiny_model(tiny_bert_dir):
    return tiny_bert_dir


def _reproduce(*args):
    return CliRunner().invoke(app, ["reproduce", *map(str, args)])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_model, glue_dir):
    root = tmp_path_factory.mktemp("reproduce")
    args = ["--model", tiny_model, "--tasks", "rte,mrpc", "--scale", "smoke", "--settings", "published",
            "--glue-dir", glue_dir, "--store", root / "store.db", "--out", root / "out", "--threads", 1]
    result = _reproduce(*args)
    assert result.exit_code == 0, result.output
    return root, args, result


@pytest.mark.slow
def test_smoke_fills_every_row_with_a_verdict_or_a_one_line_reason(smoke):
    root, _, result = smoke
    table = pd.read_csv(root / "out" / "verdicts.csv")
    assert list(table["key"]) == list(CLAIMS)
    for verdict in table["verdict"]:
        assert verdict in VERDICTS or (verdict.startswith("no answer: ") and "\n" not in verdict)
    answered = table[table["verdict"].isin(VERDICTS)]
    # The tiny random model learns nothing at lr 2e-5: every comparison of scores or failure rates says that its arms
    # did not learn, instead of comparing runs that all sit at the majority baseline.
    reasons = table.loc[~table["verdict"].isin(VERDICTS), "verdict"]
    for key in ("zhang-bertadam-scores", "zhang-bertadam-failures", "mosbach-baseline-std", "dodge-best-of-n"):
        assert "did not learn (no run 0.05 above the majority baseline)" in table.set_index("key").loc[key, "verdict"]
    assert reasons.str.contains("did not learn|does not learn|measured|undefined|needs|no ").all()
    assert answered["p holds (Holm)"].between(0, 1).all() and (answered["ci low"] <= answered["ci high"]).all()
    page = (root / "out" / "verdicts.html").read_text()
    assert "How each verdict is decided" in page and "Holm" in page and "The family of tests: one lr setting" in page
    assert "What was trained" in page and "majority baseline" in page and "independent (WI, DO) pairs" in page
    assert "Revised after data was seen, hao-flatter: first tested on widths" in page  # said where the rules are
    markdown = (root / "out" / "verdicts.md").read_text()
    assert "| claim |" in markdown
    assert "reproduce plan" in result.output and "per claim" in result.output


def test_every_arm_is_trained_on_paired_seeds_and_hao_runs_are_measured(smoke):
    root, _, _ = smoke
    with Store(root / "store.db", readonly=True) as db:
        trials = db.trials()
        kinds = db._conn.execute("SELECT COUNT(*) FROM landscapes WHERE kind = 'reproduce-hao'").fetchone()[0]
    # Per task: the grid 3x2; devlin's pairs (1,1), (2,2) are grid cells and (3,3) is new; adamw, reinit and long on
    # pairs (1,1)..(3,3); pretrained on (1,1), (2,2); the from-scratch lr check's one run. The tiny model does not
    # learn from scratch at the check's lr, so the from-scratch arm is not trained.
    assert len(trials) == 2 * (6 + 1 + 9 + 2 + 1) and set(trials["status"]) == {"complete"}
    arms = trials[trials["cfg.optimizer"] == "adamw"]
    assert set(zip(arms["wi_seed"], arms["do_seed"])) == {(1, 1), (2, 2), (3, 3)}
    assert trials["cfg.from_scratch"].sum() == 2
    assert kinds == 4  # every pretrained run measured once


def test_rerun_resumes_without_training_and_gives_the_same_table(smoke):
    root, args, _ = smoke
    before = pd.read_csv(root / "out" / "verdicts.csv")
    result = _reproduce(*args)
    assert result.exit_code == 0, result.output
    with Store(root / "store.db", readonly=True) as db:
        assert len(db.trials()) == 38
    pd.testing.assert_frame_equal(pd.read_csv(root / "out" / "verdicts.csv"), before)


def test_claims_selects_rows_and_dry_run_trains_nothing(smoke, tmp_path):
    root, args, _ = smoke
    chosen = ["zhang-bertadam-scores", "hao-high-layers"]
    result = _reproduce(*args[:-4], "--out", tmp_path / "out", "--threads", 1, "--claims", ",".join(chosen),
                        "--no-train")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "out" / "verdicts.csv")["key"]) == chosen
    fresh = tmp_path / "fresh.db"
    result = _reproduce(*args[:-6], "--store", fresh, "--out", tmp_path / "o2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert not fresh.exists() and "hao-high-layers" in result.output


@pytest.mark.parametrize("flag, value, message", [
    ("--claims", "dodge-best-of-n,nonsense", "--claims: unknown 'nonsense'"),
    ("--settings", "fast", "--settings: unknown 'fast'"),
    ("--scale", "huge", "--scale: unknown 'huge'"),
])
def test_bad_input_is_one_line(tmp_path, flag, value, message):
    result = _reproduce("--store", tmp_path / "s.db", flag, value, "--dry-run")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_every_claim_names_its_arms():
    from steadytune.reproduce.design import SCALES, arms

    known = set(arms(SCALES["smoke"], 6))
    assert all(claim.arms and set(claim.arms) <= known for claim in CLAIMS.values())


def test_learning_setting_runs_the_lr_check_first_and_trains_at_its_choice(tmp_path, tiny_model, glue_dir):
    from steadytune.reproduce.design import SCALES
    from steadytune.reproduce.runner import Reproduction, lr_choices

    store = tmp_path / "s.db"
    result = _reproduce("--model", tiny_model, "--tasks", "rte", "--scale", "smoke", "--settings", "learning",
                        "--claims", "zhang-bertadam-failures", "--glue-dir", glue_dir, "--store", store,
                        "--out", tmp_path / "out", "--threads", 1)
    assert result.exit_code == 0, result.output
    with Store(store, readonly=True) as db:
        trials = db.trials()
        reproduction = Reproduction(str(tiny_model), ["rte"], SCALES["smoke"], ["zhang-bertadam-failures"],
                                    ["learning"], {"glue_dir": str(glue_dir)})
        choice = lr_choices(db, reproduction)["rte"]
    # The check's one run (smoke has one candidate lr); the Devlin and AdamW arms at the chosen lr only if it learned:
    # at an lr where nothing learns the task gives no answer instead of comparing runs that learned nothing.
    learned = choice.tried[0][1] >= choice.tried[0][2] + 0.05
    assert choice.learned == learned and len(choice.tried) == 1
    assert trials.sort_values("id").iloc[0]["cfg.recipe"] == "devlin2019" and set(trials["cfg.lr"]) == {1e-3}
    page = (tmp_path / "out" / "verdicts.md").read_text()
    if learned:
        assert choice.lr == 1e-3 and len(trials) == 1 + 3 + 3
    else:
        assert choice.lr is None and len(trials) == 1
        assert "no candidate lr learns" in page and "the model does not learn rte at any candidate lr" in page


@pytest.mark.slow
def test_a_hub_name_offline_is_one_line_and_sizes_come_from_the_command_line(tmp_path, monkeypatch, tiny_model,
                                                                             glue_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _reproduce("--model", "nobody/no-such-model", "--store", tmp_path / "s.db", "--dry-run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--model nobody/no-such-model: cannot read its configuration" in result.output
    result = _reproduce("--model", tiny_model, "--tasks", "rte", "--scale", "smoke", "--claims", "zhang-reinit-mean",
                        "--glue-dir", glue_dir, "--store", tmp_path / "s.db", "--seeds", 4, "--epochs", 2,
                        "--max-train", 16, "--dry-run")
    assert result.exit_code == 0, result.output
    # adamw and reinit with 4 seed pairs each, 2 epochs of 16 examples at batch 8: 4 steps a trial
    row = next(line for line in result.output.splitlines() if "adamw" in line)
    assert [cell.strip() for cell in row.split("│") if cell.strip()] == ["published", "rte", "adamw", "2e-05", "4", "4",
                                                                        "16"]
    for flag, value, message in (("--epochs", "nan", "'nan' is not a finite number"),
                                 ("--epochs", "0", "--epochs: must be a positive finite number"),
                                 ("--lr", "1e-4,x", "--lr: expected comma-separated numbers")):
        result = _reproduce("--store", tmp_path / "s.db", flag, value, "--dry-run")
        assert result.exit_code == 2 and message in result.output


def test_no_learning_lr_when_no_candidate_learns_and_the_reason_is_given():
    from steadytune.reproduce.design import SCALES, lr_check_spec, trial_keys
    from steadytune.reproduce.runner import Reproduction, lr_choices, untrained_reasons

    reproduction = Reproduction("m", ["rte", "sst2"], SCALES["smoke"], ["zhang-reinit-mean"], ["learning"])
    reproduction.__dict__["facts"] = type("Facts", (), {"layers": 2, "hidden_size": 32})()  # no model to read

    def key(task):
        return trial_keys(lr_check_spec(SCALES["smoke"], task, 1e-3, reproduction.base()))[0]

    class Stored:  # the store's trials as the lr check reads them
        @staticmethod
        def trials():
            return pd.DataFrame({"trial_key": [key("rte"), key("sst2")], "status": ["complete", "complete"],
                                 "final_metric": [0.55, 0.70], "baseline_metric": [0.527, 0.509]})

    choices = lr_choices(Stored(), reproduction)
    assert choices["rte"].lr is None and choices["rte"].finished and not choices["rte"].learned
    assert choices["sst2"].lr == 1e-3
    assert untrained_reasons(Stored(), reproduction) == {
        "learning": {"rte": "the model does not learn rte at any candidate lr"}}
    assert "no candidate lr learns" in choices["rte"].describe()


def test_an_arm_with_snapshots_is_trained_and_measured_in_its_own_study(tmp_path, monkeypatch):
    # The from-scratch lr check's run (WI 1, DO 1) has the scratch arm's first trial key, and no snapshots: the arm
    # must train that pair itself and measure its own run, not the lr check's.
    from steadytune.config import RunOptions
    from steadytune.reproduce import runner
    from steadytune.reproduce.design import SCALES, arm_spec, arms, lr_check_spec
    from steadytune.storage.store import TrialOutcome

    scale = SCALES["smoke"]
    scratch = arm_spec(arms(scale, 2)["scratch"], scale, "rte", 1e-3, "published", {"model": "m"})
    check = lr_check_spec(scale, "rte", 1e-3, {"model": "m"}, scratch=True)
    key = runner.trial_keys(check)[0]
    assert key == runner.trial_keys(scratch)[0]
    outcome = TrialOutcome("complete", 4, 4, "accuracy", {"accuracy": 0.6}, {"accuracy": 0.6}, 4, 0.5, 1.0)
    with Store(tmp_path / "s.db") as store:
        config = runner.expand(check)[0].config
        store.record_trial(config.model_dump(mode="json"), key, 1, store.study_id(check.study_name(), {}), outcome, [])
        own = store.record_trial(config.model_dump(mode="json"), key, 1, store.study_id(scratch.study_name(), {}),
                                 outcome, [])
        assert runner.missing_pairs(scratch, store, snapshots=True) == scratch
        measured = []
        monkeypatch.setattr(runner, "measure", lambda store, trial_id, *args: measured.append(trial_id))
        monkeypatch.setattr(runner, "recorded", lambda *args: None)
        runner._measure_arm(store, scratch, scale, RunOptions(), runner.Progress())
    assert measured == [own]
