"""The Python API: every example of docs/reference/api.md runs, in order, and computes what the page says."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import steadytune
from steadytune import TrialStatus

PAGE = Path(__file__).parents[1] / "docs" / "reference" / "api.md"


def test_the_api_page_runs_and_says_what_it_computes(tmp_path, glue_dir, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 5
    (tmp_path / "docs").symlink_to(PAGE.parents[1])  # run from a repository-like folder: the page's paths hold
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEADYTUNE_GLUE_DIR", str(glue_dir))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own examples
    capsys.readouterr()

    # E[max n] as the page quotes it, and as an independent computation gives it: E[max 1] is the mean, and
    # without replacement E[max N] is the maximum.
    curve = namespace["curve"].set_index("n")["expected"]
    finals = namespace["grid"].trials["final"].to_numpy()
    assert len(finals) == 15 and curve[1] == pytest.approx(finals.mean())
    assert round(curve[1], 3) == 0.796 and round(curve[10], 3) == 0.815
    assert steadytune.analysis.expected_max(finals, n=[15], replace=False)["expected"].iloc[0] == pytest.approx(
        finals.max())
    # The recipe comparison the page describes: re-init higher by 0.017, the permutation test rejecting.
    row = namespace["tests"].iloc[0]
    assert row["mean A - B"] == pytest.approx(-0.017, abs=5e-4) and row["better"] == "B"
    assert row["permutation p (Holm)"] < 0.05
    arms = namespace["arms"].trials
    by_arm = arms.groupby("arm")["final"].mean()
    assert row["mean A - B"] == pytest.approx(by_arm[row["A"]] - by_arm[row["B"]])
    # The variance components of the 5 x 3 grid, against the expected mean squares of a two-way ANOVA.
    grid = namespace["grid"].trials.pivot(index="wi_seed", columns="do_seed", values="final").to_numpy()
    rows, cols, mean = grid.mean(1, keepdims=True), grid.mean(0, keepdims=True), grid.mean()
    ms_wi = 3 * ((rows - mean) ** 2).sum() / 4
    ms_do = 5 * ((cols - mean) ** 2).sum() / 2
    ms_res = ((grid - rows - cols + mean) ** 2).sum() / 8
    found = namespace["components"].set_index("component")["variance"]
    assert found["WI"] == pytest.approx(max(0.0, (ms_wi - ms_res) / 3))
    assert found["DO"] == pytest.approx(max(0.0, (ms_do - ms_res) / 5))
    assert found["residual"] == pytest.approx(ms_res)
    # train and run_study recorded into their store, and a second call trains nothing.
    assert namespace["outcome"].status == "complete" and namespace["outcome"].steps_done == 2
    assert namespace["summary"].count(TrialStatus.COMPLETE) == 2 and namespace["summary"].ran == 2
    again = steadytune.run_study({"name": "api-demo", "tasks": ["rte"], "wi_seeds": "1-2",
                                  "config": namespace["quick"]}, store="runs/api-demo.db",
                                 options={"device": "cpu"})
    assert again.ran == 0 and again.count(TrialStatus.COMPLETE) == 2
    assert os.path.exists("runs/api-demo.db")
