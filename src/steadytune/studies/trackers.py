"""Experiment trackers: each trial's config, seeds and curves, logged to MLflow or TensorBoard as it runs.

`--track mlflow[=URI],tensorboard[=DIR]`. The store stays the record of results; a tracker is a copy that
a lab's own tools read: one MLflow run, or one TensorBoard run folder, per trial, with curve points named
`split/metric` (dev/accuracy, train/loss, diag/grad_norm.layer_0, ...) at their steps. A tracker that fails
(a server down, a full disk) warns once and stops logging; the trial goes on.

A trial run again after its driver died starts a new MLflow run and marks the stale one KILLED; in
TensorBoard its folder is emptied of the stale attempt's event files first, so each trial shows one curve.
A trial paused by early stopping (--early-stop) ends its run as `stopped`; its continuation is a second
run with the same trial key tag (in TensorBoard, it replaces the first part's curve).
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TrackerSpec, parse_track
from ..storage.store import Store, StoreError
from ..training.records import TERMINAL_STATUSES, CurvePoint, TrialOutcome, TrialStatus

DEFAULT_TENSORBOARD_DIR = "tensorboard"
TRIAL_KEY_TAG = "steadytune.trial_key"
TRIAL_KEY = re.compile(r"[0-9a-f]{16}")
STORE_TAG, TRIAL_ID_TAG = "steadytune.store", "steadytune.trial_id"  # where an exported run came from


@dataclass(frozen=True)
class TrialIdentity:
    """What a tracker names a trial by."""

    experiment: str  # the study's name, or "steadytune" for single trials
    trial_key: str
    config: dict[str, Any]

    @property
    def run_name(self) -> str:
        c = self.config
        return f"{c['task']} wi{c['wi_seed']} do{c['do_seed']} {self.trial_key[:8]}"

    @property
    def tags(self) -> dict[str, str]:
        c = self.config
        return {TRIAL_KEY_TAG: self.trial_key, "steadytune.task": str(c["task"]), "steadytune.model": str(c["model"]),
                "steadytune.wi_seed": str(c["wi_seed"]), "steadytune.do_seed": str(c["do_seed"]),
                "steadytune.recipe": str(c.get("recipe"))}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


class MlflowTracker:
    def __init__(self, uri: str | None, trial: TrialIdentity, start_time_ms: int | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(trial.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(trial.experiment))
        for stale in self.client.search_runs([experiment_id], f"tags.`{TRIAL_KEY_TAG}` = '{trial.trial_key}' and "
                                                              "attributes.status = 'RUNNING'"):
            self.client.set_terminated(stale.info.run_id, "KILLED")
        run = self.client.create_run(experiment_id, start_time=start_time_ms, tags=trial.tags, run_name=trial.run_name)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in _flat(trial.config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, points: Iterable[CurvePoint], timestamp_ms: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = timestamp_ms or int(time.time() * 1000)
        metrics = [Metric(f"{p.split}/{p.metric}", float(p.value), stamp, p.step) for p in points
                   if p.value is not None]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, outcome: TrialOutcome, end_time_ms: int | None = None) -> None:
        self.client.set_tag(self.run_id, "steadytune.status", str(outcome.status))
        if outcome.error:
            self.client.set_tag(self.run_id, "steadytune.error", outcome.error[:5000])
        status = {TrialStatus.COMPLETE: "FINISHED", TrialStatus.DIVERGED: "FINISHED", TrialStatus.STOPPED: "FINISHED",
                  TrialStatus.FORECAST_STOPPED: "KILLED"}.get(outcome.status, "FAILED")
        self.client.set_terminated(self.run_id, status, end_time=end_time_ms)


class TensorboardTracker:
    def __init__(self, folder: str | None, trial: TrialIdentity):
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(folder or DEFAULT_TENSORBOARD_DIR) / _safe(trial.experiment) / _safe(
            f"{trial.config['task']}-wi{trial.config['wi_seed']}-do{trial.config['do_seed']}-{trial.trial_key}")
        for stale in run_dir.glob("events.out.tfevents.*"):
            stale.unlink()
        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.writer.add_text("config", "    " + json.dumps(trial.config, indent=1, sort_keys=True)
                             .replace("\n", "\n    "))
        self.writer.add_text("seeds", f"WI {trial.config['wi_seed']}, DO {trial.config['do_seed']}, trial key "
                             f"{trial.trial_key}")

    def log(self, points: Iterable[CurvePoint]) -> None:
        for p in points:
            if p.value is not None:
                self.writer.add_scalar(f"{p.split}/{p.metric}", float(p.value), p.step)
        self.writer.flush()

    def finish(self, outcome: TrialOutcome) -> None:
        self.writer.add_text("outcome", f"{outcome.status} after {outcome.steps_done}/{outcome.total_steps} steps"
                             + (f": {outcome.error}" if outcome.error else ""))
        self.writer.close()


def _safe(name: str) -> str:
    """A folder name from a user string: no separators, no leading dots."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name).lstrip(".") or "_"


def trial_trackers(track: str | None, experiment: str, config: dict[str, Any], trial_key: str) -> Trackers:
    """The trackers `--track` asks for, started for one trial (none: a Trackers that does nothing)."""
    return Trackers(parse_track(track), TrialIdentity(experiment, trial_key, config))


class Trackers:
    """The trackers a trial logs to. A tracker that raises warns once on stderr and is dropped."""

    def __init__(self, specs: list[TrackerSpec], trial: TrialIdentity):
        self.active: list[tuple[str, Any]] = []
        for spec in specs:
            self._guard(spec.kind, lambda spec=spec: self.active.append((spec.kind, (
                MlflowTracker(spec.target, trial) if spec.kind == "mlflow" else TensorboardTracker(spec.target, trial)))))

    @staticmethod
    def _guard(name: str, call) -> bool:
        try:
            call()
            return True
        except ImportError as err:
            print(f"steadytune: --track {name} needs its package ({err.name}): pip install 'steadytune[trackers]'; "
                  f"not tracking", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - a tracker must never stop a trial
            print(f"steadytune: --track {name} failed ({type(err).__name__}: {' '.join(str(err).split())[:300]}); "
                  f"not tracking this trial there any more; results are in the store", file=sys.stderr)
        return False

    def log(self, points: list[CurvePoint]) -> None:
        self.active = [(name, t) for name, t in self.active if self._guard(name, lambda t=t: t.log(points))]

    def finish(self, outcome: TrialOutcome) -> None:
        self.active = [(name, t) for name, t in self.active if self._guard(name, lambda t=t: t.finish(outcome))]


def export_to_mlflow(store: Store, uri: str | None, on_trial=lambda done, total: None) -> tuple[int, int]:
    """Push every finished trial of a store to MLflow as a finished (or failed) run, with its curves at their steps
    and its recorded start and end times. Trials already pushed from this store are skipped, so re-running
    adds only new ones. Returns (pushed, skipped)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    trials = store.trials()
    trials = trials[trials["status"].isin(TERMINAL_STATUSES)]
    names, curves = store.study_names(), store.curves()
    pushed = skipped = 0
    for done, row in enumerate(trials.itertuples(), start=1):
        experiment = names.get(row.study_id, "steadytune") if pd.notna(row.study_id) else "steadytune"
        config, key, _ = store.trial_config(int(row.id))
        if not TRIAL_KEY.fullmatch(key):  # it goes into a search filter: a damaged store must not inject one
            raise StoreError(f"{store.label}: trial {int(row.id)} has a damaged trial key")
        found = client.get_experiment_by_name(experiment)
        earlier = [] if found is None else client.search_runs([found.experiment_id], f"tags.`{TRIAL_KEY_TAG}` = '{key}'")
        if any(run.data.tags.get(STORE_TAG) == store.label and run.data.tags.get(TRIAL_ID_TAG) == str(int(row.id))
               for run in earlier):
            skipped += 1
            on_trial(done, len(trials))
            continue
        identity = TrialIdentity(experiment, key, config)
        tracker = MlflowTracker(uri, identity, start_time_ms=int(row.started_at * 1000))
        client.set_tag(tracker.run_id, STORE_TAG, store.label)
        client.set_tag(tracker.run_id, TRIAL_ID_TAG, str(int(row.id)))
        mine = curves[curves["trial_id"] == row.id]
        end_ms = int((row.finished_at if pd.notna(row.finished_at) else row.started_at) * 1000)
        tracker.log([CurvePoint(int(c.step), float(c.epoch), c.split, c.metric, c.value) for c in mine.itertuples()
                     if pd.notna(c.value)], timestamp_ms=end_ms)
        tracker.finish(store.outcome(int(row.id)), end_time_ms=end_ms)
        pushed += 1
        on_trial(done, len(trials))
    return pushed, skipped
