"""The statistics the Grad-CAM checks report (rates use auditkit.stats): bootstrap intervals for means, exact
paired tests against baselines, and the map similarities of the randomization test
(Spearman rank correlation with ties, SSIM)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def binomial_upper_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, then one division)."""
    if n < 0 or k > n:
        return 0.0 if k > n else math.nan
    k = max(k, 0)
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def paired_sign_test(differences: torch.Tensor) -> float:
    """One-sided exact sign test that paired ``differences`` [N] are more often positive than
    negative: P(X >= #positive) for X ~ Binomial(#non-zero, 1/2); zeros (ties) carry no
    information and are dropped. For 0/1 outcomes (hit minus baseline hit) this is the exact
    McNemar test on the discordant pairs. 1.0 when every pair is tied.
    """
    positive = int((differences > 0).sum())
    negative = int((differences < 0).sum())
    if positive + negative == 0:
        return 1.0
    return binomial_upper_tail(positive, positive + negative)


def bootstrap_mean_interval(
    values: torch.Tensor, generator: torch.Generator, confidence: float = 0.95, resamples: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` [N] (paired differences, per-image
    scores). Resampling runs on the values' device with indices drawn from ``generator`` (a CPU
    generator), so the interval is reproducible for a seed. Returns ``(nan, nan)`` for N == 0.
    """
    values = values.reshape(-1).double()
    n = values.numel()
    if n == 0:
        return math.nan, math.nan
    index = torch.randint(0, n, (resamples, n), generator=generator).to(values.device)
    means = values[index].mean(dim=1)
    tail = (1 - confidence) / 2
    bounds = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype, device=means.device))
    return float(bounds[0]), float(bounds[1])


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n) of each row of ``x`` [B,n], ties sharing the average of their ranks, as
    Spearman's correlation needs (a ReLU'd map has many tied zeros)."""
    b, n = x.shape
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = torch.cumsum(new_group.long(), dim=1) - 1  # group id within the row
    flat_group = (group + torch.arange(b, device=x.device)[:, None] * n).reshape(-1)
    positions = torch.arange(1, n + 1, device=x.device, dtype=torch.float64).expand(b, n).reshape(-1)
    first = torch.full((b * n,), math.inf, device=x.device, dtype=torch.float64)
    last = torch.full((b * n,), -math.inf, device=x.device, dtype=torch.float64)
    first = first.scatter_reduce(0, flat_group, positions, reduce="amin")
    last = last.scatter_reduce(0, flat_group, positions, reduce="amax")
    sorted_ranks = ((first + last) / 2)[flat_group].view(b, n)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair of ``a`` and ``b`` [B,...] (flattened),
    with average ranks for ties. NaN where either row is constant (no ordering to compare)."""
    ra = average_ranks(a.flatten(1))
    rb = average_ranks(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denom = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    corr = (ra * rb).sum(dim=1) / denom
    return torch.where(denom > 0, corr, torch.full_like(corr, math.nan)).float()


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def ssim_rows(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of each map pair of ``a`` and ``b`` [B,H,W].

    The standard parameters: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
    population (co)variances, averaged over the positions where the window fits inside the
    image (scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``). Maps smaller than the window give NaN.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim_rows needs two [B,H,W] tensors of one shape, got {list(a.shape)} and {list(b.shape)}")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        return torch.full((a.shape[0],), math.nan, device=a.device)
    half = SSIM_WINDOW // 2
    coords = torch.arange(SSIM_WINDOW, device=a.device, dtype=torch.float64) - half
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).view(1, 1, SSIM_WINDOW, SSIM_WINDOW)
    x = a.double().unsqueeze(1)
    y = b.double().unsqueeze(1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1).float()
