"""How much of an image survives a reconstruction: PSNR, batched in torch, per image, and SSIM
(Wang et al. 2004), the shared one from auditkit.similarity."""
from __future__ import annotations

import torch

from auditkit.toolkit import ssim

__all__ = ["psnr", "ssim"]

# Identical images have infinite PSNR; the MSE floor caps it at 100 dB so the mean stays finite.
_MSE_FLOOR = 1e-10


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, [B]: 10 log10(data_range^2 / MSE),
    the MSE over channels and pixels; capped at 100 dB for identical images (data_range 1)."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(_MSE_FLOOR * data_range**2)
    return (10.0 * torch.log10(data_range**2 / mse)).to(x.dtype)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two image batches [B,C,H,W] of the same shape, got {list(x.shape)} and {list(y.shape)}")
