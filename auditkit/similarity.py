"""Structural similarity (SSIM) as a primitive shared by checks: one implementation, on
torchmetrics, with one policy for images smaller than the standard window."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Wang et al. 2004: an 11x11 Gaussian window with sigma 1.5 px, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# torchmetrics' SSIM convolves a stack of five statistics (x, y, x^2, y^2, xy) of every image;
# in float64 on the CPU the convolution unfolds its whole input into one buffer of about
# 5 * C * window^2 * H * W doubles. Past glibc's largest mmap threshold (32 MiB) that buffer is
# mapped, faulted in page by page and unmapped on every call: 16 maps at 64x64 took 0.20 s, 0.16 s
# of it system time, against 0.04 s in chunks of one map with the same values bit for bit
# (measured 2026-11-30 on a 2-core CPU, one thread). Images go in chunks whose buffer stays under this.
_CPU_UNFOLD_BYTES = 24 << 20
# A 3 px window (sigma 0.41) puts 91% of its weight on the centre pixel, about 1.5 effective
# pixels in 2-D: its "local variance" is no statistic and SSIM degenerates into a per-pixel
# luminance comparison. 5 px (sigma 0.68) averages about 5.6 pixels, 11 px about 28.
SSIM_MIN_WINDOW = 5


@dataclass(frozen=True)
class SsimWindow:
    """The Gaussian window SSIM uses for one image size: ``size`` x ``size`` pixels (odd),
    standard deviation ``sigma`` in pixels."""

    size: int
    sigma: float


def ssim_window(height: int, width: int) -> SsimWindow | None:
    """The window :func:`ssim` uses for ``height`` x ``width`` images, or None where it gives NaN.

    The standard 11 px window with sigma 1.5 px wherever it fits. When the smaller side is under
    11 px: the largest odd window that fits, k = that side (minus one if even), with sigma
    scaled in proportion, sigma = 1.5 * k / 11 (7 px -> 0.95, 5 px -> 0.68), so the window keeps
    its shape. Below ``SSIM_MIN_WINDOW`` (5 px) no window is meaningful: None.
    """
    side = min(int(height), int(width))
    if side >= SSIM_WINDOW:
        return SsimWindow(SSIM_WINDOW, SSIM_SIGMA)
    size = side if side % 2 else side - 1
    if size < SSIM_MIN_WINDOW:
        return None
    return SsimWindow(size, SSIM_SIGMA * size / SSIM_WINDOW)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of each image pair of ``a`` and ``b``, one value per image.

    SSIM (Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13(4), 2004): local means, variances and covariance under a
    normalized Gaussian window (population statistics, as in the paper), SSIM(i,j) =
    (2 mu_a mu_b + C1)(2 sigma_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = ``data_range``. The SSIM map comes from torchmetrics
    (``torchmetrics.functional.image.structural_similarity_index_measure``, gaussian kernel);
    it is averaged over the positions where the window lies entirely inside the image and over
    the channels, as the paper's reference MATLAB code and scikit-image
    (``gaussian_weights=True, use_sample_covariance=False``) do. torchmetrics' own per-image
    mean also counts the reflect-padded border since 1.5 (1.4 cropped it), so the valid region
    is taken here, from the full map, to give the same value under every version.

    The window follows :func:`ssim_window`: 11 px with sigma 1.5, or for images whose smaller side
    is under 11 px the largest odd window that fits with sigma = 1.5 * k / 11; images whose
    smaller side is under 5 px get NaN, not a value.

    Computed in float64 on the inputs' device, the batch at once: in float32 the variance,
    E[x^2] - mu^2, cancels (a low-contrast image around 0.9 scored 0.99975 against itself).
    On the CPU float64 convolution is slow, about 0.1 s per 224x224 channel on 2 cores; images
    go through it in chunks small enough for its unfolded buffer not to be mapped afresh on
    every call (the values are the same, bit for bit, as in one call).

    :param a: float [N,C,H,W] or [N,H,W] (maps), values in a range of width ``data_range``.
    :param b: float, same shape as ``a``.
    :param data_range: L, the width of the range the values can take (max - min possible):
        1.0 for images or maps in [0,1], 255.0 for 8-bit values.
    :returns: [N] on ``a``'s device, in ``a``'s dtype: values in [-1, 1], 1 for identical
        images, NaN where an image is too small (or holds NaN).
    :raises ValueError: shapes differ, are not 3-D or 4-D, or ``data_range`` is not positive.
    :raises TypeError: the inputs are not floating point.
    :raises ImportError: torchmetrics is not installed.
    """
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise ValueError(f"ssim needs two [N,C,H,W] or [N,H,W] tensors of one shape, got {list(a.shape)} and {list(b.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError(f"ssim needs floating-point images, got {a.dtype} and {b.dtype}")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError as exc:
        raise ImportError("auditkit.similarity.ssim needs torchmetrics: pip install 'torchmetrics>=1.4'") from exc
    n = a.shape[0]
    window = ssim_window(*a.shape[-2:])
    if window is None or n == 0:
        return torch.full((n,), math.nan, dtype=a.dtype, device=a.device)
    x = a.to(torch.float64)
    y = b.to(torch.float64)
    if x.ndim == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    r = window.size // 2
    chunk = n
    if x.device.type == "cpu":
        per_image = 5 * x[0].numel() * window.size**2 * x.element_size()
        chunk = max(1, _CPU_UNFOLD_BYTES // per_image)
    values = []
    for start in range(0, n, chunk):
        _, full = structural_similarity_index_measure(
            x[start : start + chunk], y[start : start + chunk], gaussian_kernel=True, sigma=window.sigma,
            kernel_size=window.size, data_range=float(data_range), k1=SSIM_K1, k2=SSIM_K2, reduction="none",
            return_full_image=True,
        )
        values.append(full[..., r:-r, r:-r].flatten(1).mean(1))
    return torch.cat(values).to(a.dtype)
