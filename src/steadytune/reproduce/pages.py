"""The verdict table as CSV (every column), Markdown and an HTML page (with how each verdict is decided)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..reporting.report import Section, Table, model_note, render_html, render_markdown
from . import verdicts
from .claims import CLAIMS, ClaimData
from .claims.base import LEARNS_MARGIN
from .runner import LrChoice, Reproduction

TITLE = "steadytune reproduce: the papers' claims re-tested"


def _p(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3g}"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader scans: the claim, both figures, the effect with its interval per task and pooled, both
    tests' p raw and Holm-adjusted, and the verdict."""
    def effect(row: pd.Series) -> str:
        if pd.isna(row["effect"]):
            return "—"
        return f"{row['effect']:+.3f} [{row['ci low']:+.3f}, {row['ci high']:+.3f}]"

    def tests(row: pd.Series) -> str:
        if pd.isna(row["p holds"]):
            return "—"
        return (f"holds {_p(row['p holds'])} (Holm {_p(row['p holds (Holm)'])}); does not hold "
                f"{_p(row['p does not hold'])} (Holm {_p(row['p does not hold (Holm)'])})")

    verdict = table["verdict"] + table["runs per arm for 80% power"].map(
        lambda note: f" (runs per arm for 80% power: {note})" if note else "")
    return pd.DataFrame({"claim": table["claim"], "paper": table["paper"], "lr": table["setting"],
                         "paper's figure": table["paper's figure"], "ours": table["ours"],
                         "effect [95% CI]": table.apply(effect, axis=1), "per task [95% CI]": table["per task"],
                         "measures": table["effect measures"], "p raw (Holm)": table.apply(tests, axis=1),
                         "verdict": verdict})


def header(reproduction: Reproduction, choices: dict[str, LrChoice], store: Path, missing: int = 0) -> list[str]:
    facts = reproduction.facts
    lines = [f"Model: {reproduction.model} ({facts.describe()}); tasks: {', '.join(reproduction.tasks)}; scale: "
             f"{reproduction.scale.name} ({reproduction.scale.description}: {reproduction.scale.sizes()}).",
             f"Store: {store}. Generated {time.strftime('%Y-%m-%d %H:%M')}."]
    if missing:
        lines.append(f"Interim: the store lacks {missing} trial(s) of this design. An arm is read on a task only "
                     "once all its runs there have finished; the rows that need the others say so.")
    if "published" in reproduction.settings:
        lines.append("published: every recipe at the papers' lr of 2e-5 (chosen for BERT-large).")
    if "learning" in reproduction.settings:
        lines.append("learning: the smallest lr at which a 3-epoch Devlin run (WI 1, DO 1) beats the majority "
                     f"baseline by {LEARNS_MARGIN:g}, per task; a task where no candidate does gives no answer in this "
                     "setting: " + "; ".join(c.describe() for c in choices.values()))
    note = model_note([reproduction.model])
    if note:
        lines.append(note)
    return lines


def data_table(tasks: pd.DataFrame) -> Table:
    return Table(tasks, "Each task's dev set and majority baseline (the score of always predicting the most frequent "
                 "class): a run at or below it failed; a run learns when it beats it by "
                 f"{LEARNS_MARGIN:g}")


def arms_table(reproduction: Reproduction, data: dict[str, ClaimData]) -> Table:
    """Per arm: what it trains, its epochs and seeds, its lr per setting, and the runs it has per task."""
    rows = []
    for arm in reproduction.arms().values():
        seeds = getattr(reproduction.scale, arm.seeds_from)
        runs = []
        for setting, claim_data in data.items():
            if arm.name in claim_data.arms:
                counts = claim_data.arms[arm.name].trials.groupby("task").size()
                runs.append(f"{setting}: " + ", ".join(f"{task} {n}" for task, n in counts.items()))
        landscapes = (f"; landscapes on {reproduction.scale.landscape_examples} training and dev examples"
                      if arm.snapshots else "")
        rows.append({"arm": arm.name, "what": arm.description + landscapes,
                     "epochs": arm.overrides.get("epochs", reproduction.scale.epochs),
                     "seeds": (f"{reproduction.scale.grid_wi} WI x {reproduction.scale.grid_do} DO, crossed" if arm.grid
                               else f"{seeds} independent (WI, DO) pairs"),
                     "lr": "the from-scratch lr check's choice" if arm.own_lr else "the setting's",
                     "finished runs": "; ".join(runs) or "none"})
    return Table(pd.DataFrame(rows), "The arms: each claim reads the arms named beside it below")


def sections(table: pd.DataFrame, reproduction: Reproduction, data: dict[str, ClaimData],
             tasks: pd.DataFrame) -> list[Section]:
    # Each claim's row that names its test (a row with no answer has none), in the table's order.
    named = table.assign(named=table["test"].fillna("").astype(bool))
    claims = named.sort_values("named", ascending=False, kind="stable").drop_duplicates("key")
    claims = claims.set_index("key").loc[table["key"].drop_duplicates()].reset_index()
    claims["test"] = claims["test"].fillna("").replace("", "(no setting answered this row yet)")
    counts = table["verdict"].str.split(":").str[0].value_counts()
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    rules = claims.assign(arms=claims["key"].map(lambda key: ", ".join(CLAIMS[key].arms)))
    return [
        Section("Verdicts", [f"{len(table)} rows: {summary}.", Table(shown(table), "One row per claim and lr setting")]),
        Section("What was trained", [data_table(tasks), arms_table(reproduction, data)]),
        Section("How each verdict is decided", [
            *verdicts.RULES,
            f"The family of tests: {verdicts.FAMILY}.",
            "Effects are oriented so that a positive value agrees with the paper. Tasks are strata: each task's effect "
            "is shown, and two-arm comparisons pool the per-task effects with fixed weights n_A n_B / (n_A + n_B) "
            "(Mantel-Haenszel for failure rates), so that a task with higher scores cannot fake a difference between "
            "arms. The seeds are the units: arms draw independent (WI, DO) pairs, and statistics of the crossed grid "
            "resample WI and DO levels.",
            Table(rules[["claim", "arms", "effect measures", "test", "rule", "sesoi source"]],
                  "The arms, test and rule of each claim, fixed in the code before any run unless revised below"),
            *(f"Revised after data was seen, {key}: {CLAIMS[key].revised}." for key in claims["key"]
              if CLAIMS[key].revised)]),
    ]


def write(table: pd.DataFrame, reproduction: Reproduction, choices: dict[str, LrChoice], data: dict[str, ClaimData],
          tasks: pd.DataFrame, store: Path, out_dir: Path, missing: int = 0) -> list[Path]:
    """verdicts.csv, verdicts.md and verdicts.html in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines, blocks = header(reproduction, choices, store, missing), sections(table, reproduction, data, tasks)
    paths = [out_dir / "verdicts.csv", out_dir / "verdicts.md", out_dir / "verdicts.html"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(render_markdown(blocks, lines, out_dir, TITLE), encoding="utf-8")
    paths[2].write_text(render_html(blocks, lines, TITLE), encoding="utf-8")
    return paths
