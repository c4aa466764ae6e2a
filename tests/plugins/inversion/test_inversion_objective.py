"""The inversion objective's terms behave as defined: TV_beta, the alpha-norm, the normalized
feature error, and their weighted sum."""
from __future__ import annotations

import math

import pytest
import torch

from auditkit_inversion.inversion import Objective, alpha_norm, feature_rel_err_sq, total_variation


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0, 3.0])
def test_tv_of_a_constant_image_is_zero(beta):
    x = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    tv = total_variation(x, beta)
    assert tv.tolist() == [0.0, 0.0]
    (grad,) = torch.autograd.grad(tv.sum(), x)
    assert torch.isfinite(grad).all()  # beta < 2 stays differentiable in flat regions


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_tv_of_a_horizontal_ramp_is_the_slope_to_the_beta_at_any_size(beta, size):
    # x[i, j] = a * j: every horizontal difference is a, every vertical one 0; TV is a mean,
    # so the answer does not depend on the image size
    a = 0.02
    x = (a * torch.arange(float(size))).expand(1, 3, size, size)
    assert total_variation(x, beta).item() == pytest.approx(a**beta, rel=1e-4)


def test_tv_of_a_checkerboard():
    # 0/1 checkerboard: both differences are +-1 everywhere, so (1 + 1)^(beta/2)
    i = torch.arange(6)
    board = ((i[:, None] + i[None, :]) % 2).float().expand(1, 1, 6, 6)
    assert total_variation(board, 2.0).item() == pytest.approx(2.0)
    assert total_variation(board, 1.0).item() == pytest.approx(math.sqrt(2.0), rel=1e-5)


def test_alpha_norm_is_centred_on_grey():
    assert alpha_norm(torch.full((1, 3, 4, 4), 0.5), 6.0).item() == 0.0
    assert alpha_norm(torch.zeros(1, 3, 4, 4), 6.0).item() == pytest.approx(0.5**6)
    assert alpha_norm(torch.ones(1, 3, 4, 4), 6.0).item() == pytest.approx(0.5**6)
    half = torch.cat([torch.full((1, 3, 2, 4), 0.9), torch.full((1, 3, 2, 4), 0.5)], dim=2)
    assert alpha_norm(half, 2.0).item() == pytest.approx(0.5 * 0.4**2)


def test_feature_error_is_relative_and_per_image():
    ref = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    assert feature_rel_err_sq(ref, ref).tolist() == [0.0, 0.0, 0.0]
    assert feature_rel_err_sq(2 * ref, ref).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert feature_rel_err_sq(torch.zeros_like(ref), ref).tolist() == pytest.approx([1.0, 1.0, 1.0])
    scaled = ref * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1)
    assert feature_rel_err_sq(1.5 * scaled, scaled).tolist() == pytest.approx([0.25, 0.25, 0.25])


def test_a_dead_layer_costs_nothing_when_matched():
    zero = torch.zeros(2, 4, 3, 3)
    assert feature_rel_err_sq(zero, zero).tolist() == [0.0, 0.0]
    assert (feature_rel_err_sq(torch.ones(2, 4, 3, 3), zero) > 1e6).all()


def test_objective_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 8, 8, generator=g)
    f, r = torch.randn(2, 10, generator=g), torch.randn(2, 10, generator=g)
    objective = Objective(lambda_tv=0.3, beta=2.0, lambda_alpha=0.7, alpha=6.0)
    expected = feature_rel_err_sq(f, r) + 0.3 * total_variation(x, 2.0) + 0.7 * alpha_norm(x, 6.0)
    assert torch.allclose(objective(x, f, r), expected)
    assert torch.allclose(Objective(0.0, 2.0, 0.0, 6.0)(x, f, r), feature_rel_err_sq(f, r))
