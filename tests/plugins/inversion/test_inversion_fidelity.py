"""PSNR and SSIM against known values and against an independent SciPy implementation of
SSIM (Wang et al. 2004, computed the way scikit-image does with gaussian_weights=True,
use_sample_covariance=False); no maintained SSIM package is installed here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from auditkit_inversion.fidelity import psnr, ssim


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two [C,H,W] arrays: SciPy Gaussian filtering, border cropped by the window's radius."""
    radius = (window - 1) // 2
    truncate = radius / sigma  # scipy's radius is int(truncate * sigma + 0.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        def filt(img: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(img, sigma=sigma, truncate=truncate)

        ux, uy = filt(a), filt(b)
        vx, vy, vxy = filt(a * a) - ux * ux, filt(b * b) - uy * uy, filt(a * b) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        values.append(s[radius:-radius, radius:-radius].mean())
    return float(np.mean(values))


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 24, 24, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    noisy = (smooth + 0.1 * torch.randn(smooth.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return [(clean, smooth), (smooth, noisy), (clean, noisy), (clean, 1 - clean)]


def test_ssim_matches_an_independent_scipy_implementation(pairs):
    for x, y in pairs:
        ours = ssim(x, y).tolist()
        theirs = [reference_ssim(a.numpy(), b.numpy()) for a, b in zip(x, y)]
        assert ours == pytest.approx(theirs, abs=1e-10)


def test_ssim_in_float32_agrees_with_float64(pairs):
    x, y = pairs[1]
    assert ssim(x.float(), y.float()).tolist() == pytest.approx(ssim(x, y).tolist(), abs=1e-5)


def test_ssim_of_an_image_with_itself_is_one(pairs):
    x = pairs[0][0]
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


@pytest.mark.parametrize("a,b", [(0.2, 0.2), (0.2, 0.6), (0.0, 1.0), (0.9, 0.5)])
def test_ssim_of_constant_images_is_the_luminance_term(a, b):
    # sigma_x = sigma_y = sigma_xy = 0: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_ssim_is_symmetric_and_falls_with_noise(pairs):
    x, y = pairs[1]
    assert ssim(x, y).tolist() == pytest.approx(ssim(y, x).tolist(), abs=1e-12)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    scores = [ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 > scores[-1]


def test_ssim_on_images_smaller_than_the_window_uses_a_fitted_window():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    theirs = [reference_ssim(a.numpy(), b.numpy(), window=7, sigma=1.5 * 7 / 11) for a, b in zip(x, y)]
    assert ssim(x, y).tolist() == pytest.approx(theirs, abs=1e-10)


def test_ssim_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\[1, 3, 8, 8\] and \[1, 3, 8, 9\]"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_psnr_known_values():
    g = torch.Generator().manual_seed(5)
    x = 0.9 * torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0])  # MSE = 0.01
    assert psnr(x, x + 0.01).tolist() == pytest.approx([40.0, 40.0])
    assert psnr(255 * x, 255 * (x + 0.1), data_range=255.0).tolist() == pytest.approx([20.0, 20.0])
    assert psnr(x, x).tolist() == pytest.approx([100.0, 100.0])  # capped, not inf
