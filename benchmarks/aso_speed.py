"""Seconds per almost-stochastic-order test: deepsig 1.2.8 (the reference) vs steadytune, on the same data.

Both run 1,000 bootstrap iterations at dt = 0.005 with one job, on two arms of N(0.70, 0.03) scores with A
shifted by +0.02, at 5 and 25 runs per arm; each is timed as the median of --repeats calls. Also prints
both eps_min values (they differ only by bootstrap noise; tests/test_aso.py checks that). The last line is
machine-readable:

    aso_speedup_n5=R5 aso_speedup_n25=R25

Usage: python benchmarks/aso_speed.py [--repeats 5]   (deepsig is a dev dependency: make install has it)
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from deepsig import aso as deepsig_aso

from steadytune.analysis.aso import aso


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="calls timed per implementation (median)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # deepsig's deprecation notices
    rng = np.random.default_rng(0)
    speedups = {}
    print("runs  deepsig s  steadytune s  speedup  eps_min deepsig / steadytune")
    for runs in (5, 25):
        a, b = rng.normal(0.72, 0.03, runs), rng.normal(0.70, 0.03, runs)
        reference = median_seconds(lambda: deepsig_aso(a, b, seed=0, show_progress=False, num_jobs=1), args.repeats)
        ours = median_seconds(lambda: aso(a, b, seed=0), args.repeats)
        speedups[runs] = reference / ours
        eps = (deepsig_aso(a, b, seed=0, show_progress=False), aso(a, b, seed=0))
        print(f"{runs:>4}  {reference:9.3f}  {ours:12.4f}  {speedups[runs]:6.0f}x  {eps[0]:.4f} / {eps[1]:.4f}")
    print(f"aso_speedup_n5={speedups[5]:.0f} aso_speedup_n25={speedups[25]:.0f}")


if __name__ == "__main__":
    main()
