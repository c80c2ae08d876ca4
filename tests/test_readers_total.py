"""Readers are total: every command that reads a store works, or says in one line what it cannot do, whatever valid
rows the store holds. Stores are generated (Hypothesis) from the real schema: arbitrary mixes of present and missing
config fields, statuses, empty curves and non-finite metrics, and a store of the oldest schema still read."""
from __future__ import annotations

import json
import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.storage.store import Store

runner = CliRunner()

STATUSES = ("running", "complete", "diverged", "stopped", "failed", "forecast-stopped")
METRICS = ("accuracy", "f1", "loss", "grad_norm", "lr", "mcc")
numbers = st.one_of(st.none(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, -1.0]),
                    st.floats(min_value=-10, max_value=10))
config_fields = {  # each present or missing in a trial's stored config
    "recipe": st.sampled_from(["devlin2019", "mosbach2021", "zhang2021"]), "lr": st.sampled_from([2e-5, 1e-4]),
    "epochs": st.sampled_from([1.0, 3.0]), "max_train": st.sampled_from([16, 100000]),
    "adapter": st.sampled_from(["none", "lora"]), "optimizer": st.sampled_from(["adamw", "bertadam"]),
    "reinit_layers": st.integers(0, 2), "from_scratch": st.booleans(), "wi_seed": st.integers(1, 3),
    "do_seed": st.integers(1, 3), "model": st.sampled_from(["m", "minilm-l6"]),
}
trial = st.fixed_dictionaries({
    "task": st.sampled_from(["rte", "sst2"]), "status": st.sampled_from(STATUSES),
    "config": st.fixed_dictionaries({}, optional=config_fields),
    "study": st.sampled_from([None, 1, 2]), "metric": st.sampled_from(["accuracy", "f1", None]),
    "final": numbers, "best": numbers, "baseline": numbers,
    "steps": st.sampled_from([None, 0, 10, 20]), "best_step": st.sampled_from([None, 0, 5, 10]),
    "metrics_json": st.sampled_from([None, "{}", '{"accuracy": 0.5}', '{"accuracy": NaN}', '{"f1": null}']),
    "curve": st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["train", "dev", "test", "diag"]),
                                st.sampled_from(METRICS), numbers), max_size=12),
})


def write_store(path, trials: list[dict], oldest_schema: bool) -> None:
    Store(path).close()  # the real schema
    db = sqlite3.connect(path)
    for study in (1, 2):
        db.execute("INSERT INTO studies (id, name, spec_json, created_at) VALUES (?, ?, '{}', 0)", (study, f"s{study}"))
    for index, row in enumerate(trials, 1):
        config = {"task": row["task"], **row["config"]}
        db.execute(
            "INSERT INTO trials (id, study_id, trial_key, task, model, recipe, wi_seed, do_seed, dropout_seed,"
            " config_json, status, started_at, finished_at, wall_seconds, steps_done, total_steps, metric, final_metric,"
            " best_metric, best_step, baseline_metric, final_metrics_json, best_metrics_json, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1, 1, ?, 20, ?, ?, ?, ?, ?, ?, ?, ?)",
            (index, row["study"], f"{index:016x}", row["task"], config.get("model", "m"), config.get("recipe"),
             config.get("wi_seed", 1), config.get("do_seed", 1), 1, json.dumps(config), row["status"], row["steps"],
             row["metric"], row["final"], row["best"], row["best_step"], row["baseline"], row["metrics_json"],
             row["metrics_json"], "boom" if row["status"] == "failed" else None))
        db.executemany("INSERT OR REPLACE INTO curves (trial_id, step, epoch, split, metric, value) VALUES (?, ?, ?, ?, ?, ?)",
                       [(index, step, step / 10, split, metric, value) for step, split, metric, value in row["curve"]])
    if oldest_schema:  # the first release: no provenance columns, none of the later tables
        for column in ("threads", "device", "data_hash"):
            db.execute(f"ALTER TABLE trials DROP COLUMN {column}")
        for table in ("predictions", "landscape_cells", "landscapes", "claims", "files", "store_meta"):
            db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()


def readers(store: str, out: str, glue_dir: str, model: str) -> list[list[str]]:
    return [["runs", store], ["export", store, "--out", f"{out}/t.csv"],
            ["export", store, "--what", "curves", "--out", f"{out}/c.csv"],
            ["export", store, "--what", "predictions", "--out", f"{out}/p.csv"],
            ["report", store, "--out", f"{out}/report", "--format", "md"], ["diagnose", store, "--out", f"{out}/d"],
            ["diagnose", store, "1", "--out", f"{out}/d1"], ["diagnose", store, "999", "--out", f"{out}/d9"],
            ["forecast", "eval", store], ["forecast", "simulate", store],
            ["soup", store, "--arm", "devlin2019"], ["landscape", "line", store, "1", "--out", f"{out}/l"],
            ["reproduce", "--no-train", "--store", store, "--model", model, "--tasks", "rte", "--glue-dir", glue_dir,
             "--scale", "smoke", "--out", f"{out}/r"],
            ["study", "plan", "--tasks", "rte", "--store", store, "--glue-dir", glue_dir, "--model", model]]


def assert_total(args: list[str]) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    said = f"{' '.join(args[:2])}: exit {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{said}\n{result.exception!r}"
    assert "Traceback" not in result.output, said
    if result.exit_code != 0:
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, said


@pytest.mark.parametrize("oldest_schema", [False, True], ids=["current schema", "oldest schema"])
def test_every_reader_works_or_says_why_in_one_line(oldest_schema, tmp_path_factory, glue_dir, tiny_bert_dir):
    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(trial, min_size=0, max_size=6))
    def check(trials):
        folder = tmp_path_factory.mktemp("store")
        path = folder / "runs.db"
        write_store(path, trials, oldest_schema)
        for args in readers(str(path), str(folder), str(glue_dir), str(tiny_bert_dir)):
            assert_total(args)

    check()
