"""The statistics behind the gradcam checks, against textbook values and scipy (SSIM: tests/core/test_similarity.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import auditkit.similarity
from auditkit_gradcam.statistics import (
    average_ranks,
    binomial_upper_tail,
    bootstrap_mean_interval,
    paired_sign_test,
    spearman_rows,
    ssim_rows,
)


def test_binomial_tail_and_sign_test_are_exact():
    for n in (1, 7, 30):
        for k in range(n + 1):
            assert binomial_upper_tail(k, n) == pytest.approx(stats.binom.sf(k - 1, n, 0.5), rel=1e-12)
    # McNemar's exact test on discordant pairs: 9 for the model, 1 for the baseline, 5 ties
    diffs = torch.tensor([1.0] * 9 + [-1.0] + [0.0] * 5)
    assert paired_sign_test(diffs) == pytest.approx(11 / 1024)
    assert paired_sign_test(torch.zeros(8)) == 1.0  # all tied: no evidence either way
    assert paired_sign_test(torch.tensor([-0.5, -0.1])) == 1.0


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    values = torch.tensor([0.0, 1.0] * 50, dtype=torch.float64)
    a = bootstrap_mean_interval(values, torch.Generator().manual_seed(1))
    b = bootstrap_mean_interval(values, torch.Generator().manual_seed(1))
    assert a == b
    low, high = a
    # the normal-theory 95% interval of a 0/1 mean of 0.5 over 100 values is 0.5 +- 0.098
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)
    assert bootstrap_mean_interval(torch.full((5,), 0.3), torch.Generator()) == pytest.approx((0.3, 0.3))


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([[0.0, 0.0, 2.0, 1.0, 0.0, 2.0], [3.0, 1.0, 2.0, 5.0, 4.0, 0.0]])
    expected = np.stack([stats.rankdata(row) for row in x.numpy()])
    assert average_ranks(x).numpy() == pytest.approx(expected)


def test_spearman_matches_scipy_on_relu_maps_with_many_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(4, 24, 24, generator=g))
    b = torch.relu(a + 0.8 * torch.randn(4, 24, 24, generator=g))
    b[3] = torch.relu(1.0 - a[3])  # inverted evidence: negative correlation
    ours = spearman_rows(a, b)
    for i in range(4):
        assert float(ours[i]) == pytest.approx(stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-6)
    assert float(ours[3]) < -0.5
    assert float(spearman_rows(a[:1], a[:1] * 3 + 1)) == pytest.approx(1.0)
    assert math.isnan(float(spearman_rows(a[:1], torch.zeros(1, 24, 24))))


def test_ssim_rows_is_the_shared_ssim():
    # SSIM's known answers on [B,H,W] maps, its window for maps under 11 px (which gave NaN
    # here before) and NaN under 5 px: tests/core/test_similarity.py
    assert ssim_rows is auditkit.similarity.ssim
    assert math.isnan(float(ssim_rows(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))[0]))
    assert float(ssim_rows(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))[0]) == 1.0
