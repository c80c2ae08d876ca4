"""The verdict table: every claim in every setting, with Holm's correction across the whole table (RULES)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis.compare import adjust_pvalues
from ..analysis.results import NotEnoughData
from .claims import Claim, ClaimData

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, UNANSWERED = "holds", "does not hold", "inconclusive at this N", "no answer"
ALPHA = 0.05
# Fixed before any data is read; each claim's thresholds are fields of its Claim. The page prints these.
RULES = (
    "holds: the effect lies in the claimed direction beyond the claim's null, one-sided p < 0.05 after Holm's "
    "correction across every answered row of the table (an equivalence claim: inside its margin by two one-sided "
    "tests, p < 0.05 after Holm).",
    "does not hold: otherwise, when the 95% interval lies wholly below the smallest effect that would still be the "
    "paper's (an equivalence claim: wholly outside its margin).",
    "inconclusive at this N: everything else.",
    "no answer: the data cannot answer the row (no failed runs to compare, one task only, or a comparison of scores "
    "where no run of the arms compared beats the majority baseline); the reason is given in one line.",
)
COLUMNS = ["claim", "paper", "setting", "paper's figure", "ours", "test", "effect", "effect measures", "ci low",
           "ci high", "p", "p holm", "verdict", "rule", "key"]


def _verdict(claim: Claim, low: float, high: float, p_holm: float) -> str:
    if p_holm < ALPHA:
        return HOLDS
    if claim.margin is not None:
        return DOES_NOT_HOLD if high < claim.margin[0] or low > claim.margin[1] else INCONCLUSIVE
    return DOES_NOT_HOLD if high < claim.smallest else INCONCLUSIVE


def verdict_table(claims: list[Claim], data: dict[str, ClaimData]) -> pd.DataFrame:
    """One row per claim and setting (in the order given), with the verdict."""
    rows = []
    for claim in claims:
        for setting, claim_data in data.items():
            row = {"claim": claim.text, "paper": claim.paper, "setting": setting, "paper's figure": claim.figure,
                   "effect measures": claim.effect, "rule": claim.rule(), "key": claim.key}
            try:
                evidence = claim.evaluate(claim_data)
            except NotEnoughData as err:
                rows.append({**row, "ours": "", "test": "", "effect": math.nan, "ci low": math.nan,
                             "ci high": math.nan, "p": math.nan, "verdict": f"{UNANSWERED}: {err}"})
                continue
            estimate = evidence.estimate
            if not np.isfinite(estimate.p):
                rows.append({**row, "ours": evidence.ours, "test": evidence.test, "effect": estimate.effect,
                             "ci low": estimate.low, "ci high": estimate.high, "p": math.nan,
                             "verdict": f"{UNANSWERED}: the test is undefined on these runs (constant scores)"})
                continue
            rows.append({**row, "ours": evidence.ours, "test": evidence.test, "effect": estimate.effect,
                         "ci low": estimate.low, "ci high": estimate.high, "p": estimate.p})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p holm"])
    table["verdict"] = table["verdict"].astype(object)
    answered = table["p"].notna()
    table["p holm"] = math.nan
    if answered.any():
        table.loc[answered, "p holm"] = adjust_pvalues(table.loc[answered, "p"].to_numpy(), "holm")
    by_key = {claim.key: claim for claim in claims}
    for index in table.index[answered]:
        row = table.loc[index]
        table.loc[index, "verdict"] = _verdict(by_key[row["key"]], row["ci low"], row["ci high"], row["p holm"])
    return table[COLUMNS]
