"""Analysis of seed studies: pure functions on the trials and curves a store (or its export) holds.

results  -- loading, result selection, arms, per-trial scores at Dodge et al.'s three eval frequencies
expected -- expected validation performance E[max of n runs]
variance -- WI x DO grids, two-way ANOVA, per-seed means, seed transfer across tasks
failures -- failed runs and Mosbach et al.'s optimization vs generalization split
gradients -- vanishing lower-layer gradients and class collapse, from the training diagnostics
early    -- early-vs-final correlation and the early-stopping planner
aso      -- almost stochastic order, as deepsig computes it
compare  -- Table 1, Levene, permutation/bootstrap/ASO comparisons with multiple-comparison corrections, seeds needed
"""
from .aso import aso, violation_ratio
from .compare import (adjust_pvalues, bootstrap_diff_ci, compare_pairs, levene_by_task, permutation_test,
                      recipe_table, seeds_needed)
from .early import (EarlyStoppingPlan, early_final_correlation, plan_early_stopping, recommend, scores_at,
                    simulate_early_stopping)
from .expected import expected_max, expected_max_curves, expected_max_table, max_weights
from .failures import failed, failure_kind_counts, failure_kinds, failure_rates, training_losses
from .results import (FREQUENCIES, RESULT_STATUSES, AnalysisError, NotEnoughData, Results, arm_labels, build_results,
                      dev_trajectory, frequency_scores, load_frames, load_results)
from .variance import (anova_two_way, seed_extremes, seed_grid, seed_means, seed_spread, seed_transfer,
                       variance_components)

__all__ = [
    "FREQUENCIES", "RESULT_STATUSES", "AnalysisError", "EarlyStoppingPlan", "NotEnoughData", "Results",
    "adjust_pvalues", "anova_two_way", "arm_labels", "aso", "bootstrap_diff_ci", "build_results", "compare_pairs", "dev_trajectory",
    "early_final_correlation", "expected_max", "expected_max_curves", "expected_max_table", "failed",
    "failure_kind_counts", "failure_kinds", "failure_rates", "frequency_scores", "levene_by_task", "load_frames",
    "load_results", "max_weights", "permutation_test", "plan_early_stopping", "recipe_table", "recommend",
    "scores_at", "seed_extremes", "seed_grid", "seed_means", "seed_spread", "seed_transfer", "seeds_needed",
    "simulate_early_stopping", "training_losses", "variance_components", "violation_ratio",
]
