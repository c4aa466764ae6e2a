"""cam.consistency on real architectures and on planted defects: the two CAM identities hold to
float32 rounding for GAP + linear heads, and break, with the right message, when a model only
looks like one."""
from __future__ import annotations

import auditkit_cam
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from auditkit_cam import CamConsistency, class_activation_maps, pool_input_pass
from cam_models import SignedGAPNet
from torch import nn

import auditkit
from auditkit import (
    AuditData,
    Check,
    Findings,
    Outcome,
    Target,
    TensorSplit,
    UsageError,
)
from auditkit.saliency import grad_cam, minmax_normalize, upsample
from auditkit.target import NO_INPUT_GRADIENT
from auditkit.testing.models import TinyFCNet, TinyGAPNet
from auditkit.testing.plugins import CheckPlugin

# The float32 tolerance the check uses by default (identity_rtol), asserted against here.
RTOL = 1e-4


def _calibrated(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set BatchNorm running statistics from ``images`` so activations are O(1).

    torchvision's GoogLeNet init (truncated normal, std 0.01) with default running stats
    shrinks activations to ~1e-12 by inception5b, where the logits are the bias alone and the
    identity would hold trivially. One training-mode pass with cumulative statistics fixes that.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4)


def _googlenet(images: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.googlenet(num_classes=4, init_weights=True, aux_logits=False)
    return _calibrated(model, images)


@pytest.mark.parametrize("arch", ["resnet18", "googlenet"])
def test_torchvision_gap_models_satisfy_both_identities(arch, shapes64, audit_cam):
    images = shapes64.eval.images
    model = _resnet18() if arch == "resnet18" else _googlenet(images)
    result, run = audit_cam(model, shapes64)
    assert run.models[0]["gap_head"] is True
    assert result.outcome is Outcome.PASSED, result.message
    m = result.metrics
    # Measured on CPU (8 images, 64 px): logit_rel_err 3.2e-8 (abs 1.1e-7) for resnet18 and
    # 3.5e-8 (abs 1.0e-7) for googlenet; the Grad-CAM identity is exact here (H*W = 4, so
    # w / (H*W) rounds exactly; see the next test for a feature map where it does not).
    assert 0 <= m["logit_rel_err"] < RTOL
    assert m["logit_max_abs_err"] < 1e-5
    assert m["gradcam_rel_err"] < RTOL
    assert m["cam_gradcam_corr"] == pytest.approx(1.0, abs=1e-9)
    assert -1 <= m["flip_corr"] <= 1
    assert m["n_images"] == 8 and m["n_localized"] == 8
    assert result.details["gap_head"]["pool"] == "avgpool" and result.details["gap_head"]["linear"] == "fc"
    assert "confirmed on 8 images" in result.message
    assert all(a.data.startswith(b"\x89PNG") for a in result.artifacts) and len(result.artifacts) == 4


def test_grad_cam_identity_holds_to_rounding_when_h_times_w_is_not_a_power_of_two(audit_cam):
    g = torch.Generator().manual_seed(0)
    data = AuditData("random", TensorSplit(torch.rand(6, 3, 20, 20, generator=g), torch.arange(6) % 4), num_classes=4)
    torch.manual_seed(0)
    result, _ = audit_cam(TinyGAPNet(num_classes=4), data)  # features 10 x 10
    assert result.outcome is Outcome.PASSED, result.message
    # measured: gradcam_rel_err 4.7e-8 (float32 rounding of w / 100), far inside the tolerance
    assert 0 < result.metrics["gradcam_rel_err"] < RTOL
    assert 0 < result.metrics["gradcam_max_abs_err"] < 1e-7


def test_googlenet_features_are_not_trivially_small_after_calibration(shapes64):
    # Guards the test above: the identity must be checked on features that reach the logits.
    images = shapes64.eval.images
    target = Target(_googlenet(images))
    with target:
        target.probe(images[:2])
        features = pool_input_pass(target, "avgpool", images).features
    weight = target.model.fc.weight.detach()
    cam_part = (features.mean(dim=(2, 3)) @ weight.T).abs().max()
    assert features.abs().mean() > 0.05
    assert cam_part > target.model.fc.bias.detach().abs().max()


@pytest.mark.parametrize("arch", ["resnet18", "googlenet"])
def test_grad_cam_at_the_pool_input_matches_peer_implementations(arch, shapes64):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images = shapes64.eval.images[:4]
    classes = shapes64.eval.labels[:4]
    model = _resnet18() if arch == "resnet18" else _googlenet(shapes64.eval.images)
    layer = "layer4" if arch == "resnet18" else "inception5b"
    target = Target(model)
    with target:
        target.probe(images[:2])
        ours = pool_input_pass(target, "avgpool", images, classes)
        shared, _ = grad_cam(target, images, classes, layer)
        cam = class_activation_maps(ours.features.double(), model.fc.weight.detach(), classes)
    h, w = ours.features.shape[-2:]
    # auditkit's own Grad-CAM primitive at the module producing the pool's input
    torch.testing.assert_close(ours.grad_cam, shared.double(), rtol=1e-5, atol=1e-7)
    # the identity, independently of the check: Grad-CAM = ReLU(CAM) / (h*w)
    torch.testing.assert_close(ours.grad_cam, F.relu(cam) / (h * w), rtol=1e-6, atol=1e-9)
    # pytorch-grad-cam normalizes each map to [0,1] and resizes it bilinearly to the input
    with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as peer:
        peer_maps = peer(images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    ours_scaled = minmax_normalize(upsample(F.relu(cam).float(), tuple(images.shape[-2:])))
    np.testing.assert_allclose(peer_maps, ours_scaled.numpy(), atol=1e-4)


class _NeedsGapHead(Check):
    """A check that only requires a GAP head: its skip message is the session's own."""

    id = "probe.needs_gap_head"
    requires = ("gap_head",)

    def run(self, ctx):
        return Findings()


def _session_reason(model, data) -> str:
    """Why the session skips a check that requires a GAP head on ``model``."""
    run = auditkit.audit(model, data, checks=[_NeedsGapHead.id], plugins=[CheckPlugin(_NeedsGapHead)], autoload=False)
    result = run[_NeedsGapHead.id]
    assert result.outcome is Outcome.SKIPPED
    return result.message


class _MLPHeadNet(TinyGAPNet):
    """Global average pooling, then two linear layers: CAM is undefined, yet nothing spatial is
    flattened into a fully connected layer."""

    def __init__(self):
        super().__init__(num_classes=4)
        self.hidden = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(F.relu(self.hidden(self.flatten(self.pool(self.features(x))))))


@pytest.mark.parametrize(
    "make",
    [lambda: torchvision.models.alexnet(num_classes=4), lambda: TinyFCNet(num_classes=4, input_size=64), _MLPHeadNet],
    ids=["alexnet", "tiny_fc", "gap_then_mlp"],
)
def test_models_without_a_gap_head_are_skipped_with_the_sessions_reason(make, shapes64, audit_cam):
    torch.manual_seed(0)
    model = make()
    result, run = audit_cam(model, shapes64)
    assert run.models[0]["gap_head"] is False
    assert result.outcome is Outcome.SKIPPED
    # the reason is the session's (from the target's detection), never one the check makes up
    assert result.message == _session_reason(model, shapes64)
    assert "flattened into the FC layers" not in result.message


def test_black_boxes_are_skipped_by_requirement(shapes64, audit_cam):
    model = TinyGAPNet(num_classes=4).eval()

    def predict(images):
        with torch.no_grad():
            return torch.softmax(model(images), 1)

    result, _ = audit_cam(predict, shapes64)
    assert result.outcome is Outcome.SKIPPED and "black box" in result.message


# -- planted defects: models the structural detector takes for GAP + linear ------------------


class ScaledAfterPool(SignedGAPNet):
    def forward(self, x):
        return self.fc(self.pooled(x) * 3)


class ReluAfterPool(SignedGAPNet):
    def forward(self, x):
        return self.fc(F.relu(self.pooled(x)))


class GradientScaledAfterPool(SignedGAPNet):
    """Same values as GAP + linear, but the gradient through the pooled vector is tripled
    (a straight-through-style trick): only the Grad-CAM identity can see it."""

    def forward(self, x):
        p = self.pooled(x)
        return self.fc(p + (2 * p - (2 * p).detach()))


class DetachedAfterPool(SignedGAPNet):
    """Same values, no gradient from the logits to the features at all."""

    def forward(self, x):
        return self.fc(self.pooled(x).detach())


class NoisyFeatures(SignedGAPNet):
    """A true GAP + linear head on features with fresh noise on every call: the identity holds
    within each forward pass, but no two passes agree."""

    def forward(self, x):
        f = self.features(x)
        return self.fc(self.flatten(self.pool(f + 0.1 * torch.randn_like(f))))


def _pieces(model: SignedGAPNet, images: torch.Tensor):
    """Features, pooled vector and the head's weights computed directly, in float64."""
    with torch.no_grad():
        f = model.features(images).double()
    return f, f.mean(dim=(2, 3)), model.fc.weight.detach().double()


def _make(cls):
    torch.manual_seed(0)
    return cls(num_classes=4).eval()


def test_the_signed_base_model_passes(shapes64, audit_cam):
    result, run = audit_cam(_make(SignedGAPNet), shapes64)
    assert run.models[0]["gap_head"] is True
    assert result.outcome is Outcome.PASSED, result.message
    assert result.metrics["logit_rel_err"] < RTOL and result.metrics["gradcam_rel_err"] < RTOL


def test_a_scale_after_pooling_breaks_the_logit_identity(shapes64, audit_cam):
    model = _make(ScaledAfterPool)
    result, run = audit_cam(model, shapes64)
    assert run.models[0]["gap_head"] is True  # the structural detector is fooled
    assert result.outcome is Outcome.FAILED
    _, p, w = _pieces(model, shapes64.eval.images)
    expected = (2 * p @ w.T).abs().max().item()  # 3 W p + b  versus  W p + b
    assert result.metrics["logit_max_abs_err"] == pytest.approx(expected, rel=1e-5)
    assert result.metrics["logit_rel_err"] > 0.1
    assert result.message.startswith(
        f"logit identity logit_c = mean_ij CAM_c(i,j) + b_c broken: max abs error {expected:.3g}"
    )
    assert "identity_rtol=0.0001" in result.message and "'pool' -> 'fc'" in result.message
    # the gradient is tripled too: Grad-CAM = 3 ReLU(CAM) / (H*W)
    assert "Grad-CAM identity Grad-CAM_c = ReLU(CAM_c) / (H*W) at the input of 'pool' broken" in result.message


def test_a_relu_after_pooling_breaks_both_identities(shapes64, audit_cam):
    model = _make(ReluAfterPool)
    result, _ = audit_cam(model, shapes64)
    assert result.outcome is Outcome.FAILED
    _, p, w = _pieces(model, shapes64.eval.images)
    assert bool((p < 0).any()) and bool((p > 0).any())  # the ReLU really acts
    expected = (p.clamp(max=0) @ w.T).abs().max().item()  # W relu(p) - W p = -W min(p, 0)
    assert result.metrics["logit_max_abs_err"] == pytest.approx(expected, rel=1e-5)
    assert f"logit identity logit_c = mean_ij CAM_c(i,j) + b_c broken: max abs error {expected:.3g}" in result.message
    assert "Grad-CAM identity" in result.message and result.metrics["gradcam_rel_err"] > RTOL


def test_a_gradient_only_defect_breaks_only_the_grad_cam_identity(shapes64, audit_cam):
    model = _make(GradientScaledAfterPool)
    result, _ = audit_cam(model, shapes64)
    assert result.outcome is Outcome.FAILED
    assert result.metrics["logit_rel_err"] < RTOL
    assert "logit identity" not in result.message
    f, _, w = _pieces(model, shapes64.eval.images)
    labels = shapes64.eval.labels
    cam = torch.einsum("bc,bchw->bhw", w[labels], f)
    expected = (2 * F.relu(cam) / (f.shape[-2] * f.shape[-1])).max().item()  # 3x - 1x
    assert result.metrics["gradcam_max_abs_err"] == pytest.approx(expected, rel=1e-5)
    assert result.message.startswith(
        "Grad-CAM identity Grad-CAM_c = ReLU(CAM_c) / (H*W) at the input of 'pool' broken: "
        f"max abs error {expected:.3g}"
    )
    assert result.metrics["cam_gradcam_corr"] == pytest.approx(1.0, abs=1e-9)  # a factor, not a shape change


NO_FEATURE_GRADIENT = "no gradient reaches the feature layer (the input of 'pool', the map CAM is built from)"


class NoGradBackbone(SignedGAPNet):
    """The backbone runs under torch.no_grad() inside forward, the head outside it."""

    def forward(self, x):
        with torch.no_grad():
            f = self.features(x)
        return self.fc(self.flatten(self.pool(f)))


class NoGradBackboneWithPrior(NoGradBackbone):
    """A frozen (no_grad) backbone beside a trainable colour prior that is zero at this
    initialization: gradients reach the input through the prior, none reach the features,
    and the logits are still exactly GAP + linear."""

    def __init__(self, num_classes: int = 4):
        super().__init__(num_classes)
        self.prior = nn.Linear(3, num_classes)
        with torch.no_grad():
            self.prior.weight.zero_()
            self.prior.bias.zero_()

    def forward(self, x):
        prior = self.prior(x.mean(dim=(2, 3)))
        return super().forward(x) + prior


@pytest.mark.parametrize("cls", [DetachedAfterPool, NoGradBackbone])
def test_no_gradient_to_the_features_is_a_skip_not_a_broken_identity(cls, shapes64, audit_cam):
    result, _ = audit_cam(_make(cls), shapes64)
    assert result.outcome is Outcome.SKIPPED
    # No gradient reaches the input either, so the session may skip first, with its one message.
    assert result.message == NO_INPUT_GRADIENT or result.message.startswith(NO_FEATURE_GRADIENT)


def test_a_gradient_that_reaches_the_input_but_not_the_features_is_named(shapes64, audit_cam):
    model = _make(NoGradBackboneWithPrior)
    x = shapes64.eval.images[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)  # the input does get a gradient (through the prior)
    assert grad is not None
    result, run = audit_cam(model, shapes64)
    assert run.models[0]["gap_head"] is True
    assert result.outcome is Outcome.SKIPPED
    assert result.message == (
        f"{NO_FEATURE_GRADIENT}: forward() detaches it or computes it under torch.no_grad(), so Grad-CAM and its "
        "identity with CAM are undefined for this model"
    )


def test_a_nondeterministic_forward_is_named_as_the_cause(shapes64, audit_cam):
    result, _ = audit_cam(_make(NoisyFeatures), shapes64)
    assert result.outcome is Outcome.FAILED
    assert "logit identity logit_c = mean_ij CAM_c(i,j) + b_c broken" in result.message
    assert "so the model's forward pass is not deterministic" in result.message


def test_frozen_parameters_still_give_grad_cam_and_stay_frozen(shapes64, audit_cam):
    torch.manual_seed(0)
    model = TinyGAPNet(num_classes=4)
    for p in model.parameters():
        p.requires_grad_(False)
    result, _ = audit_cam(model, shapes64)
    assert result.outcome is Outcome.PASSED, result.message
    assert result.metrics["cam_gradcam_corr"] == pytest.approx(1.0, abs=1e-9)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_settings_are_validated_and_configurable(shapes64, audit_cam):
    with pytest.raises(UsageError, match="identity_rtol must be a positive number, got -1"):
        audit_cam(_make(SignedGAPNet), shapes64, settings={"cam.consistency": {"identity_rtol": -1.0}})
    with pytest.raises(UsageError, match="cam_class must be one of label, predicted, got 'logit'"):
        audit_cam(_make(SignedGAPNet), shapes64, settings={"cam.consistency": {"cam_class": "logit"}})
    # a tolerance loose enough to accept the planted scale turns the failure into a pass
    result, _ = audit_cam(_make(ScaledAfterPool), shapes64, settings={"cam.consistency": {"identity_rtol": 10.0}})
    assert result.outcome is Outcome.PASSED
    assert result.details["identity_rtol"] == 10.0


def test_the_check_is_registered_through_its_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="auditkit") if ep.name == "cam"]
    plugin = ep.load()
    assert plugin is auditkit_cam
    assert plugin.auditkit_collect_checks(config=None) == [CamConsistency]
    assert CamConsistency.id == "cam.consistency"
    assert set(CamConsistency.headline) == {"logit_max_abs_err", "cam_gradcam_corr", "flip_corr"}
