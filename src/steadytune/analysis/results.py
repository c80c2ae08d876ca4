"""Loading trials and curves, and deriving one score per trial at each of Dodge et al.'s eval frequencies.

Which trials are results: `complete` ones, and `diverged` ones (they count as failed runs, scored with
their last dev values, or the majority baseline when they diverged before any evaluation). `running`
and `failed` rows (crashed or errored) are ignored. `stopped` trials were cut by live early stopping:
they have no final score and are a survivor-biased selection, so every analysis excludes them and the
report counts them in its header instead.

Trials are grouped by task and *arm*: the recipe name plus every configuration field that varies among
the trials of one task and recipe other than the seeds and evaluation/IO settings (e.g. `lr=3e-05`), so
a sweep never pools different settings into one seed distribution; such a field labels the recipe's
trials on every task, so one setting has one arm name across tasks. Data are told apart by their
identity (the hash of the examples a trial saw, recorded with it), not by file names: the same data in
another folder is one arm, other data under one name are two (`data=train.csv#1a2b3c`).

A trial key is one computation, so it counts once: when a store holds several results of one key (the
same config run by two processes, or by `train` and a study), the first is analysed and the others are
counted in the report's header.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage.connections import is_postgres, shown_location
from ..storage.store import Store, StoreError
from ..training.records import RESULT_STATUSES

# Dodge et al. evaluate once at the end, once per epoch, or many times per epoch; a trial's score at a
# frequency is its best dev score over those evaluation points.
FREQUENCIES: dict[str, str] = {
    "final": "final evaluation only",
    "epoch": "best of per-epoch evaluations",
    "all": "best of all evaluations",
}
# Config fields that never define an arm: seeds, evaluation and where data/models come from.
_NOT_ARM_FIELDS = {"task", "recipe", "wi_seed", "do_seed", "dropout_seed", "adapter_seed", "evals_per_epoch",
                   "eval_batch_size",
                   "glue_dir", "train_file", "dev_file", "init_from"}
_TABLE_SUFFIXES = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
_NEEDED_TRIAL_COLUMNS = {"id", "task", "recipe", "status", "wi_seed", "do_seed", "metric", "final_metric", "best_metric",
                         "baseline_metric", "total_steps"}
_NEEDED_CURVE_COLUMNS = {"trial_id", "step", "epoch", "split", "metric", "value"}
PREDICTION_COLUMNS = ["trial_id", "split", "point", "step", "example", "value"]


class AnalysisError(ValueError):
    """Input that cannot be analysed (wrong files, no results); the message is one line."""


class NotEnoughData(AnalysisError):
    """An analysis lacks what it needs (one task, no seed grid, too few runs); reports say so and go on."""


@dataclass(frozen=True)
class Results:
    """Result trials with their scores, their curves, and every trial row (for counts)."""

    trials: pd.DataFrame  # one row per result trial: trial columns + `arm` + one column per FREQUENCIES key
    curves: pd.DataFrame  # curve rows of the result trials only
    all_trials: pd.DataFrame  # every row of the source, any status
    duplicates: int = 0  # results left out because an earlier result has the same trial key
    # per-example predictions of the result trials (store.Store.predictions); empty when none were recorded
    predictions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PREDICTION_COLUMNS))

    def groups(self) -> list[tuple[tuple[str, str], pd.DataFrame]]:
        """(task, arm) and its trials, in a stable order."""
        return [(key, frame) for key, frame in self.trials.groupby(["task", "arm"], sort=True)]


def _read_table(path: Path) -> pd.DataFrame:
    reader = _TABLE_SUFFIXES.get(path.suffix.lower())
    if reader is None:
        raise AnalysisError(f"{path}: expected a .csv or .parquet export")
    if not path.is_file():
        raise AnalysisError(f"{path}: file does not exist")
    try:
        return reader(path)
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AnalysisError(f"{path}: cannot read ({reason})") from None


def is_export(source: Path | str) -> bool:
    """Whether a source is a `steadytune export` table rather than a store."""
    return not is_postgres(source) and Path(source).suffix.lower() in _TABLE_SUFFIXES


def load_frames(source: Path | str, curves: Path | None = None,
                studies: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Trials, curves and per-example predictions from a store file, or from a `steadytune export` set (trials
    file + curves file, and a predictions file if there is one). With `studies`, only the trials of the studies
    of those names (a store only: an export keeps no study names).

    For an export, `curves` defaults to the trials file's sibling with 'trials' replaced by 'curves', and the
    predictions are read from the sibling named with 'predictions' when it exists.
    """
    in_database = is_postgres(source)
    source = source if in_database else Path(source)
    if studies and is_export(source):
        raise AnalysisError(f"{source}: an export keeps no study names; choose studies in a store")
    if not is_export(source):
        if not in_database and not source.is_file():
            raise StoreError(f"{source}: store file does not exist")
        with Store(source, readonly=True) as store:
            trials, curve_frame, predictions = store.trials(), store.curves(), store.predictions()
            if studies:
                trials = _of_studies(trials, store.study_names(), studies, source)
                curve_frame = curve_frame[curve_frame["trial_id"].isin(trials["id"])].reset_index(drop=True)
                predictions = predictions[predictions["trial_id"].isin(trials["id"])].reset_index(drop=True)
    else:
        if curves is None:
            guess = source.with_name(source.name.replace("trials", "curves"))
            if guess == source or not guess.is_file():
                raise AnalysisError(f"{source}: a trials export needs its curves export too (--curves FILE)")
            curves = guess
        trials, curve_frame = _read_table(source), _read_table(Path(curves))
        sibling = source.with_name(source.name.replace("trials", "predictions"))
        predictions = (_read_table(sibling) if sibling != source and sibling.is_file()
                       else pd.DataFrame(columns=PREDICTION_COLUMNS))
    for frame, needed, what in ((trials, _NEEDED_TRIAL_COLUMNS, "trials"), (curve_frame, _NEEDED_CURVE_COLUMNS, "curves"),
                                (predictions, set(PREDICTION_COLUMNS), "predictions")):
        missing = needed - set(frame.columns)
        if missing:
            raise AnalysisError(f"{what} table lacks column(s) {', '.join(sorted(missing))}; "
                                f"is it a steadytune {what} export?")
    return trials, curve_frame, predictions


def _of_studies(trials: pd.DataFrame, names: dict[int, str], studies: Sequence[str], source) -> pd.DataFrame:
    unknown = sorted(set(studies) - set(names.values()))
    if unknown:
        known = ", ".join(sorted(names.values())) or "none"
        raise AnalysisError(f"{shown_location(source)} has no study {', '.join(unknown)} (its studies: {known})")
    return trials[trials["study_id"].map(names).isin(studies)].reset_index(drop=True)


def arm_labels(trials: pd.DataFrame) -> pd.Series:
    """Recipe name plus the config fields that vary within (task, recipe), e.g. 'mosbach2021 lr=1e-05', plus the
    data identity where the data differ beyond what those fields explain."""
    recipe = trials["recipe"].astype(object).where(trials["recipe"].notna(), "(no recipe)").astype(str)
    labels = recipe.copy()
    fields = [c for c in trials.columns if c.startswith("cfg.") and c[4:] not in _NOT_ARM_FIELDS]
    identity = trials["data_hash"] if "data_hash" in trials else pd.Series(None, index=trials.index, dtype=object)
    # A field names arms when it varies within some task of a recipe; it then labels that recipe's trials on every
    # task, so the same setting has the same arm name everywhere (seed transfer pairs arms across tasks).
    naming = {name: {c for _, group in by_recipe.groupby("task") for c in fields
                     if group[c].astype(str).nunique(dropna=False) > 1}
              for name, by_recipe in trials.groupby(recipe, sort=False)}
    for (_, name), group in trials.groupby([trials["task"], recipe], sort=False):
        varying = [c for c in fields if c in naming[name]]
        # _short, not astype(str): under pandas 3 astype(str) keeps NaN, a field set for some trials and not others
        settings = (group[varying].map(_short).agg("|".join, axis=1) if varying
                    else pd.Series("", index=group.index))
        data_varies = (identity[group.index].notna().any()
                       and identity[group.index].groupby(settings).nunique(dropna=False).max() > 1)
        for index, row in group.iterrows():
            labels.loc[index] += "".join(f" {c[4:]}={_short(row[c])}" for c in varying)
            if data_varies:
                labels.loc[index] += f" data={_data_name(row)}#{str(identity[index])[:6]}"
    return labels


def _data_name(row: pd.Series) -> str:
    train_file = row.get("cfg.train_file")
    return Path(str(train_file)).name if isinstance(train_file, str) and train_file else "glue"


def _short(value: object) -> str:
    """A config value for a label: integers without '.0', missing values as 'none'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def duplicate_results(trials: pd.DataFrame) -> int:
    """How many result rows repeat a trial key (and study-independent computation) recorded before them."""
    done = trials[trials["status"].isin(RESULT_STATUSES)]
    return int(done["trial_key"].duplicated().sum()) if "trial_key" in done else 0


def thread_mix(trials: pd.DataFrame) -> str | None:
    """A note when results of one task ran with different torch thread counts (they differ in the low bits)."""
    if "threads" not in trials:
        return None
    done = trials[trials["status"].isin(RESULT_STATUSES) & trials["threads"].notna()]
    mixed = {task: group["threads"].astype(int).value_counts().sort_index()
             for task, group in done.groupby("task") if group["threads"].nunique() > 1}
    if not mixed:
        return None
    parts = [f"{task}: " + ", ".join(f"{n} with {t}" for t, n in counts.items()) for task, counts in mixed.items()]
    return ("results ran with different torch thread counts (" + "; ".join(parts) + " threads); curves differ in "
            "the low bits between thread counts")


def dev_trajectory(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Every dev evaluation of each trial's primary metric: trial_id, step, epoch, fraction (of total steps), value."""
    primary = trials[["id", "metric", "total_steps"]].rename(columns={"id": "trial_id", "metric": "primary"})
    dev = curves[curves["split"] == "dev"].merge(primary, on="trial_id")
    dev = dev[dev["metric"] == dev["primary"]]
    dev = dev.assign(fraction=dev["step"] / dev["total_steps"])
    return dev[["trial_id", "step", "epoch", "fraction", "value"]].sort_values(["trial_id", "step"], ignore_index=True)


def frequency_scores(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial id, its dev score at each eval frequency (columns = FREQUENCIES keys).

    final = dev primary metric at the last evaluation; epoch = best over evaluations at integer epochs
    plus the last one; all = best over every dev evaluation. Trials without dev points fall back to the
    stored final/best metrics; a final score still missing (diverged before any evaluation, or an undefined
    metric such as the correlation of constant predictions) becomes the majority baseline: a failed run.
    """
    dev = dev_trajectory(trials, curves)
    by_trial = dev.groupby("trial_id")["value"]
    at_epoch = (dev["epoch"] - dev["epoch"].round()).abs() < 1e-9
    is_last = dev["step"] == dev.groupby("trial_id")["step"].transform("max")
    scores = pd.DataFrame({
        "final": dev[is_last].set_index("trial_id")["value"],  # NaN (e.g. pearson of constant output) stays NaN
        "epoch": dev[at_epoch | is_last].groupby("trial_id")["value"].max(),
        "all": by_trial.max(),
    }).reindex(trials["id"])
    stored = trials.set_index("id")
    fallback_final = stored["final_metric"].fillna(stored["baseline_metric"])
    scores["final"] = scores["final"].fillna(fallback_final)
    scores["all"] = scores["all"].fillna(stored["best_metric"]).fillna(scores["final"])
    scores["epoch"] = scores["epoch"].fillna(scores["final"])
    return scores


def build_results(trials: pd.DataFrame, curves: pd.DataFrame, predictions: pd.DataFrame | None = None) -> Results:
    """Select the result trials, label their arms and attach their scores (and their predictions, if given)."""
    done = trials[trials["status"].isin(RESULT_STATUSES)]
    duplicates = duplicate_results(trials)
    if duplicates:
        done = done[~done["trial_key"].duplicated()]
    done = done.reset_index(drop=True)
    if done.empty:
        counts = ", ".join(f"{s} {n}" for s, n in trials["status"].value_counts().items()) or "no trials at all"
        raise AnalysisError(f"no complete or diverged trials to analyse ({counts})")
    done = done.assign(arm=arm_labels(done))
    scores = frequency_scores(done, curves)
    done = done.join(scores, on="id")
    predictions = pd.DataFrame(columns=PREDICTION_COLUMNS) if predictions is None else predictions
    return Results(trials=done, curves=curves[curves["trial_id"].isin(done["id"])].reset_index(drop=True),
                   all_trials=trials, duplicates=duplicates,
                   predictions=predictions[predictions["trial_id"].isin(done["id"])].reset_index(drop=True))


def load_results(source: Path | str, curves: Path | None = None, studies: Sequence[str] = ()) -> Results:
    """`build_results` on a store file or an export set (with `studies`: those studies' trials only)."""
    return build_results(*load_frames(source, curves, studies))


def score_array(frame: pd.DataFrame, score: str) -> np.ndarray:
    """The finite values of one score column as a float array."""
    values = frame[score].to_numpy(dtype=float)
    return values[np.isfinite(values)]
