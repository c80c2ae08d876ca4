"""Fault injection: cooperating drivers on one store, one of them kill -9'd every few seconds and restarted.

  python experiments/chaos_drivers.py --model MODEL_DIR --glue-dir ../shared/data/glue --trials 200 \
      --store runs/chaos.db --folder runs/chaos [--store postgresql://...]

It runs the study once with one driver that nothing interrupts (the reference, timed), then with --drivers
drivers (the first two with two worker processes each) while a seeded loop kills a random live driver, the
driver alone, every 2-4 s (so its workers must notice and exit), and starts it again, for --chaos-seconds;
the drivers then finish. It checks that every trial is complete exactly once, that every result and curve
equals the reference's bit for bit, and that no process of any driver is left, and prints the wall times.
The test suite runs the same functions at a small scale (tests/test_processes.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from steadytune.storage.connections import is_postgres
from steadytune.storage.store import Store


def study_command(model: str, glue_dir: str, folder: Path, store: str, trials: int, steps: int) -> list[str]:
    """The chaos study: tiny trials of RTE, each autosaving its state, as `python -m steadytune` arguments."""
    return ["study", "run", "--name", "chaos", "--tasks", "rte", "--wi-seeds", f"1-{trials}", "--do-seeds", "1",
            "--model", model, "--glue-dir", glue_dir, "--max-train", "32", "--batch-size", "8", "--max-length", "48",
            "--max-steps", str(steps), "--evals-per-epoch", "0", "--log-grads-every", "0", "--threads", "1",
            "--checkpoint-every", "0.01", "--store", store, "--cache-dir", str(folder / "cache")]


def start_driver(args: list[str], folder: Path, name: str, **env: str) -> subprocess.Popen:
    """A driver in its own session, as a shell starts a command, logging to folder/name.out and .err."""
    return subprocess.Popen([sys.executable, "-m", "steadytune", *args], stdout=open(folder / f"{name}.out", "w"),
                            stderr=open(folder / f"{name}.err", "w"), start_new_session=True, cwd=folder,
                            env={**os.environ, "COLUMNS": "200", **env},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def session_members(session: int) -> list[int]:
    """Live processes of a session (a driver leads one; its workers join it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(stat.parent.name))
    return found


def chaos(args: list[str], folder: Path, drivers: int, seconds: float, seed: int = 0,
          lease_seconds: str = "3", kills_at_least: int = 0) -> dict:
    """Run `drivers` drivers of the study under a kill loop, for `seconds` and until `kills_at_least` kills (while
    any driver still works: a loaded machine only makes the study last longer); returns kills, wall seconds, exit
    codes, sessions."""
    def launch(slot: int, attempt: int) -> subprocess.Popen:
        return start_driver([*args, "--workers", "2" if slot < 2 else "1"], folder, f"driver{slot}-{attempt}",
                            STEADYTUNE_LEASE_SECONDS=lease_seconds)

    rng, started = random.Random(seed), time.monotonic()
    running = {slot: launch(slot, 0) for slot in range(drivers)}
    sessions, kills = {p.pid for p in running.values()}, 0
    try:
        while ((time.monotonic() - started < seconds or kills < kills_at_least)
               and any(p.poll() is None for p in running.values())):
            time.sleep(rng.uniform(2, 4))
            alive = [slot for slot, p in running.items() if p.poll() is None]
            if not alive:
                break
            slot = rng.choice(alive)
            os.kill(running[slot].pid, signal.SIGKILL)  # the driver alone: its workers must notice and exit
            running[slot].wait()
            kills += 1
            running[slot] = launch(slot, kills)
            sessions.add(running[slot].pid)
        codes = {slot: p.wait(3600) for slot, p in running.items()}
    finally:
        for p in running.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    return {"kills": kills, "wall_seconds": time.monotonic() - started, "exit_codes": codes,
            "sessions": sorted(sessions)}


def curves_by_key(store: Store, trials: pd.DataFrame) -> pd.DataFrame:
    keys = ["trial_key", "step", "split", "metric"]
    named = store.curves().merge(trials[["id", "trial_key"]], left_on="trial_id", right_on="id")
    return named[keys + ["value"]].sort_values(keys).reset_index(drop=True)


def compare(store: str | Path, reference: str | Path) -> dict:
    """What the chaos store holds against the reference: statuses, duplicate keys, and any result or curve that
    differs. Raises AssertionError (with pandas' description) where results differ."""
    with Store(store, readonly=True) as chaotic, Store(reference, readonly=True) as clean:
        recorded, expected = chaotic.trials(), clean.trials()
        columns = ["final_metric", "best_metric", "best_step", "steps_done", "final_metrics_json"]
        pd.testing.assert_frame_equal(recorded.set_index("trial_key").sort_index()[columns],
                                      expected.set_index("trial_key").sort_index()[columns])
        pd.testing.assert_frame_equal(curves_by_key(chaotic, recorded), curves_by_key(clean, expected))
        return {"statuses": recorded["status"].value_counts().to_dict(), "rows": len(recorded),
                "unique_keys": int(recorded["trial_key"].nunique()), "curve_points": len(chaotic.curves())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--store", required=True, help="SQLite file or postgresql:// URL (an empty database)")
    parser.add_argument("--folder", type=Path, required=True, help="logs, the reference store, caches")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--drivers", type=int, default=4)
    parser.add_argument("--chaos-seconds", type=float, default=120)
    options = parser.parse_args()
    folder = options.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Drivers run in `folder`: every path they get is absolute.
    options.model, options.glue_dir = str(Path(options.model).resolve()), str(Path(options.glue_dir).resolve())
    if not is_postgres(options.store):
        options.store = str(Path(options.store).resolve())
    reference = folder / "reference.db"
    started = time.monotonic()
    single = start_driver(study_command(options.model, options.glue_dir, folder, str(reference), options.trials,
                                       options.steps), folder, "reference")
    assert single.wait() == 0, (folder / "reference.err").read_text()
    one_driver = time.monotonic() - started
    run = chaos(study_command(options.model, options.glue_dir, folder, options.store, options.trials, options.steps),
                folder, options.drivers, options.chaos_seconds)
    time.sleep(10)
    report = {"trials": options.trials, "one_driver_seconds": round(one_driver, 1),
              "chaos_seconds": round(run["wall_seconds"], 1), "kills": run["kills"], "exit_codes": run["exit_codes"],
              **compare(options.store, reference),
              "processes_left": sum(len(session_members(s)) for s in run["sessions"])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
