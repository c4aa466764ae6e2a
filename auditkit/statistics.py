"""Statistics of per-image scores shared by the checks: the exact paired sign test (McNemar's
on 0/1 outcomes), percentile bootstrap intervals for means, and Spearman's rank correlation
with ties, row by row. Binomial rates have their interval in :mod:`auditkit.stats`."""
from __future__ import annotations

import math

import torch


def binomial_upper_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the exact one-sided p-value of ``k`` successes in
    ``n`` trials against a success rate ``p``. For p = 1/2 in integer arithmetic, then one
    division; otherwise summed in log space in float64 (torch's Binomial log-probabilities)."""
    if n < 0 or k > n:
        return 0.0 if k > n else math.nan
    k = max(k, 0)
    if p == 0.5:
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    if k == 0 or p >= 1.0:
        return 1.0
    if p <= 0.0:
        return 0.0
    dist = torch.distributions.Binomial(total_count=n, probs=torch.tensor(p, dtype=torch.float64))
    tail = torch.logsumexp(dist.log_prob(torch.arange(k, n + 1, dtype=torch.float64)), dim=0).exp()
    return float(min(1.0, float(tail)))


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
    with average ranks for ties: float [B]. NaN where either row is constant (no ordering to
    compare)."""
    ra = average_ranks(a.flatten(1))
    rb = average_ranks(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denom = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    corr = (ra * rb).sum(dim=1) / denom
    return torch.where(denom > 0, corr, torch.full_like(corr, math.nan)).float()
