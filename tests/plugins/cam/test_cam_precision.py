"""cam.consistency's tolerance follows the precision the model computes in: a GAP model under
bfloat16 autocast is confirmed (its identities hold to bfloat16 rounding), a planted defect
still fails, and an error only rounding can explain is reported as precision, not structure."""
from __future__ import annotations

import pytest
import torch

from auditkit import Outcome
from auditkit.target import relative_tolerance
from cam_models import SignedGAPNet

BF16_TOL = max(1e-4, 4 * torch.finfo(torch.bfloat16).eps)  # 0.03125
F32_TOL = 1e-4  # max(1e-4, 4 * 1.2e-7)


class BFloat16GAPNet(SignedGAPNet):
    """The same GAP + linear model, run under CPU bfloat16 autocast inside forward."""

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x)


class BFloat16ScaledAfterPool(SignedGAPNet):
    """Under bfloat16 autocast, and the pooled features tripled: a structural defect."""

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.fc(self.pooled(x) * 3)


class SlightlyScaledLogits(SignedGAPNet):
    """Float32, with the pooled features' *values* scaled by (1 + delta) but not their gradient:
    a logit identity error of at most delta relative, which the test sets between the float32
    tolerance and ten times it."""

    delta = 0.0

    def forward(self, x):
        p = self.pooled(x)
        return self.fc(p + self.delta * p.detach())


def _make(cls):
    torch.manual_seed(0)
    return cls().eval()


def test_the_tolerance_is_the_shared_one():
    assert relative_tolerance(torch.bfloat16) == BF16_TOL
    assert relative_tolerance(torch.float32) == F32_TOL


def test_a_gap_model_under_bfloat16_autocast_is_confirmed(shapes64, audit_cam):
    result, run = audit_cam(_make(BFloat16GAPNet), shapes64)
    assert run.models[0]["gap_head"] is True
    assert result.outcome is Outcome.PASSED, result.message
    assert result.details["compute_dtype"] == "bfloat16"
    assert result.details["dtype_tolerance"] == BF16_TOL
    # bfloat16 rounding (eps 2^-7) of the features, the weights and the logits: measured
    # logit_rel_err 3.5e-3 and gradcam_rel_err 1.1e-3, far above float32's 1e-4, below 4 eps
    assert F32_TOL < result.metrics["logit_rel_err"] <= BF16_TOL
    assert result.metrics["gradcam_rel_err"] <= BF16_TOL
    assert "confirmed on 8 images" in result.message and "bfloat16 tolerance 0.031" in result.message
    # the same weights in float32 hold the identities to float32's tolerance
    result32, _ = audit_cam(_make(SignedGAPNet), shapes64)
    assert result32.outcome is Outcome.PASSED and result32.details["compute_dtype"] == "float32"
    assert result32.metrics["logit_rel_err"] < F32_TOL


def test_a_structural_defect_still_fails_under_bfloat16(shapes64, audit_cam):
    result, _ = audit_cam(_make(BFloat16ScaledAfterPool), shapes64)
    assert result.outcome is Outcome.FAILED
    assert result.metrics["logit_rel_err"] > 10 * BF16_TOL
    assert "logit identity logit_c = mean_ij CAM_c(i,j) + b_c broken" in result.message
    assert "10 x identity_rtol=0.03125, the bfloat16 tolerance: more than rounding explains" in result.message


def _slightly_scaled(images: torch.Tensor, target_rel_err: float) -> SlightlyScaledLogits:
    """A SlightlyScaledLogits whose largest relative logit error is ``target_rel_err``,
    computed by hand: |delta| |w_c . p| / (|w_c| . mean_ij |f| + |b_c|), maximized."""
    model = _make(SlightlyScaledLogits)
    with torch.no_grad():
        f = model.features(images).double()
        w, b = model.fc.weight.double(), model.fc.bias.double()
        ratio = ((f.mean(dim=(2, 3)) @ w.T).abs() / (f.abs().mean(dim=(2, 3)) @ w.abs().T + b.abs())).max()
    model.delta = float(target_rel_err / ratio)
    return model


def test_an_error_only_rounding_explains_is_precision_not_a_defect(shapes64, audit_cam):
    model = _slightly_scaled(shapes64.eval.images, 5e-4)  # between 1e-4 and 10 x 1e-4
    result, _ = audit_cam(model, shapes64)
    assert result.metrics["logit_rel_err"] == pytest.approx(5e-4, rel=1e-3)
    assert result.metrics["gradcam_rel_err"] < F32_TOL  # the gradient is untouched
    assert result.outcome is Outcome.PASSED, result.message
    assert result.details["precision_limited"] == ["logit"]
    err = f"{result.metrics['logit_rel_err']:.3g}"
    assert (
        f"the logit identity holds to float32 precision only (max relative error {err} > 0.0001, the float32 "
        "tolerance, but within 10x it: rounding, not a structural defect)"
    ) in result.message
    # a configured identity_rtol is a strict bar: the same error then fails
    strict, _ = audit_cam(model, shapes64, settings={"cam.consistency": {"identity_rtol": 1e-4}})
    assert strict.outcome is Outcome.FAILED
    assert f"max relative error {err} > identity_rtol=0.0001)" in strict.message


def test_beyond_ten_times_the_tolerance_is_a_structural_defect(shapes64, audit_cam):
    model = _slightly_scaled(shapes64.eval.images, 2e-3)
    result, _ = audit_cam(model, shapes64)
    assert result.outcome is Outcome.FAILED
    err = f"{result.metrics['logit_rel_err']:.3g}"
    assert f"max relative error {err} > 10 x identity_rtol=0.0001, the float32 tolerance" in result.message
    assert result.details["precision_limited"] == []


def test_relative_errors_are_measured_against_a_hand_computation(shapes64):
    # Guards the hand computation above with the model's own float64 pieces.
    images = shapes64.eval.images
    model = _slightly_scaled(images, 5e-4)
    with torch.no_grad():
        f = model.features(images).double()
        logits = model(images).double()
        w, b = model.fc.weight.double(), model.fc.bias.double()
    err = (logits - (f.mean(dim=(2, 3)) @ w.T + b)).abs()
    scale = f.abs().mean(dim=(2, 3)) @ w.abs().T + b.abs()
    assert float((err / scale).max()) == pytest.approx(5e-4, rel=1e-3)
