"""The verdict machinery's error rates, by simulation: interval coverage, "holds" under no effect, and "does not hold"
at a true effect equal to the claim's SESOI.

Runs are drawn as real ones look (the small-scale MiniLM-L6 store): on RTE a successful run scores about
N(0.60, 0.025) and a failed one sits at the majority baseline 0.527; on SST-2 N(0.80, 0.015) and 0.509. Each
scenario has two tasks (strata) and n runs per arm and task, optionally with a share of failed runs in each arm.
tests/test_reproduce_calibration.py asserts the rates; experiments/verdict_calibration.py prints them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .claims import CLAIMS
from .statistics import Estimate, risk_difference, spread_reduction, welch
from .verdicts import DOES_NOT_HOLD, HOLDS, decide, test_pvalues

SUCCESS = {"rte": (0.60, 0.025), "sst2": (0.80, 0.015)}
BASELINE = {"rte": 0.527, "sst2": 0.509}


@dataclass(frozen=True)
class Scenario:
    claim: str          # the claim whose rule decides (its null and SESOI)
    runs: int           # per arm and task
    fail_a: float       # share of failed runs in arm A (both tasks)
    fail_b: float
    at_sesoi: bool = False  # B's true effect over A equals the claim's SESOI (else no effect from the shift)

    def describe(self) -> str:
        where = "effect = SESOI" if self.at_sesoi else "no shift"
        return f"{self.claim}, n={self.runs}, failures A {self.fail_a:.0%} B {self.fail_b:.0%}, {where}"


@dataclass(frozen=True)
class Rates:
    """Shares of replications: the interval covers the true effect; the verdict is holds; it is does not hold."""

    coverage: float
    holds: float
    does_not_hold: float
    replications: int


def _runs(rng: np.random.Generator, task: str, n: int, fail: float, shift: float, narrower: float = 0.0) -> np.ndarray:
    mean, sd = SUCCESS[task]
    values = rng.normal(mean + shift, sd - narrower, n)
    failed = rng.random(n) < fail
    values[failed] = BASELINE[task] + rng.normal(0, 0.003, failed.sum())
    return values


def _true_mad(task: str, fail: float, shift: float, narrower: float = 0.0) -> float:
    sample = _runs(np.random.default_rng(12345), task, 400_000, fail, shift, narrower)
    return float(np.mean(np.abs(sample - np.median(sample))))


# A normal's mean absolute deviation from its median is sqrt(2 / pi) of its sd.
MAD_PER_SD = float(np.sqrt(2 / np.pi))


def _shift(scenario: Scenario) -> float:
    """The shift of B's successful runs that moves B's mean by the SESOI (a failed run stays at the baseline)."""
    if scenario.claim.endswith("spread"):
        return 0.0
    return CLAIMS[scenario.claim].smallest / (1 - scenario.fail_b) if scenario.at_sesoi else 0.0


def _narrower(scenario: Scenario) -> float:
    """How much smaller B's sd is, so that B's spread is the SESOI below A's (runs without failures)."""
    if scenario.claim.endswith("spread") and scenario.at_sesoi:
        return CLAIMS[scenario.claim].smallest / MAD_PER_SD
    return 0.0


def _failure_rate_b(scenario: Scenario) -> float:
    return scenario.fail_b + (CLAIMS[scenario.claim].smallest if scenario.at_sesoi else 0.0)


def true_effect(scenario: Scenario) -> float:
    tasks, shift = list(SUCCESS), _shift(scenario)
    if scenario.claim.endswith("failures"):
        return _failure_rate_b(scenario) - scenario.fail_a
    if scenario.claim.endswith("spread"):
        return float(np.mean([_true_mad(t, scenario.fail_a, 0.0) - _true_mad(t, scenario.fail_b, shift,
                                                                               _narrower(scenario)) for t in tasks]))
    return float(np.mean([(1 - scenario.fail_b) * (SUCCESS[t][0] + shift) + scenario.fail_b * BASELINE[t]
                          - (1 - scenario.fail_a) * SUCCESS[t][0] - scenario.fail_a * BASELINE[t] for t in tasks]))


def _draw(scenario: Scenario, rng: np.random.Generator) -> Estimate:
    n, tasks = scenario.runs, list(SUCCESS)
    if scenario.claim.endswith("failures"):
        rate_b = _failure_rate_b(scenario)
        return risk_difference([(task, int(rng.binomial(n, rate_b)), n, int(rng.binomial(n, scenario.fail_a)), n)
                                for task in tasks])
    values, in_b, strata = [], [], []
    for task in tasks:
        values += [_runs(rng, task, n, scenario.fail_a, 0.0),
                   _runs(rng, task, n, scenario.fail_b, _shift(scenario), _narrower(scenario))]
        in_b += [np.zeros(n, bool), np.ones(n, bool)]
        strata += [np.repeat(task, 2 * n)]
    stacked = np.concatenate(values), np.concatenate(in_b), np.concatenate(strata)
    return spread_reduction(*stacked) if scenario.claim.endswith("spread") else welch(*stacked)


def rates(scenario: Scenario, replications: int, seed: int = 0) -> Rates:
    """Coverage of the 95% interval, and how often each verdict is reached (one row: Holm changes nothing)."""
    claim, rng, truth = CLAIMS[scenario.claim], np.random.default_rng(seed), true_effect(scenario)
    covered = holds = does_not_hold = 0
    for _ in range(replications):
        estimate = _draw(scenario, rng)
        covered += estimate.low <= truth <= estimate.high
        verdict = decide(claim, *test_pvalues(claim, estimate))
        holds += verdict == HOLDS
        does_not_hold += verdict.startswith(DOES_NOT_HOLD)
    return Rates(covered / replications, holds / replications, does_not_hold / replications, replications)


# The scenarios the suite asserts: both arms shaped alike (with or without a 30% failure mixture), at no effect and
# at the SESOI (for the spread, without failures: a narrower B is only defined by its sd there). LIMITS are reported
# beside them: one arm fails 30% and the other never, where 5 runs often show no failure at all, so no interval built
# from them can see the difference (0.7^5 = 17% per task).
CHECKED = [Scenario(claim, n, fail, fail, at_sesoi) for claim in ("zhang-reinit-mean", "zhang-reinit-spread",
                                                                  "zhang-bertadam-failures")
           for n in (5, 10) for fail in (0.0, 0.3) for at_sesoi in (False, True)
           if not (claim.endswith("spread") and at_sesoi and fail) and not (claim.endswith("failures") and fail == 0.0)]
LIMITS = [Scenario(claim, n, 0.3, 0.0) for claim in ("zhang-reinit-mean", "zhang-reinit-spread") for n in (5, 10)]
