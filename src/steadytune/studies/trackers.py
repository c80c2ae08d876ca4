"""Experiment trackers: each trial's config, seeds and curves, logged to MLflow or TensorBoard as it runs.

`--track mlflow[=URI],tensorboard[=DIR]`. The store stays the record of results; a tracker is a copy that
a lab's own tools read: one MLflow run, or one TensorBoard run folder, per trial, with curve points named
`split/metric` (dev/accuracy, train/loss, diag/grad_norm.layer_0, ...) at their steps, and at the end the summary:
final and best score and the majority baseline (as TensorBoard HParams too, beside the seeds, so runs can be filtered
by them). A tracker that fails (a server down, a full disk) warns once per process and stops logging; the trial goes
on. MLflow logs to a server or a folder as installed (mlflow-skinny): see config.mlflow_tracking_uri.

A trial run again after its driver died starts a new MLflow run and marks the stale one KILLED; in
TensorBoard its folder is emptied of the stale attempt's event files first, so each trial shows one curve.
A trial paused by early stopping (--early-stop) ends its run as `stopped`; its continuation is a second
run with the same trial key tag (in TensorBoard, it replaces the first part's curve).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from ..config import TrackerSpec, mlflow_tracking_uri, parse_track
from ..storage.store import Store, StoreError
from ..training.layout import TRIAL_KEY
from ..training.records import TERMINAL_STATUSES, CurvePoint, TrialOutcome, TrialStatus

DEFAULT_TENSORBOARD_DIR = "tensorboard"
TRIAL_KEY_TAG = "steadytune.trial_key"
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
    def seeds(self) -> dict[str, int]:
        """The three seeds as the trial used them (an unset dropout seed is the WI seed's)."""
        c = self.config
        dropout = c.get("dropout_seed")
        return {"wi_seed": c["wi_seed"], "do_seed": c["do_seed"], "dropout_seed": c["wi_seed"] if dropout is None
                else dropout}

    @property
    def tags(self) -> dict[str, str]:
        c = self.config
        return {TRIAL_KEY_TAG: self.trial_key, "steadytune.task": str(c["task"]), "steadytune.model": str(c["model"]),
                **{f"steadytune.{name}": str(seed) for name, seed in self.seeds.items()},
                "steadytune.recipe": str(c.get("recipe"))}


def summary(outcome: TrialOutcome) -> dict[str, float]:
    """What a trial ended with: its final and best score of its metric, and the majority baseline."""
    values = {f"final_{outcome.metric}": outcome.final_metrics.get(outcome.metric),
              f"best_{outcome.metric}": outcome.best_metrics.get(outcome.metric),
              "majority_baseline": outcome.baseline_metric}
    return {name: float(value) for name, value in values.items() if value is not None and value == value}


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
        self.client = mlflow_client(uri)
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
        from mlflow.entities import Metric

        stamp = timestamp_ms or int(time.time() * 1000)
        metrics = [Metric(f"{p.split}/{p.metric}", float(p.value), stamp, p.step) for p in points
                   if p.value is not None]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, outcome: TrialOutcome, end_time_ms: int | None = None) -> None:
        self.client.set_tag(self.run_id, "steadytune.status", str(outcome.status))
        from mlflow.entities import Metric

        stamp = end_time_ms or int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"summary/{name}", value, stamp, outcome.steps_done)
                                                    for name, value in summary(outcome).items()])
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
        self.trial = trial

    def log(self, points: Iterable[CurvePoint]) -> None:
        for p in points:
            if p.value is not None:
                self.writer.add_scalar(f"{p.split}/{p.metric}", float(p.value), p.step)
        self.writer.flush()

    def finish(self, outcome: TrialOutcome) -> None:
        self.writer.add_text("outcome", f"{outcome.status} after {outcome.steps_done}/{outcome.total_steps} steps"
                             + (f": {outcome.error}" if outcome.error else ""))
        c = self.trial.config
        hparams = {**self.trial.seeds, "task": str(c["task"]), "model": str(c["model"]), "recipe": str(c.get("recipe")),
                   "lr": float(c["lr"]), "trial_key": self.trial.trial_key, "status": str(outcome.status)}
        # In the run's own folder (run_name "."), so the HParams view lists one row per trial, filterable by seed.
        self.writer.add_hparams(hparams, {f"summary/{name}": value for name, value in summary(outcome).items()},
                                run_name=".")
        self.writer.close()


def _safe(name: str) -> str:
    """A folder name from a user string: no separators, no leading dots."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name).lstrip(".") or "_"


def trial_trackers(track: str | None, experiment: str, config: dict[str, Any], trial_key: str) -> Trackers:
    """The trackers `--track` asks for, started for one trial (none: a Trackers that does nothing)."""
    return Trackers(parse_track(track), TrialIdentity(experiment, trial_key, config))


def mlflow_client(target: str | None):
    """An MLflow client on the tracking URI `--track mlflow[=URI]` names (checked: config.mlflow_tracking_uri)."""
    from mlflow.tracking import MlflowClient

    uri = mlflow_tracking_uri(target)
    if urlsplit(uri).scheme in ("", "file"):
        # MLflow 3 asks for this opt-in before it logs to a folder; naming a folder is that choice.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


_WARNED: set[str] = set()  # trackers that failed in this process: each says so once, not once per trial


class Trackers:
    """The trackers a trial logs to. A tracker that raises warns once per process on stderr and is dropped."""

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
            message = (f"steadytune: --track {name} needs its package ({err.name}): pip install "
                       f"'steadytune[trackers]'; not tracking")
        except Exception as err:  # noqa: BLE001 - a tracker must never stop a trial
            message = (f"steadytune: --track {name} failed ({type(err).__name__}: {' '.join(str(err).split())[:300]});"
                       f" not tracking there any more; results are in the store")
        if name not in _WARNED:
            _WARNED.add(name)
            print(message, file=sys.stderr)
        return False

    def log(self, points: list[CurvePoint]) -> None:
        self.active = [(name, t) for name, t in self.active if self._guard(name, lambda t=t: t.log(points))]

    def finish(self, outcome: TrialOutcome) -> None:
        self.active = [(name, t) for name, t in self.active if self._guard(name, lambda t=t: t.finish(outcome))]


def export_to_mlflow(store: Store, uri: str | None, on_trial=lambda done, total: None) -> tuple[int, int]:
    """Push every finished trial of a store to MLflow as a finished (or failed) run, with its curves at their steps
    and its recorded start and end times. Trials already pushed from this store are skipped, so re-running
    adds only new ones. Returns (pushed, skipped)."""
    client = mlflow_client(uri)
    trials = store.trials()
    trials = trials[trials["status"].isin(TERMINAL_STATUSES)]
    names, curves = store.study_names(), store.curves()
    pushed, skipped, store_id = 0, 0, store.store_id
    for done, row in enumerate(trials.itertuples(), start=1):
        experiment = names.get(row.study_id, "steadytune") if pd.notna(row.study_id) else "steadytune"
        config, key, _ = store.trial_config(int(row.id))
        if not TRIAL_KEY.fullmatch(key):  # it goes into a search filter: a damaged store must not inject one
            raise StoreError(f"{store.label}: trial {int(row.id)} has a damaged trial key")
        found = client.get_experiment_by_name(experiment)
        earlier = [] if found is None else client.search_runs([found.experiment_id], f"tags.`{TRIAL_KEY_TAG}` = '{key}'")
        if any(run.data.tags.get(STORE_TAG) in (store_id, store.label) and run.data.tags.get(TRIAL_ID_TAG) == str(int(row.id))
               for run in earlier):
            skipped += 1
            on_trial(done, len(trials))
            continue
        identity = TrialIdentity(experiment, key, config)
        tracker = MlflowTracker(uri, identity, start_time_ms=int(row.started_at * 1000))
        client.set_tag(tracker.run_id, STORE_TAG, store_id)
        client.set_tag(tracker.run_id, TRIAL_ID_TAG, str(int(row.id)))
        mine = curves[curves["trial_id"] == row.id]
        end_ms = int((row.finished_at if pd.notna(row.finished_at) else row.started_at) * 1000)
        tracker.log([CurvePoint(int(c.step), float(c.epoch), c.split, c.metric, c.value) for c in mine.itertuples()
                     if pd.notna(c.value)], timestamp_ms=end_ms)
        tracker.finish(store.outcome(int(row.id)), end_time_ms=end_ms)
        pushed += 1
        on_trial(done, len(trials))
    return pushed, skipped
