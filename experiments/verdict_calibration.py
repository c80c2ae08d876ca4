"""Prints the verdict machinery's error rates by simulation (reproduce.calibration): the figures the suite asserts,
and the limits it reports. Usage: python experiments/verdict_calibration.py [replications]"""
from __future__ import annotations

import sys

from steadytune.reproduce.calibration import CHECKED, LIMITS, rates, true_effect


def main(replications: int) -> None:
    print(f"{'scenario':<78} {'truth':>8} {'cover':>6} {'holds':>6} {'not':>6}")
    for label, scenarios in (("checked", CHECKED), ("limit", LIMITS)):
        for scenario in scenarios:
            r = rates(scenario, replications)
            print(f"{label + ': ' + scenario.describe():<78} {true_effect(scenario):+8.4f} {r.coverage:6.3f} "
                  f"{r.holds:6.3f} {r.does_not_hold:6.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
