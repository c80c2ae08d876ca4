"""The verdict table as CSV (every column), Markdown and an HTML page (with how each verdict is decided)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..report import Section, Table, model_note, render_html, render_markdown
from . import verdicts
from .claims import CLAIMS
from .runner import LrChoice, Reproduction

TITLE = "steadytune reproduce: the papers' claims re-tested"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader scans: the claim, both figures, the effect with its interval, and the verdict."""
    def effect(row: pd.Series) -> str:
        if pd.isna(row["effect"]):
            return "—"
        return f"{row['effect']:+.3f} [{row['ci low']:+.3f}, {row['ci high']:+.3f}]"

    return pd.DataFrame({"claim": table["claim"], "paper": table["paper"], "lr": table["setting"],
                         "paper's figure": table["paper's figure"], "ours": table["ours"],
                         "effect [95% CI]": table.apply(effect, axis=1), "measures": table["effect measures"],
                         "p (Holm)": table["p holm"], "verdict": table["verdict"]})


def header(reproduction: Reproduction, choices: dict[str, LrChoice], store: Path) -> list[str]:
    lines = [f"Model: {reproduction.model}; tasks: {', '.join(reproduction.tasks)}; scale: {reproduction.scale.name} "
             f"({reproduction.scale.description}).",
             f"Store: {store}. Generated {time.strftime('%Y-%m-%d %H:%M')}."]
    if "published" in reproduction.settings:
        lines.append("published: every recipe at the papers' lr of 2e-5 (chosen for BERT-large).")
    if "learning" in reproduction.settings:
        lines.append("learning: the smallest lr at which a 3-epoch Devlin run (WI 1, DO 1) beats the majority "
                     "baseline by 0.05, per task: " + "; ".join(c.describe() for c in choices.values()))
    note = model_note([reproduction.model])
    if note:
        lines.append(note)
    return lines


def sections(table: pd.DataFrame) -> list[Section]:
    claims = table.drop_duplicates("key")
    counts = table["verdict"].str.split(":").str[0].value_counts()
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    return [
        Section("Verdicts", [f"{len(table)} rows: {summary}.", Table(shown(table), "One row per claim and lr setting")]),
        Section("How each verdict is decided", [
            *verdicts.RULES,
            "Effects are oriented so that a positive value agrees with the paper. Two-arm comparisons permute arm "
            "labels within each task and average the per-task effects, so that a task with higher scores cannot "
            "fake a difference between arms.",
            Table(claims[["claim", "effect measures", "test", "rule"]],
                  "The test and the rule of each claim, fixed in the code before any run unless revised below"),
            *(f"Revised after data was seen, {key}: {CLAIMS[key].revised}." for key in claims["key"]
              if CLAIMS[key].revised)]),
    ]


def write(table: pd.DataFrame, reproduction: Reproduction, choices: dict[str, LrChoice], store: Path,
          out_dir: Path) -> list[Path]:
    """verdicts.csv, verdicts.md and verdicts.html in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines, blocks = header(reproduction, choices, store), sections(table)
    paths = [out_dir / "verdicts.csv", out_dir / "verdicts.md", out_dir / "verdicts.html"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(render_markdown(blocks, lines, out_dir, TITLE), encoding="utf-8")
    paths[2].write_text(render_html(blocks, lines, TITLE), encoding="utf-8")
    return paths
