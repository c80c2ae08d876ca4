"""What users read: one-line errors in their own words, notes, no stale bars, and output that survives
long paths, narrow terminals and hostile strings."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.storage.store import CurvePoint, Store, TrialOutcome

runner = CliRunner()


def train_args(tiny_bert_dir, glue_dir, store, *extra):
    return ["train", "--task", "rte", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32",
            "--batch-size", "8", "--max-length", "48", "--epochs", "1", "--store", str(store), *extra]


def one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "invalid literal" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0], (text, result.output)


def test_runs_heading_keeps_a_long_store_path_whole_at_any_width(tiny_bert_dir, glue_dir, tmp_path):
    folder = tmp_path / ("a-rather-long-folder-name-for-results-" * 3)
    folder.mkdir()
    store = folder / "runs-of-the-rte-seed-study.db"
    assert runner.invoke(app, train_args(tiny_bert_dir, glue_dir, store, "--cache-dir", str(tmp_path / "c"))).exit_code == 0
    for width in ("40", "80", "300"):
        listing = runner.invoke(app, ["runs", str(store)], env={"COLUMNS": width})
        assert listing.exit_code == 0, listing.output
        assert f"{store}: 1 trials, task rte" in listing.output  # never wrapped, so one substring
        assert "complete" in listing.output


def test_input_errors_show_no_progress_bar(tiny_bert_dir, tmp_path):
    result = runner.invoke(app, ["train", "--glue-dir", str(tmp_path / "nowhere"), "--model", str(tiny_bert_dir),
                                 "--store", str(tmp_path / "r.db")])
    one_line_error(result, "nowhere")
    assert "0/?" not in result.output and "loss nan" not in result.output


def test_errors_say_flags_and_keys_as_the_user_wrote_them(tiny_bert_dir, glue_dir, tmp_path):
    store = str(tmp_path / "r.db")
    one_line_error(runner.invoke(app, train_args(tiny_bert_dir, glue_dir, store, "--device", "cuda")),
                   "--device cuda", "use --device cpu")
    one_line_error(runner.invoke(app, train_args(tiny_bert_dir, glue_dir, store, "--reinit-layers", "9")),
                   "--reinit-layers 9", "3 transformer layers")
    one_line_error(runner.invoke(app, ["train", "--model", str(tmp_path / "no-model"), "--store", store]),
                   "folder does not exist")
    (tmp_path / "not-a-model").mkdir()
    one_line_error(runner.invoke(app, ["train", "--model", str(tmp_path / "not-a-model"), "--store", store]),
                   "not a Hugging Face model (no config.json)", "tokenizer files")
    config = tmp_path / "trial.yaml"
    config.write_text("learning_rate: 1e-4\n")
    one_line_error(runner.invoke(app, ["train", "--config", str(config), "--store", store]),
                   f"{config}: unknown key 'learning_rate' (did you mean 'lr'?)")
    config.write_text("lr: -1\n")
    result = runner.invoke(app, ["train", "--config", str(config), "--store", store])
    one_line_error(result, "lr: Input should be greater than 0")
    assert "--lr" not in result.output  # it came from the file
    files = tmp_path / "own.csv"
    files.write_text("text,label\nfine,a\nbad,a\n")
    one_line_error(runner.invoke(app, ["train", "--task", "classification", "--train-file", str(files), "--dev-file",
                                       str(files), "--label-names", "a", "--store", store]), "--label-names")
    one_line_error(runner.invoke(app, ["train", "--metric", "f1", "--store", store]),
                   "--metric applies to own-file tasks")


@pytest.mark.parametrize("flags, expected", [
    (["--wi-seeds", "3-1"], "range '3-1' runs backwards; write 1-3"),
    (["--wi-seeds", "1,1"], "seed(s) 1 listed more than once"),
    (["--do-seeds", "1-3,2"], "seed(s) 2 listed more than once"),
    (["--wi-seeds", "abc"], "'abc' is not a seed or a range"),
    (["--tasks", "stsb,STS-B,sts-b"], "task(s) stsb listed more than once"),
])
def test_study_grids_with_reversed_repeated_or_bad_values_are_errors(flags, expected, tiny_bert_dir, glue_dir, tmp_path):
    for command in ("plan", "run"):
        args = ["study", command, "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), *flags]
        if command == "run":
            args += ["--store", str(tmp_path / "r.db")]
        one_line_error(runner.invoke(app, args), expected)
    assert not (tmp_path / "r.db").exists() or Store(tmp_path / "r.db", readonly=True).trials().empty


def test_task_names_are_canonical(tiny_bert_dir, glue_dir):
    result = runner.invoke(app, ["study", "plan", "--tasks", "STS-B,SST-2", "--model", str(tiny_bert_dir),
                                 "--glue-dir", str(glue_dir), "--max-train", "16"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "stsb" in result.output and "sst2" in result.output and "STS-B" not in result.output


def test_max_train_beyond_the_data_is_a_note(tiny_bert_dir, glue_dir, tmp_path):
    result = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, tmp_path / "r.db", "--task", "wnli",
                                           "--max-train", "100000", "--max-steps", "2", "--cache-dir",
                                           str(tmp_path / "c")))
    assert result.exit_code == 0, result.output
    assert "note: --max-train 100000 is more than the 635 training examples: all 635 are used" in result.output


def test_own_files_take_a_metric(tiny_bert_dir, tmp_path):
    rows = "\n".join(f"{'good' if k % 3 else 'bad'} text number {k},{k % 3 != 0}" for k in range(40))
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("text,label\n" + rows.replace("True", "1").replace("False", "0") + "\n")
    args = ["train", "--task", "classification", "--label-names", "neg,pos", "--train-file", str(tmp_path / "train.csv"),
            "--dev-file", str(tmp_path / "dev.csv"), "--model", str(tiny_bert_dir), "--epochs", "1",
            "--metric", "mcc", "--store", str(tmp_path / "r.db"), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "mcc is tracked" in result.output
    with Store(tmp_path / "r.db", readonly=True) as store:
        assert store.trials().iloc[0].metric == "mcc"


def test_a_complete_config_is_not_run_twice(tiny_bert_dir, glue_dir, tmp_path):
    args = train_args(tiny_bert_dir, glue_dir, tmp_path / "r.db", "--cache-dir", str(tmp_path / "c"))
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "already holds this config's result" in again.output
    assert "status complete" in again.output
    with Store(tmp_path / "r.db", readonly=True) as store:
        assert len(store.trials()) == 1


def test_hostile_strings_reach_the_terminal_as_text(tiny_bert_dir, glue_dir, tmp_path):
    store = tmp_path / "r.db"
    result = runner.invoke(app, ["study", "run", "--name", "ablation [/x] [bold]:smile:", "--model", str(tiny_bert_dir),
                                 "--glue-dir", str(glue_dir), "--max-train", "16", "--batch-size", "8", "--epochs", "1",
                                 "--max-length", "32", "--store", str(store), "--cache-dir", str(tmp_path / "c")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "study ablation [/x] [bold]:smile:: 1 complete" in result.output
    with Store(store) as db:
        db._conn.execute("UPDATE trials SET recipe = ?, task = ?", ("\x1b[31mred\x1b[0m", "rte\x07[bold]x"))
    listing = runner.invoke(app, ["runs", str(store)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    assert "\x1b" not in listing.output and "\x07" not in listing.output
    assert "\ufffd[31mred" in listing.output and "rte\ufffd[bold]x" in listing.output


def test_one_study_keeps_one_thread_count(tiny_bert_dir, glue_dir, tmp_path):
    args = ["study", "run", "--name", "threads", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir),
            "--max-train", "16", "--batch-size", "8", "--epochs", "1", "--max-length", "32",
            "--store", str(tmp_path / "r.db"), "--cache-dir", str(tmp_path / "c")]
    assert runner.invoke(app, [*args, "--wi-seeds", "1", "--threads", "1"]).exit_code == 0
    with Store(tmp_path / "r.db", readonly=True) as store:
        row = store.trials().iloc[0]
        assert (row.threads, row.device) == (1, "cpu") and len(row.data_hash) == 16
        assert row.started_at < row.finished_at
    mixed = runner.invoke(app, [*args, "--wi-seeds", "1", "--threads", "2"], env={"COLUMNS": "300"})
    one_line_error(mixed, "1 with 1 thread(s)", "would use (2)", "Pass --threads 1")
    assert runner.invoke(app, [*args, "--wi-seeds", "1", "--threads", "1"]).exit_code == 0


def _read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written.

    An ordinary user gets a folder without write permission. Root ignores permissions, so root gets a
    read-only bind mount of the folder in its own user and mount namespace (`unshare -rm`), as a store on
    a read-only mount would be; where namespaces are not allowed the test is skipped, saying why."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && cd "$0" && exec "$@"'
    prefix = ["unshare", "-rm", "sh", "-c", remount, str(folder)]
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a folder read-only for root")
    probe = subprocess.run([*prefix, "sh", "-c", f"! touch {folder}/probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot mount read-only in a user namespace: {probe.stderr.strip()}")
    return prefix


def test_readers_work_on_a_store_they_may_not_write(tiny_bert_dir, glue_dir, tmp_path):
    store = tmp_path / "r.db"
    assert runner.invoke(app, train_args(tiny_bert_dir, glue_dir, store, "--cache-dir", str(tmp_path / "c"),
                                         "--evals-per-epoch", "2", "--log-grads-every", "1")).exit_code == 0
    folder, out = tmp_path / "read-only", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    shutil.copy(store, folder / "runs.db")
    before = (folder / "runs.db").read_bytes()
    prefix = _read_only_prefix(folder)
    try:
        commands = [["runs", "runs.db"], ["export", "runs.db", "--out", str(out / "t.csv")],
                    ["diagnose", "runs.db", "--out", str(out / "d")], ["report", "runs.db", "--out", str(out / "rep")],
                    train_args(tiny_bert_dir, glue_dir, "runs.db", "--wi-seed", "5", "--cache-dir", str(out / "c"))]
        # One interpreter runs all five commands (through the CLI, as `python -m steadytune` would), which
        # saves four torch imports.
        script = ("import json, sys; from typer.testing import CliRunner; from steadytune.cli import app; "
                  "runs = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]; "
                  "print(json.dumps([[r.exit_code, r.stdout, r.stderr] for r in runs]))")
        env = {**os.environ, "MPLCONFIGDIR": str(out / "mpl"), "COLUMNS": "300"}
        done = subprocess.run([*prefix, sys.executable, "-c", script, json.dumps(commands)], cwd=folder,
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        results = [subprocess.CompletedProcess(args, code, stdout, stderr)
                   for args, (code, stdout, stderr) in zip(commands, json.loads(done.stdout.splitlines()[-1]))]
        for done in results[:4]:
            assert done.returncode == 0, done.stdout + done.stderr
        assert "1 trials" in results[0].stdout and (out / "t.csv").exists() and (out / "rep" / "report.html").exists()
        write = results[4]
        assert write.returncode == 2 and "Traceback" not in write.stderr, write.stdout + write.stderr
        assert "cannot write to the store" in write.stderr and "Read-only commands" in write.stderr
        assert (folder / "runs.db").read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]  # no -wal or -shm left behind
    finally:
        folder.chmod(0o755)


def test_a_damaged_store_is_one_line(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as store:
        for k in range(200):
            trial_id = store.start_trial({"task": "rte", "model": "m", "wi_seed": k, "do_seed": 1}, f"k{k}", 1)
            store.finish_trial(trial_id, TrialOutcome("complete", 1, 1, "accuracy", {"accuracy": 0.5}, {}, None, 0.5, 1.0),
                               [CurvePoint(s, 0.1, "dev", "accuracy", 0.5) for s in range(30)])
    data = bytearray(path.read_bytes())
    data[8192:-4096] = b"\xff" * (len(data) - 12288)
    path.write_bytes(bytes(data))
    for command in (["runs", str(path)], ["report", str(path), "--out", str(tmp_path / "rep")]):
        one_line_error(runner.invoke(app, command, env={"COLUMNS": "300"}), "the store file is damaged")
    sqlite3.connect(tmp_path / "x.db").execute("CREATE TABLE other (a)").connection.commit()
    one_line_error(runner.invoke(app, ["runs", str(tmp_path / "x.db")]), "not a steadytune store")


def test_what_commands_print_does_not_depend_on_the_terminal_width(tiny_bert_dir, glue_dir, tmp_path):
    """Tables print at their natural width and lines are never broken by the console, at any COLUMNS."""
    long_path = tmp_path / ("a-long-folder-name-" * 4) / "missing-store.db"
    commands = [["recipes", "mosbach2021"],
                ["study", "plan", "--tasks", "rte,mrpc", "--wi-seeds", "1-2", "--model", str(tiny_bert_dir),
                 "--glue-dir", str(glue_dir), "--max-train", "16"],
                ["runs", str(long_path)], ["landscape", "line", str(long_path), "1"]]
    for args in commands:
        outputs = {width: runner.invoke(app, args, env={"COLUMNS": width}).output for width in ("20", "80", "300")}
        assert outputs["20"] == outputs["80"] == outputs["300"], args
        assert "[bold]" not in outputs["20"] and "[/]" not in outputs["20"]
    missing = runner.invoke(app, ["runs", str(long_path)])
    one_line_error(missing, f"{long_path}: folder {long_path.parent} does not exist")
    (tmp_path / "folder.db").mkdir()
    one_line_error(runner.invoke(app, ["runs", str(tmp_path / "folder.db")]), "is a folder, not a store file")
    one_line_error(runner.invoke(app, ["landscape", "line", str(tmp_path / "none.db"), "1"]),
                   "store file does not exist")
    assert not (tmp_path / "none.db").exists()


def test_a_study_on_missing_data_or_model_is_one_error_before_anything_runs(tiny_bert_dir, glue_dir, tmp_path):
    store = tmp_path / "r.db"
    result = runner.invoke(app, ["study", "run", "--tasks", "rte", "--model", str(tiny_bert_dir), "--glue-dir",
                                 str(tmp_path / "nowhere"), "--store", str(store)])
    one_line_error(result, "nowhere/RTE: GLUE task folder not found")
    assert "0/?" not in result.output and "failed" not in result.output and not store.exists()
    result = runner.invoke(app, ["study", "run", "--tasks", "rte", "--model", str(tmp_path / "no-model"),
                                 "--glue-dir", str(glue_dir), "--store", str(store)])
    one_line_error(result, "folder does not exist")
    assert not store.exists()


def _boolean_fields():
    from typing import Optional

    from steadytune.cli.common import _cli_type
    from steadytune.config import RunOptions, TrialConfig

    return [(model, name) for model in (TrialConfig, RunOptions) for name, info in model.model_fields.items()
            if _cli_type(info.annotation) == Optional[bool]]


@pytest.mark.parametrize("model, name", _boolean_fields(), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_every_boolean_field_has_a_working_flag_pair(model, name):
    import json

    import typer
    from typer.testing import CliRunner

    from steadytune.cli.common import with_config_flags

    app = typer.Typer()

    @app.command()
    @with_config_flags
    def show(flags: dict, run_flags: dict) -> None:
        print(json.dumps({**flags, **run_flags}))

    flag = name.replace("_", "-")
    for given, expected in ((f"--{flag}", True), (f"--no-{flag}", False), (None, None)):
        result = CliRunner().invoke(app, [given] if given else [])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[name] is expected


def test_messages_name_the_flag_the_file_and_the_label_ids_and_start_at_the_error(tiny_bert_dir, glue_dir, tmp_path):
    store = str(tmp_path / "r.db")
    result = runner.invoke(app, train_args(tiny_bert_dir, glue_dir, store, "--init-from", str(tmp_path / "nowhere")))
    one_line_error(result, "--init-from", "not a trial id of the store nor a model folder")
    assert "--model" not in result.output
    assert result.output.startswith("error:")  # no empty line from a progress bar that never started
    config = tmp_path / "trial.yaml"
    config.write_text("lr: [0.1, 0.2]\n")
    one_line_error(runner.invoke(app, ["train", "--config", str(config), "--store", store]),
                   f"{config}: lr: Input should be a valid number")
    files = tmp_path / "own.csv"
    files.write_text("text,label\nfine,0\nbad,7\n")
    one_line_error(runner.invoke(app, ["train", "--task", "classification", "--train-file", str(files), "--dev-file",
                                       str(files), "--label-names", "neg,pos", "--model", str(tiny_bert_dir),
                                       "--store", store]),
                   "label '7' is outside the label set: integer labels are ids 0..1 in --label-names order (0=neg, 1=pos)")


@pytest.mark.parametrize("flag, value", [("--epochs", "inf"), ("--lr", "nan"), ("--warmup", "-inf"),
                                         ("--weight-decay", "inf")])
def test_non_finite_numbers_are_refused_where_they_enter(flag, value, tmp_path):
    # --epochs inf ended in an OverflowError deep in the data order
    one_line_error(runner.invoke(app, ["train", flag, value, "--store", str(tmp_path / "r.db")]),
                   f"{flag}: Input should be a finite number")
    config = tmp_path / "trial.yaml"
    key = flag[2:].replace("-", "_")
    config.write_text(f"{key}: .{value.lstrip('-')}\n" if value != "nan" else f"{key}: .nan\n")
    one_line_error(runner.invoke(app, ["train", "--config", str(config), "--store", str(tmp_path / "r.db")]),
                   f"{config}: {key}: Input should be a finite number")


def _float_flags() -> list[tuple[list[str], str, int, list[str]]]:
    """Every float flag of every command: (command path, flag, values it takes, the command's arguments)."""
    import typer.main

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    found = []
    for path, command in walk(typer.main.get_command(app), []):
        arguments = [p for p in command.params if p.param_type_name == "argument" and p.required]
        for param in command.params:
            annotation = str(param.type_descriptor.annotation)
            if param.param_type_name == "option" and "float" in annotation:
                found.append((path, param.opts[0], max(param.nargs, 1), ["1"] * len(arguments)))
    return found


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_flag_refuses_non_finite_numbers_in_one_line(value, tmp_path):
    flags = _float_flags()
    assert len({(tuple(path), flag) for path, flag, _, _ in flags}) >= 30  # the config's flags and the commands' own
    for path, flag, nargs, arguments in flags:
        extra = (["--task", "rte"] if path == ["train"] else ["--tasks", "rte"] if path in (["study", "run"],
                                                                                           ["study", "plan"]) else [])
        result = runner.invoke(app, [*path, *arguments, *extra, flag, *[value] * nargs], env={"COLUMNS": "200"})
        message = f"{' '.join(path)} {flag} {value}: {result.output}"
        assert result.exit_code == 2, message
        assert "finite number" in result.output and flag in result.output, message
        assert "Traceback" not in result.output, message
