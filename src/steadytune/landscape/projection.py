"""Coordinates of checkpoints in a plane whose directions are not orthogonal (Hao et al.'s trajectories).

Cosine projection onto each direction is wrong when d1 and d2 are correlated; the least-squares
coordinates solve the 2 x 2 normal equations [d1.d1 d1.d2; d2.d1 d2.d2] c = [d1.x; d2.x] for x = theta - origin.
"""
from __future__ import annotations

import numpy as np

from .directions import Params, difference, dot, norm


def project(points: list[Params], origin: Params, d1: Params, d2: Params) -> np.ndarray:
    """Rows of (a, b, residual share): least-squares coordinates and the share of ||x|| off the plane."""
    gram = np.array([[dot(d1, d1), dot(d1, d2)], [dot(d2, d1), dot(d2, d2)]])
    rows = []
    for point in points:
        offset = difference(point, origin)
        a, b = np.linalg.solve(gram, [dot(d1, offset), dot(d2, offset)])
        residual = {n: offset[n] - a * d1[n] - b * d2[n] for n in offset}
        length = norm(offset)
        rows.append((a, b, norm(residual) / length if length else 0.0))
    return np.array(rows)
