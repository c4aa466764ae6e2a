"""Statistics shared by checks and the core: confidence intervals for rates measured on a
few dozen images."""
from __future__ import annotations

import math
from statistics import NormalDist


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate ``successes / n``.

    Unlike the normal approximation it stays inside [0, 1] and keeps close to its nominal
    coverage for small ``n`` and rates near 0 or 1, which is where audits on a few dozen images
    (and robust accuracies) live. Returns ``(nan, nan)`` for ``n == 0``.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high
