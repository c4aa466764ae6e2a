"""PSNR against known values; SSIM is auditkit.similarity's (tested in tests/core/test_similarity.py)."""
from __future__ import annotations

import pytest
import torch

import auditkit.similarity
from auditkit_inversion.fidelity import psnr, ssim


def test_ssim_is_the_shared_one():
    # SSIM's known answers, its window for small images and its dtypes: tests/core/test_similarity.py
    assert ssim is auditkit.similarity.ssim
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)


def test_psnr_known_values():
    g = torch.Generator().manual_seed(5)
    x = 0.9 * torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0])  # MSE = 0.01
    assert psnr(x, x + 0.01).tolist() == pytest.approx([40.0, 40.0])
    assert psnr(255 * x, 255 * (x + 0.1), data_range=255.0).tolist() == pytest.approx([20.0, 20.0])
    assert psnr(x, x).tolist() == pytest.approx([100.0, 100.0])  # capped, not inf
