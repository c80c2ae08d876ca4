"""The verdict table: every claim in every setting, two symmetric one-sided tests per row, Holm within a setting.

"holds" and "does not hold" are both tests at the same level under the same correction, so the table tilts
toward neither. The family is one lr setting: each setting is its own reproduction (its own lr, its own runs),
and a reader takes each table as a whole. The rates of both decisions are measured by simulation in
tests/test_reproduce_calibration.py.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis.compare import adjust_pvalues
from ..analysis.results import NotEnoughData
from .claims import Claim, ClaimData

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, UNANSWERED = "holds", "does not hold", "inconclusive at this N", "no answer"
ALPHA = 0.05
POWER = 0.8
FAMILY = "one lr setting: Holm's correction runs over the answered rows of that setting's table"
# Fixed before any data is read; each claim's thresholds are fields of its Claim. The page prints these.
RULES = (
    "holds: a one-sided test that the effect lies beyond the claim's null, in the paper's direction, p < 0.05 after "
    "Holm's correction within the setting (an equivalence claim: inside its margin by two one-sided tests).",
    "does not hold: a one-sided test that the effect lies below the smallest effect that would still be the paper's "
    "(SESOI), p < 0.05 after Holm's correction within the setting (an equivalence claim: outside its margin, the "
    "smaller of the two one-sided p doubled). When both tests reject, the effect is real but smaller than the "
    "paper's: the row says so and counts as does not hold.",
    "inconclusive at this N: neither test rejects; the row gives the runs per arm a one-sided test would need for "
    "80% power at the observed effect and at the paper's.",
    "no answer: the data cannot answer the row (an arm compared did not learn, no failed runs to compare, the model "
    "learns no task at any candidate lr); the reason is given in one line.",
)
COLUMNS = ["claim", "paper", "setting", "paper's figure", "ours", "per task", "test", "effect", "effect measures",
           "ci low", "ci high", "p holds", "p holds (Holm)", "p does not hold", "p does not hold (Holm)", "verdict",
           "runs per arm for 80% power", "rule", "sesoi source", "key"]


def test_pvalues(claim: Claim, estimate) -> tuple[float, float]:
    """(p of "holds", p of "does not hold"), each one-sided in a direction fixed by the claim, never by the data."""
    if claim.margin is not None:
        low, high = claim.margin
        inside = max(estimate.p_greater(low), estimate.p_less(high))
        outside = min(1.0, 2 * min(estimate.p_less(low), estimate.p_greater(high)))
        return inside, outside
    return estimate.p_greater(claim.null), estimate.p_less(claim.smallest)


def decide(claim: Claim, p_holds: float, p_not: float) -> str:
    if p_holds < ALPHA and p_not < ALPHA:
        return f"{DOES_NOT_HOLD}: the effect is real but smaller than the paper's ({claim.smallest:g})"
    if p_holds < ALPHA:
        return HOLDS
    if p_not < ALPHA:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def power_note(claim: Claim, estimate) -> str:
    """Runs per arm for 80% power of the "holds" test at the observed effect and at the paper's (normal
    approximation from this estimate's standard error)."""
    null = claim.margin[0] if claim.margin is not None else claim.null
    parts = []
    for label, effect in (("observed", estimate.effect), ("paper's", claim.paper_effect)):
        if effect is None:
            parts.append(f"{label}: the paper gives no figure")
            continue
        runs = estimate.runs_for_power(effect, null, POWER, ALPHA)
        parts.append(f"{label} {effect:+.3g}: " + (f"{runs}" if runs else "none suffice (not beyond the null)"))
    return "; ".join(parts)


def _per_task(estimate) -> str:
    return "; ".join(f"{t.task} {t.effect:+.3f} [{t.low:+.3f}, {t.high:+.3f}]" for t in estimate.per_task)


def verdict_table(claims: list[Claim], data: dict[str, ClaimData]) -> pd.DataFrame:
    """One row per claim and setting (in the order given), with both tests, Holm within the setting, the verdict."""
    rows = []
    for claim in claims:
        for setting, claim_data in data.items():
            row = {"claim": claim.text, "paper": claim.paper, "setting": setting, "paper's figure": claim.figure,
                   "effect measures": claim.effect, "rule": claim.rule(), "sesoi source": claim.smallest_source,
                   "key": claim.key, "ours": "", "per task": "", "test": "", "effect": math.nan, "ci low": math.nan,
                   "ci high": math.nan, "p holds": math.nan, "p does not hold": math.nan,
                   "runs per arm for 80% power": ""}
            try:
                evidence = claim.evaluate(claim_data)
            except NotEnoughData as err:
                rows.append({**row, "verdict": f"{UNANSWERED}: {err}"})
                continue
            estimate = evidence.estimate
            p_holds, p_not = test_pvalues(claim, estimate)
            row.update({"ours": evidence.ours, "test": evidence.test, "per task": _per_task(estimate),
                        "effect": estimate.effect, "ci low": estimate.low, "ci high": estimate.high})
            if not (np.isfinite(p_holds) and np.isfinite(p_not)):
                rows.append({**row, "verdict": f"{UNANSWERED}: the test is undefined on these runs (constant scores)"})
                continue
            rows.append({**row, "p holds": p_holds, "p does not hold": p_not, "verdict": "",
                         "runs per arm for 80% power": power_note(claim, estimate)})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if "(Holm)" not in c])
    table["verdict"] = table["verdict"].astype(object)
    table["runs per arm for 80% power"] = table["runs per arm for 80% power"].astype(object)
    table["p holds (Holm)"] = math.nan
    table["p does not hold (Holm)"] = math.nan
    by_key = {claim.key: claim for claim in claims}
    for _, index in table.groupby("setting", sort=False).groups.items():
        answered = [i for i in index if np.isfinite(table.loc[i, "p holds"])]
        if not answered:
            continue
        table.loc[answered, "p holds (Holm)"] = adjust_pvalues(table.loc[answered, "p holds"].to_numpy(), "holm")
        table.loc[answered, "p does not hold (Holm)"] = adjust_pvalues(
            table.loc[answered, "p does not hold"].to_numpy(), "holm")
        for i in answered:
            verdict = decide(by_key[table.loc[i, "key"]], table.loc[i, "p holds (Holm)"],
                             table.loc[i, "p does not hold (Holm)"])
            table.loc[i, "verdict"] = verdict
            if verdict != INCONCLUSIVE:
                table.loc[i, "runs per arm for 80% power"] = ""
    return table[COLUMNS]
