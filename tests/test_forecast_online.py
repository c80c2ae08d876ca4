"""WIP (#39): the online forecaster's self-check, a decision whose error rates are measured by simulation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from steadytune.forecast.features import FEATURES
from steadytune.forecast.online import OnlineSettings, act_rate, binomial_margin, planned_looks, self_check, spread_order


def test_the_first_runs_spread_over_the_seeds():
    cells = [(wi, do) for wi in range(1, 6) for do in range(1, 6)]
    order = [cells[i] for i in spread_order(cells)]
    first = order[:5]
    assert len({wi for wi, _ in first}) == 5 and len({do for _, do in first}) == 5  # a diagonal
    assert sorted(order) == sorted(cells)


def test_the_check_acts_on_noise_rarely_and_on_a_planted_signal_mostly():
    settings = OnlineSettings()
    assert planned_looks(settings) == [10, 15, 20]
    replications = 60
    noise = act_rate(5, 0.35, 0.0, settings, replications, seed=1)
    assert noise <= settings.alpha + binomial_margin(settings.alpha, replications)  # its false acts, over all looks
    planted = act_rate(5, 0.35, 1.5, settings, replications, seed=2)
    assert planted >= 0.75  # 91% at 200 replications


def test_a_check_says_why_in_one_line():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(12, len(FEATURES))), columns=list(FEATURES))
    one_outcome = self_check(table, np.zeros(12, bool), np.repeat(np.arange(4), 3), OnlineSettings(), rng)
    assert not one_outcome.passed and "needs both outcomes" in one_outcome.reason
    table = pd.DataFrame(rng.normal(size=(15, len(FEATURES))), columns=list(FEATURES))
    failed = np.arange(15) % 3 == 0
    table.loc[failed, "dev_margin"] -= 4.0  # failed runs stand far below the others at the cut
    planted = self_check(table, failed, np.repeat(np.arange(5), 3), OnlineSettings(permutations=199), rng)
    assert planted.passed and planted.auc == 1.0 and "it acts" in planted.reason and "\n" not in planted.reason
