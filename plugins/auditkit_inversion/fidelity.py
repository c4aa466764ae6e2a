"""How much of an image survives a reconstruction: PSNR and SSIM (Wang et al. 2004), batched
in torch, per image."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Wang et al. 2004: an 11x11 Gaussian window with sigma 1.5 and K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# Identical images have infinite PSNR; the MSE floor caps it at 100 dB so the mean stays finite.
_MSE_FLOOR = 1e-10


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, [B]: 10 log10(data_range^2 / MSE),
    the MSE over channels and pixels; capped at 100 dB for identical images (data_range 1)."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(_MSE_FLOOR * data_range**2)
    return (10.0 * torch.log10(data_range**2 / mse)).to(x.dtype)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """Mean structural similarity per image, [B] (Wang, Bovik, Sheikh & Simoncelli 2004).

    Local means, variances and covariance are weighted by a normalized Gaussian window
    (population statistics, as in the paper); SSIM(i,j) = (2 mu_x mu_y + C1)(2 sigma_xy + C2)
    / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)) with C1 = (k1 L)^2, C2 = (k2 L)^2
    and L = ``data_range``, averaged over the positions where the window fits entirely (the
    "valid" region, as scikit-image does by cropping its border) and over the channels.

    Images smaller than the window use the largest odd window that fits, with sigma scaled
    in proportion (11 px and 1.5 -> 7 px and 0.95), so small images still get a local measure.

    :param x: float [B,C,H,W].
    :param y: float [B,C,H,W], same shape.
    :returns: [B], 1 for identical images.
    """
    _check_pair(x, y)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    side = min(x.shape[-2:])
    if side < window:
        fitted = side if side % 2 else side - 1
        sigma = sigma * fitted / window
        window = fitted
    c = x.shape[1]
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    gh = g.view(1, 1, 1, window).expand(c, 1, 1, window)
    gv = g.view(1, 1, window, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two image batches [B,C,H,W] of the same shape, got {list(x.shape)} and {list(y.shape)}")
