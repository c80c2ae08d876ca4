"""`steadytune reproduce`: the four papers' claims re-tested on one model, with a verdict per claim and lr setting."""
from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from ..config import ConfigError
from ..data.tasks import canonical_task_name
from ..reproduce.claims import CLAIMS
from ..reproduce.design import PUBLISHED_LR, SCALES, Scale, trial_keys
from ..reproduce.pages import write
from ..reproduce.runner import (
    SETTINGS,
    Progress,
    Reproduction,
    claim_data,
    finished_keys,
    learning_rates,
    lr_choices,
    missing_trials,
    plan_steps,
    run,
    task_facts,
    untrained_reasons,
)
from ..reproduce.verdicts import verdict_table
from ..storage.store import Store
from ..studies.executors import Executor
from ..studies.runner import StudyEvents
from .common import console, err_console, finite, print_table, progress_bar, reports_user_errors, resolve_run_options
from .study import seconds_per_step


def _positive(value: float, flag: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{flag}: must be a positive finite number, not {value!r}")
    return value


def scaled(scale: Scale, seeds: int | None, epochs: float | None, lr: str | None, max_train: int | None) -> Scale:
    """The scale with the command line's sizes in place of its own."""
    changes: dict = {}
    if seeds is not None:
        changes["arm_seeds"] = seeds
    if epochs is not None:
        changes["epochs"] = _positive(epochs, "--epochs")
    if lr is not None:
        try:
            candidates = tuple(sorted(_positive(float(v), "--lr") for v in lr.split(",") if v.strip()))
        except ValueError:
            raise ConfigError(f"--lr: expected comma-separated numbers such as 5e-5,1e-4; got {lr!r}") from None
        if not candidates:
            raise ConfigError("--lr: give one or more learning rates")
        changes["lr_candidates"] = candidates
    if max_train is not None:
        changes["max_train"] = max_train
    return dataclasses.replace(scale, **changes) if changes else scale


def _names(value: str, known, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"--{what}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def print_plan(reproduction: Reproduction, store: Path) -> None:
    """Trials and steps per arm (and how many the store still lacks), and the estimated CPU time of each claim."""
    with Store(store, readonly=True) if store.exists() else nullcontext() as db:
        lrs = learning_rates(db, reproduction)
        reasons = untrained_reasons(db, reproduction)
        finished = finished_keys(db)
    # Before an lr check has finished, its arms are counted at the published lr: same sizes. A finished check where
    # no candidate learned trains nothing for that task.
    planned = {setting: {task: lr or (None if task in reasons.get(setting, {}) and "not finished" not in
                                      reasons[setting][task] else PUBLISHED_LR) for task, lr in by_task.items()}
               for setting, by_task in lrs.items()}
    steps: dict[str, int] = {}
    table = Table()
    for column in ("lr setting", "task", "arm", "lr", "trials", "to train", "steps"):
        table.add_column(column, justify="left" if column in ("lr setting", "task", "arm") else "right")
    remaining, counted = 0, set()  # steps of the trials the store lacks, each trial key once
    for spec in reproduction.lr_checks():
        steps["lr check"] = steps.get("lr check", 0) + plan_steps(spec)
        remaining += plan_steps(spec, finished | counted)
        counted |= set(trial_keys(spec))
    for setting, task, arm, spec in reproduction.studies(planned):
        n = plan_steps(spec)
        steps[arm.name] = steps.get(arm.name, 0) + n
        keys = trial_keys(spec)
        remaining += plan_steps(spec, finished | counted)
        counted |= set(keys)
        table.add_row(setting, task, arm.name, f"{spec.config['lr']:g}", str(len(keys)),
                      str(sum(key not in finished for key in keys)), str(n))
    print_table(table, f"reproduce plan: scale {reproduction.scale.name}, {len(reproduction.claims)} claim(s), "
                       f"settings {', '.join(reproduction.settings)}")
    for setting, by_task in reasons.items():
        for task, reason in by_task.items():
            console.print(f"{setting}, {task}: {reason}")
    seconds = seconds_per_step(store, reproduction.model)
    unit = (f"at {seconds:.2f} s/step (median of this model's finished trials in {store})" if seconds
            else "(CPU time unknown until the store holds a finished trial of this model)")
    console.print(f"total {sum(steps.values())} training steps {unit}; {remaining} of them are for trials the "
                  f"store lacks" + (f" (about {remaining * seconds / 3600:.1f} CPU hours)" if seconds else ""))
    costs = Table()
    for column in ("claim", "arms", "steps", "CPU hours"):
        costs.add_column(column, justify="left" if column in ("claim", "arms") else "right")
    for key in reproduction.claims:
        arms = [a for a in CLAIMS[key].arms if a in steps]
        n = sum(steps[a] for a in arms) + steps.get("lr check", 0) * ("learning" in reproduction.settings)
        costs.add_row(key, ", ".join(arms), str(n), f"{n * seconds / 3600:.1f}" if seconds else "?")
    print_table(costs, "per claim (arms are shared: a claim's cost counts every arm it reads)")


@reports_user_errors
def reproduce(
    model: Annotated[str, typer.Option(help="Hugging Face hub id or local folder of the encoder.")] = "minilm-l6",
    tasks: Annotated[str, typer.Option(help="Comma-separated GLUE tasks; two or more for the seed-transfer claim.")]
    = "rte,mrpc",
    store: Annotated[Path, typer.Option(help="SQLite store of every run; re-running the command resumes it.")]
    = Path("runs/reproduce.db"),
    scale: Annotated[str, typer.Option(help="smoke: minutes, tiny subsets (a pipeline check); small: a few hours per "
                                       "task on a 2-core CPU (1,000 examples, 5 seeds per arm, a 5 x 3 grid); paper: "
                                       "the papers' sizes, for a GPU.")] = "small",
    claims: Annotated[Optional[str], typer.Option(help="Comma-separated claim keys (default: all): "
                                                  + ", ".join(CLAIMS) + ".")] = None,
    settings: Annotated[str, typer.Option(help="published: the papers' lr 2e-5; learning: per task, the smallest lr "
                                          "at which a 3-epoch Devlin run learns (a recorded lr check).")]
    = "published,learning",
    glue_dir: Annotated[Optional[Path], typer.Option(help="GLUE folder (RTE/train.tsv, ...).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for verdicts.csv, verdicts.md and verdicts.html.")]
    = Path("reproduce"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and its cost, run nothing.")] = False,
    no_train: Annotated[bool, typer.Option("--no-train", help="Write the table from what the store holds now; "
                                           "train nothing (unfinished arms give 'no answer' rows).")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads per worker.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    seeds: Annotated[Optional[int], typer.Option(min=2, help="Runs per arm (independent WI, DO seed pairs) instead of "
                                                 "the scale's.")] = None,
    epochs: Annotated[Optional[float], typer.Option(parser=finite(), help="Fine-tuning epochs of the 3-epoch arms and the lr check "
                                                    "instead of the scale's.")] = None,
    lr: Annotated[Optional[str], typer.Option(help="Comma-separated lr candidates of the learning setting's lr "
                                              "check, instead of those chosen by the model's size.")] = None,
    max_train: Annotated[Optional[int], typer.Option(min=1, help="Training examples per task instead of the "
                                                     "scale's.")] = None,
) -> None:
    """Re-test the claims of Dodge, Zhang, Mosbach and Hao on your model and tasks: plan, train (resumably),
    and write a verdict table (holds / does not hold / inconclusive at this N) with effects, 95% intervals and
    Holm-corrected p-values."""
    if scale not in SCALES:
        raise ConfigError(f"--scale: unknown {scale!r}; known: {', '.join(SCALES)}")
    common = {"glue_dir": str(glue_dir)} if glue_dir else {}
    task_names = [canonical_task_name(t) for t in tasks.split(",") if t.strip()]
    reproduction = Reproduction(model, task_names, scaled(SCALES[scale], seeds, epochs, lr, max_train),
                                _names(claims, CLAIMS, "claims") if claims else list(CLAIMS),
                                _names(settings, SETTINGS, "settings"), common)
    print_plan(reproduction, store)
    if dry_run:
        return
    options = resolve_run_options({"threads": threads, "device": device})
    if not no_train:
        store.parent.mkdir(parents=True, exist_ok=True)
        with Store(store) as db:
            _train(reproduction, db, options, Executor(workers))
    if not store.exists():
        raise ConfigError(f"{store}: no store yet; run without --no-train first")
    with Store(store, readonly=True) as db:
        choices, data, tasks = lr_choices(db, reproduction), claim_data(db, reproduction), task_facts(db, reproduction)
        missing = missing_trials(db, reproduction)
    table = verdict_table([CLAIMS[key] for key in reproduction.claims], data)
    shown = Table()
    for column in ("claim", "lr", "effect", "p holds (Holm)", "p does not hold (Holm)", "verdict"):
        shown.add_column(column)
    for _, row in table.iterrows():
        shown.add_row(row["key"], row["setting"], "-" if pd.isna(row["effect"]) else f"{row['effect']:+.3f}",
                      *("-" if pd.isna(row[c]) else f"{row[c]:.3g}" for c in ("p holds (Holm)",
                                                                              "p does not hold (Holm)")),
                      escape(row["verdict"]))
    print_table(shown, "verdicts")
    if missing:
        err_console.print(f"interim table: the store lacks {missing} trial(s) of this design")
    for path in write(table, reproduction, choices, data, tasks, store, out, missing):
        console.print(f"wrote {path}")


def _train(reproduction: Reproduction, db: Store, options, executor: Executor) -> None:
    bar = progress_bar("{task.fields[stage]}")
    task_id = bar.add_task("reproduce", total=None, stage="")
    events = StudyEvents(on_start=lambda total: bar.update(task_id, total=total, completed=0),
                         on_result=lambda trial, outcome: bar.update(task_id, advance=1))

    def stage(text: str) -> None:
        bar.update(task_id, description="reproduce", stage=text)
        err_console.print(text)

    with bar:
        run(reproduction, db, options, executor,
            Progress(on_stage=stage, events=events,
                     on_measure=lambda done, total: bar.update(task_id, completed=done, total=total)))
