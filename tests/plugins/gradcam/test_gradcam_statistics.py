"""The statistics behind the gradcam checks, against textbook values and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

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


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    # scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=1), written out with scipy's filter.
    def blur(t):
        return ndimage.gaussian_filter(t, sigma=1.5, truncate=3.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_the_scikit_image_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 40, generator=g, dtype=torch.float64)
    b = (0.6 * a + 0.4 * torch.rand(3, 32, 40, generator=g, dtype=torch.float64)).clamp(0, 1)
    b[2] = 1 - a[2]
    ours = ssim_rows(a, b)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(_ssim_reference(a[i].numpy(), b[i].numpy()), abs=1e-6)
    assert ssim_rows(a, a).tolist() == pytest.approx([1.0] * 3)
    assert math.isnan(float(ssim_rows(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))[0]))
