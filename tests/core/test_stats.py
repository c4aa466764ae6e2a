"""auditkit.stats: the Wilson score interval against published values, SciPy and the closed form."""
from __future__ import annotations

import math

import pytest
import scipy.stats

from auditkit.stats import wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        # Newcombe (1998), Table I: Wilson score intervals
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_interval_matches_newcombe_1998(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError, match="successes must lie in"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("k, n", [(0, 16), (16, 16), (8, 10), (3, 37), (500, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    expected = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected.low, abs=1e-9)
    assert hi == pytest.approx(expected.high, abs=1e-9)
    assert math.isnan(wilson_interval(0, 0)[0])


def test_wilson_intervals_match_the_closed_form():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.23659, abs=1e-5), pytest.approx(0.76341, abs=1e-5))
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.72247, abs=1e-5) and hi == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
