"""`steadytune study plan|run`: seed grids, resumable, in parallel, with Dodge's early stopping."""
from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..config import ConfigError
from ..storage.connections import is_postgres, shown_location
from ..storage.store import Store, store_folder_made
from ..studies.cluster import (
    DEFAULT_JOBS,
    DEFAULT_JOBS_FOLDER,
    EXECUTORS,
    JobArray,
    driver_command,
    sbatch_script,
    submit,
)
from ..studies.cluster import wait as wait_for_jobs
from ..studies.executors import Executor
from ..studies.runner import StudyEvents, StudyRunner, StudySummary
from ..studies.spec import PlannedTrial, StudySpec, check_inputs, expand, load_spec
from ..training.inputs import load_raw, resolve_task
from ..training.ordering import total_steps
from ..training.records import TrialOutcome, TrialStatus
from .common import (
    RECONNECT_MINUTES,
    STORE_HELP,
    ReconnectMinutes,
    console,
    err_console,
    escape,
    finite,
    fmt_metric,
    print_table,
    progress_bar,
    reports_user_errors,
    resolve_run_options,
    stop_bar,
    with_config_flags,
)

study_app = typer.Typer(no_args_is_help=True, help="Seed studies: WI x DO grids over tasks and recipes.")

SPEC_ARGUMENT = typer.Argument(help="YAML/TOML study spec: name, tasks, recipes, wi_seeds (e.g. '1-25'), do_seeds, "
                               "early_stop, and any trial option (model, glue_dir, max_train, ...).")
Spec = Annotated[Optional[Path], SPEC_ARGUMENT]
Name = Annotated[Optional[str], typer.Option(help="Study name (default: derived from the spec).", rich_help_panel="Study")]
Tasks = Annotated[Optional[str], typer.Option(help="Comma-separated tasks, e.g. rte,mrpc.", rich_help_panel="Study")]
Recipes = Annotated[Optional[str], typer.Option(help="Comma-separated recipes to compare.", rich_help_panel="Study")]
WiSeeds = Annotated[Optional[str], typer.Option(help="WI seeds: '1-25', '1,3,5' or '1-3,7' (ranges run upwards, no "
                                                "seed twice).", rich_help_panel="Study")]
DoSeeds = Annotated[Optional[str], typer.Option(help="DO seeds, written like --wi-seeds.", rich_help_panel="Study")]
AdapterSeeds = Annotated[Optional[str], typer.Option(help="Adapter seeds (with --adapter lora), written like --wi-seeds: "
                                                     "a third grid factor (default: each trial's WI seed).",
                                                     rich_help_panel="Study")]
EarlyStopOption = Annotated[Optional[str], typer.Option(
    help="Dodge et al.'s early stopping per task x recipe: start=T,fraction=F,keep=P (start T trials, train to "
    "fraction F, continue the top P).", rich_help_panel="Study")]


PolicyOption = Annotated[Optional[str], typer.Option(
    "--policy", help="full: every trial to the end. dodge: Dodge et al.'s cut (needs --early-stop; the default when "
    "it is given). replace: each trial to the forecaster's fraction; one it flags is stored as forecast-stopped and "
    "the next unused WI seed takes its place, so the study ends with the complete runs it asked for (at most 2 "
    "replacements per trial). dodge+replace: Dodge's cut at the forecaster's fraction, where a flagged trial is "
    "forecast-stopped and never continued.", rich_help_panel="Study")]
ForecasterOption = Annotated[Optional[str], typer.Option(
    "--forecaster", help="For --policy replace: 'online' (the default) fits the study's own forecaster on its "
    "complete runs and acts once it passes a self-check. For replace or dodge+replace: a forecaster file (`steadytune "
    "forecast fit`), or 'default' for the one that ships with steadytune (fit on real MiniLM-L6 trials at 20% of "
    "training).",
    rich_help_panel="Study")]
ThresholdOption = Annotated[Optional[float], typer.Option(
    "--forecast-threshold", parser=finite(), help="Flag a trial when P(failed) is at least this (default 0.5).",
    rich_help_panel="Study")]


def _spec(spec: Path | None, name, tasks, recipes, wi_seeds, do_seeds, adapter_seeds, early_stop,
          flags: dict[str, Any], policy=None, forecaster=None, forecast_threshold=None):
    study_values = dict(name=name, tasks=tasks, recipes=recipes, wi_seeds=wi_seeds, do_seeds=do_seeds,
                        adapter_seeds=adapter_seeds, early_stop=early_stop, policy=policy, forecaster=forecaster,
                        forecast_threshold=forecast_threshold)
    return load_spec(spec, {**flags, **study_values})


def seconds_per_step(store: Path | str | None, model: str) -> float | None:
    """Median s/step of finished trials of this model in the store, to estimate cost."""
    if store is None or (not is_postgres(store) and not Path(store).exists()):
        return None
    with Store(store, readonly=True) as db:
        trials = db.trials()
    done = trials[(trials.status == TrialStatus.COMPLETE) & (trials.model == model) & (trials.steps_done > 0)]
    return statistics.median(done.wall_seconds / done.steps_done) if len(done) else None


@study_app.command("plan")
@reports_user_errors
@with_config_flags
def plan(spec: Spec = None, name: Name = None, tasks: Tasks = None, recipes: Recipes = None, wi_seeds: WiSeeds = None,
         do_seeds: DoSeeds = None, adapter_seeds: AdapterSeeds = None, early_stop: EarlyStopOption = None,
         store: Annotated[Optional[str], typer.Option(help="Store (a file or a postgresql:// URL) whose finished "
                                                      "trials give the time per step.", rich_help_panel="Run")] = None,
         *, flags: dict[str, Any], run_flags: dict[str, Any]) -> None:
    """Print the trials a study would run and an estimate of its cost."""
    resolve_run_options(run_flags)  # a plan runs nothing, but a flag it was given must still be a valid one
    study = _spec(spec, name, tasks, recipes, wi_seeds, do_seeds, adapter_seeds, early_stop, flags)
    trials = expand(study)
    steps = {}
    for trial in trials:
        config = trial.config
        data_key = (config.task, config.max_train, config.batch_size, config.epochs, config.max_steps)
        if data_key not in steps:
            train, _ = load_raw(config, resolve_task(config))
            n = len(train) if config.max_train is None else min(config.max_train, len(train))
            steps[data_key] = total_steps(n, config.batch_size, config.epochs, config.max_steps)
    table = Table()
    for column in ("#", "task", "recipe", "wi", "do", "adapter", "dropout", "steps"):
        table.add_column(column, justify="right" if column not in ("task", "recipe") else "left")
    total = 0
    for index, trial in enumerate(trials, 1):
        c = trial.config
        n_steps = steps[(c.task, c.max_train, c.batch_size, c.epochs, c.max_steps)]
        total += n_steps
        table.add_row(str(index), c.task, c.recipe or "-", str(c.wi_seed), str(c.do_seed),
                      str(c.effective_adapter_seed) if c.adapter != "none" else "-", str(c.effective_dropout_seed),
                      str(n_steps))
    print_table(table, f"study {study.study_name()}: {len(trials)} trials")
    stop = study.early_stopping()
    units = len(trials) if stop is None else stop.cost() * (len(trials) / stop.start)
    share = units / len(trials)
    line = f"{total} training steps if every trial ran fully; cost {units:.2f} full-trial units"
    if stop is not None:
        line += f" with early stopping (T={stop.start}, F={stop.fraction}, P={stop.keep} per task x recipe)"
    seconds = seconds_per_step(store, trials[0].config.model)
    if seconds is not None:
        line += f"; about {total * share * seconds / 3600:.1f} h at {seconds:.2f} s/step (from {shown_location(store)})"
    console.print(line)


@study_app.command("run")
@reports_user_errors
@with_config_flags
def run(spec: Spec = None, name: Name = None, tasks: Tasks = None, recipes: Recipes = None, wi_seeds: WiSeeds = None,
        do_seeds: DoSeeds = None, adapter_seeds: AdapterSeeds = None, early_stop: EarlyStopOption = None,
        policy: PolicyOption = None, forecaster: ForecasterOption = None, forecast_threshold: ThresholdOption = None,
        store: Annotated[str, typer.Option(help=STORE_HELP, rich_help_panel="Run")] = "runs.db",
        reconnect_minutes: ReconnectMinutes = RECONNECT_MINUTES,
        workers: Annotated[int, typer.Option(min=1, help="Local worker processes; torch threads are split between "
                                             "them.", rich_help_panel="Run")] = 1,
        ray_address: Annotated[Optional[str], typer.Option(help="Run trials as Ray tasks on this cluster ('auto', "
                                                           "or host:port); the driver alone writes the store.",
                                                           rich_help_panel="Run")] = None,
        cpus_per_trial: Annotated[float, typer.Option(parser=finite(0.0), help="Ray resources per trial.", rich_help_panel="Run")] = 1.0,
        gpus_per_trial: Annotated[float, typer.Option(parser=finite(0.0), help="Ray resources per trial.", rich_help_panel="Run")] = 0.0,
        retries: Annotated[int, typer.Option(min=0, help="Times a trial whose worker process died (e.g. killed for "
                                             "memory) is run again on a fresh worker (on Ray: Ray's max_retries) "
                                             "before it is recorded as failed.", rich_help_panel="Run")] = 1,
        executor_kind: Annotated[str, typer.Option("--executor", help="local: this process runs the study. slurm: "
                                                   "submit --jobs cooperating drivers as one SLURM job array "
                                                   "(submitit), each running this command on the shared store. "
                                                   "submitit-local: the same array as processes on this machine.",
                                                   rich_help_panel="Cluster")] = "local",
        jobs: Annotated[int, typer.Option(min=1, help="Drivers in the job array.",
                                          rich_help_panel="Cluster")] = DEFAULT_JOBS,
        partition: Annotated[Optional[str], typer.Option(help="SLURM partition.", rich_help_panel="Cluster")] = None,
        time_min: Annotated[int, typer.Option(min=1, help="Time limit of each job, in minutes.",
                                              rich_help_panel="Cluster")] = JobArray.time_min,
        mem_gb: Annotated[float, typer.Option(parser=finite(0.1), help="Memory of each job.",
                                              rich_help_panel="Cluster")] = JobArray.mem_gb,
        cpus_per_job: Annotated[int, typer.Option(min=1, help="CPUs of each job.",
                                                  rich_help_panel="Cluster")] = JobArray.cpus_per_job,
        gpus_per_job: Annotated[int, typer.Option(min=0, help="GPUs of each job.",
                                                  rich_help_panel="Cluster")] = JobArray.gpus_per_job,
        array_parallelism: Annotated[Optional[int], typer.Option(min=1, help="At most this many jobs of the array "
                                                                 "run at once.", rich_help_panel="Cluster")] = None,
        jobs_folder: Annotated[Path, typer.Option(help="Folder of submitit's job files and logs.",
                                                  rich_help_panel="Cluster")] = DEFAULT_JOBS_FOLDER,
        wait: Annotated[bool, typer.Option("--wait", help="Stay until every job has ended, then summarize the "
                                           "study.", rich_help_panel="Cluster")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the sbatch script the array would submit and "
                                              "the command each job runs; submit nothing.",
                                              rich_help_panel="Cluster")] = False,
        *, flags: dict[str, Any], run_flags: dict[str, Any]) -> None:
    """Run a study; re-running the same command resumes it (finished trials are skipped).

    Several drivers may run one study on one store at once, on one machine or many (--executor slurm, with a
    PostgreSQL store): each trial is claimed before it runs, so they share the work, and a dead driver's trials
    are taken over when its claims expire. Ctrl-C stops the workers, keeps every recorded trial, and says how to
    resume.
    """
    study = _spec(spec, name, tasks, recipes, wi_seeds, do_seeds, adapter_seeds, early_stop, flags, policy, forecaster,
                  forecast_threshold)
    options = resolve_run_options(run_flags)
    executor = Executor(workers, ray_address, cpus_per_trial, gpus_per_trial, retries)
    check_inputs(expand(study))
    if executor_kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor_kind!r}")
    array = JobArray(executor_kind, jobs, jobs_folder, time_min, mem_gb, cpus_per_job, gpus_per_job, partition,
                     array_parallelism)
    if executor_kind != "local":
        _submit(array, store, study, wait, dry_run)
        return
    changed = array.changed() + (["--wait"] if wait else []) + (["--dry-run"] if dry_run else [])
    if changed:
        raise ConfigError(f"{changed[0]} applies to --executor slurm or submitit-local; this study runs here")
    if options.pack > 1:
        from ..packed.trial import pack_refusal, seeds_per_pass
        from ..training.trial import pick_device

        reason = pack_refusal([expand(study)[0].config], options)
        # Ray's workers decide their device, and so their passes.
        per_pass = None if ray_address else seeds_per_pass(pick_device(options.device), options.pack_pass)
        if reason:
            console.print(f"--pack {options.pack}: {reason}", soft_wrap=True)
        elif per_pass == 1 and options.pack_pass is None:
            console.print(f"--pack {options.pack}: on a CPU the seeds train one at a time, as separate trials (every "
                          "wider pass measured slower here); --pack-pass N batches N at once", soft_wrap=True)
        elif per_pass and options.pack > per_pass:
            console.print(f"--pack {options.pack}: the pack trains in passes of at most {per_pass} seeds, one after "
                          "another", soft_wrap=True)
    with Store(store_folder_made(store), reconnect_seconds=60 * reconnect_minutes) as db:
        runner = StudyRunner(study, db, options, executor)
        summary = _run_with_progress(runner)
    count = summary.count
    if summary.cancelled:
        console.print(f"study {summary.study} is cancelled (steadytune study cancel): no trial of it starts; "
                      f"`steadytune study cancel {summary.study} --undo` lets it run again", soft_wrap=True)
    forecast = count(TrialStatus.FORECAST_STOPPED)
    console.print(f"study {summary.study}: {count(TrialStatus.COMPLETE)} complete, {count(TrialStatus.STOPPED)} stopped"
                  f"{f', {forecast} forecast-stopped' if forecast else ''}, {count(TrialStatus.DIVERGED)} diverged, "
                  f"{count(TrialStatus.FAILED)} failed of {summary.trials}; ran {summary.ran} now, "
                  f"{summary.full_trials_spent:.2f} full-trial units of compute", soft_wrap=True)


def _submit(array: JobArray, store: str, study: StudySpec, wait: bool, dry_run: bool) -> None:
    array.check(store)
    if dry_run:
        console.print(sbatch_script(array), markup=False, highlight=False, soft_wrap=True)
        console.print("# each job runs: " + " ".join(shlex.quote(part) for part in driver_command(sys.argv[1:])),
                      markup=False, highlight=False, soft_wrap=True)
        return
    with Store(store_folder_made(store)) as db:  # the schema exists before the drivers start; a bad store fails here
        label = db.label
        db.share_password_with_workers()  # the jobs inherit it as PGPASSWORD; their command does not carry it
    jobs = submit(array, driver_command(sys.argv[1:]))
    console.print(f"submitted {len(jobs)} driver job(s) of study {study.study_name()} ({array.executor}, ids "
                  f"{', '.join(str(job.job_id) for job in jobs)}); follow with `steadytune runs {label}`; logs in "
                  f"{array.jobs_folder}", soft_wrap=True)
    if not wait:
        return
    states = wait_for_jobs(jobs)
    with Store(store, readonly=True) as db:
        trials = db.trials()
    mine = trials[trials["trial_key"].isin({t.config.trial_key() for t in expand(study)})]
    counts = mine.drop_duplicates("trial_key", keep="last")["status"].value_counts()
    console.print(f"jobs ended ({', '.join(f'{job_id} {state}' for job_id, state in states.items())}); study "
                  f"{study.study_name()}: " + ", ".join(f"{n} {status}" for status, n in counts.items()),
                  soft_wrap=True)


def _run_with_progress(runner: StudyRunner) -> StudySummary:
    counts = dict.fromkeys((TrialStatus.COMPLETE, TrialStatus.STOPPED, TrialStatus.DIVERGED, TrialStatus.FAILED), 0)
    best = {"value": None}
    bar = progress_bar("{task.fields[counts]}  best {task.fields[best]}")
    task_id = bar.add_task("study", total=None, counts="", best="-")

    def on_start(total: int) -> None:  # the bar appears once trials run, never over an error found before
        bar.start()

    def on_progress(done: int, total: int) -> None:  # the study's, whichever driver ran them
        bar.update(task_id, completed=done, total=total)

    def on_result(trial: PlannedTrial, outcome: TrialOutcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        score = outcome.best_metrics.get(outcome.metric)
        if score is not None and (best["value"] is None or score > best["value"]):
            best["value"] = score
        if outcome.status == TrialStatus.FAILED:
            err_console.print(f"[red]trial {escape(trial.config.task)} wi={trial.config.wi_seed} "
                              f"do={trial.config.do_seed} failed:[/] {escape(outcome.error)}", markup=True,
                              soft_wrap=True)
        bar.update(task_id, best=fmt_metric(best["value"]),
                   counts="this driver: " + " ".join(f"{k} {v}" for k, v in counts.items() if v))

    def on_resume(trial: PlannedTrial, step: int) -> None:
        err_console.print(f"trial {trial.config.task} wi={trial.config.wi_seed} do={trial.config.do_seed} continued "
                          f"from its saved state at step {step}", soft_wrap=True)

    def on_state_refused(trial: PlannedTrial, reason: str) -> None:
        err_console.print(f"[yellow]note:[/] trial {escape(trial.config.task)} wi={trial.config.wi_seed} "
                          f"do={trial.config.do_seed}: its saved state was refused ({escape(reason)}); it ran from the "
                          "start, which gives the same result", markup=True, soft_wrap=True)

    def on_note(line: str) -> None:
        err_console.print(line, soft_wrap=True, markup=False)

    def on_wait(count: int) -> None:
        bar.update(task_id, counts=" ".join(f"{k} {v}" for k, v in counts.items() if v)
                   + f"  waiting for {count} trial(s) another driver runs")

    try:
        return runner.run(StudyEvents(on_start=on_start, on_result=on_result, on_wait=on_wait, on_resume=on_resume,
                                      on_state_refused=on_state_refused, on_progress=on_progress,
                                      on_note=on_note))
    finally:
        stop_bar(bar)


@study_app.command("status")
@reports_user_errors
def status(store: Annotated[str, typer.Argument(help="Result store: a SQLite file, or a postgresql:// URL.")],
           study: Annotated[Optional[list[str]], typer.Option("--study", help="Only this study (repeatable).")] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Refresh in place every --every seconds until "
                                               "Ctrl-C.")] = False,
           every: Annotated[float, typer.Option(parser=finite(0.5), help="Seconds between refreshes with "
                                                "--watch.")] = 2.0) -> None:
    """Where each study stands: trials complete, running (where, for how long, at which step), queued, failed and
    forecast-stopped; the drivers alive; and an estimate of the time left. Read from the store, from any machine."""
    from rich.console import Group
    from rich.live import Live

    from ..studies.status import study_status

    with Store(store, readonly=True) as db:
        if not watch:
            for part in _status_parts(study_status(db, study), db.label):
                print_table(part) if isinstance(part, Table) else console.print(part, soft_wrap=True)
            return
        with Live(console=console, auto_refresh=False) as live:
            try:
                while True:
                    live.update(Group(*_status_parts(study_status(db, study), db.label)), refresh=True)
                    time.sleep(every)
            except KeyboardInterrupt:
                pass


def _status_parts(found: list, label: str) -> list:
    """Each study's status line, and a table of its running trials."""
    if not found:
        return [Text(f"{label}: no studies")]
    parts = []
    for s in found:
        counts = ", ".join(f"{s.count(status)} {status}" for status in (TrialStatus.COMPLETE, TrialStatus.FAILED,
                                                                      TrialStatus.DIVERGED, TrialStatus.STOPPED,
                                                                      TrialStatus.FORECAST_STOPPED)
                           if s.count(status) or status in (TrialStatus.COMPLETE, TrialStatus.FAILED))
        eta = "" if s.eta_seconds is None else f"; about {_duration(s.eta_seconds)} left"
        # Plain text: a study's name is the user's string (the console takes no markup).
        parts.append(Text(f"study {s.name}{' (cancelled)' if s.cancelled else ''}: {counts}, {len(s.running)} "
                          f"running, {s.queued} queued (of {s.planned} planned); {len(s.drivers)} driver(s) alive"
                          + (f": {', '.join(s.drivers)}" if s.drivers else "") + eta))
        parts += [Text(f"  note: {note}") for note in s.notes]
        if s.running:
            table = Table("trial", "key", "driver", "running", "lease renewed", "step", box=None, pad_edge=False)
            for trial in s.running:
                step = "-" if trial.step is None else f"{trial.step}/{trial.total_steps}"
                table.add_row(trial.trial or "-", trial.trial_key, trial.driver,
                              _duration(trial.running_for),
                              f"{trial.lease_age:.0f} s ago", step)
            parts.append(table)
    return parts


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@study_app.command("cancel")
@reports_user_errors
def cancel(name: Annotated[str, typer.Argument(help="The study's name (`steadytune studies STORE` lists them).")],
           store: Annotated[str, typer.Option(help=STORE_HELP)] = "runs.db",
           undo: Annotated[bool, typer.Option("--undo", help="Let the study run again.")] = False) -> None:
    """Stop every driver of a study, on every host, from starting another of its trials: running trials finish and
    are recorded, finished ones stay as they are. `--undo` lets it run again (`study run` resumes it)."""
    from ..studies.status import cancel as cancel_study

    with Store(store, create=is_postgres(store)) as db:  # a mistyped path must not create an empty store file
        cancel_study(db, name, undo)
        label = db.label
    console.print(f"study {name} of {label} " + ("may run again: `study run` resumes it" if undo else
                                                  "is cancelled: its drivers start no other trial (running ones "
                                                  "finish); `steadytune study cancel --undo` lets it run again"),
                  soft_wrap=True, markup=False)
