"""Target: input gradients come back contiguous whatever the model's memory format, reduced
precision models run and report their compute dtype, and gradient flow to the input is
tested, not inferred from error messages (issue #14, 4-6)."""
from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

import auditkit
from auditkit import Check, Findings, Outcome
from auditkit.session import _missing_reason
from auditkit.target import NO_INPUT_GRADIENT, Target, relative_tolerance
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.plugins import CheckPlugin


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _net(seed: int = 0) -> TinyGAPNet:
    torch.manual_seed(seed)
    return TinyGAPNet(num_classes=4)


class _AsModule(nn.Module):
    """A Target seen as an nn.Module, as torchattacks wants its model."""

    def __init__(self, target: Target):
        super().__init__()
        self.__dict__["target"] = target
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)  # torchattacks reads its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)


# -- memory format -----------------------------------------------------------------------------


def test_input_gradients_of_a_channels_last_model_are_contiguous(images):
    model = _net().to(memory_format=torch.channels_last)
    raw = images.clone().requires_grad_(True)
    (raw_grad,) = torch.autograd.grad(model.eval()(raw).sum(), raw)
    assert not raw_grad.is_contiguous()  # what third-party code used to receive

    target = Target(model)
    with target:
        target.probe(images)
        for x in (images.clone(), images.clone().to(memory_format=torch.channels_last)):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(target(x).sum(), x)
            assert grad.is_contiguous()
            torch.testing.assert_close(grad, raw_grad)


def test_torchattacks_run_on_a_channels_last_model(images):
    target = Target(_net().to(memory_format=torch.channels_last))
    labels = torch.arange(4)
    with target:
        target.probe(images)
        module = _AsModule(target)
        for attack in (torchattacks.PGDL2(module, eps=0.5, alpha=0.2, steps=2), torchattacks.FGSM(module, eps=0.03)):
            adversarial = attack(images, labels)
            assert adversarial.shape == images.shape and bool(torch.isfinite(adversarial).all())


def test_second_order_gradients_still_flow(images):
    target = Target(_net())
    with target:
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target(x).sum(), x, create_graph=True)
        (hessian_vector,) = torch.autograd.grad(grad.pow(2).sum(), x)
    assert hessian_vector.shape == images.shape


# -- precision ---------------------------------------------------------------------------------


def test_relative_tolerance_follows_the_dtype():
    assert relative_tolerance(torch.float32) == 1e-4
    assert relative_tolerance(torch.float64) == 1e-4
    assert relative_tolerance(torch.bfloat16) == 4 * 2.0**-7
    assert relative_tolerance(torch.float16) == 4 * 2.0**-10
    assert relative_tolerance(torch.float32, floor=1e-7) == 4 * torch.finfo(torch.float32).eps
    assert relative_tolerance(torch.bfloat16, floor=0.5) == 0.5


def test_an_ordinary_model_computes_in_float32(images):
    target = Target(_net())
    with target:
        target.probe(images)
    assert target.compute_dtype is torch.float32 and target.describe()["compute_dtype"] == "float32"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_reduced_precision_model_runs_and_returns_float32_logits(dtype, images):
    # CPU half convolutions exist in this torch; the model is really run in its own dtype.
    reference = _net().eval()
    model = _net().to(dtype)
    modes = {n: m.training for n, m in model.named_modules()}
    target = Target(model)
    with target:
        logits = target.probe(images)
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target(x).sum(), x)
    assert logits.dtype is torch.float32 and grad.dtype is torch.float32
    assert target.compute_dtype is dtype and target.input_gradient and target.gap_head is not None
    with torch.no_grad():
        expected = reference(images)
    torch.testing.assert_close(logits, expected, rtol=0, atol=50 * relative_tolerance(dtype) * expected.abs().max().item())
    assert all(p.dtype is dtype for p in model.parameters())  # the user's model keeps its dtype
    assert {n: m.training for n, m in model.named_modules()} == modes


class AutocastNet(TinyGAPNet):
    """Runs its forward under bfloat16 autocast, as mixed-precision inference code does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x)


def test_a_model_under_autocast_reports_bfloat16(images):
    torch.manual_seed(0)
    target = Target(AutocastNet(num_classes=4))
    with target:
        logits = target.probe(images)
    assert logits.dtype is torch.float32
    assert target.compute_dtype is torch.bfloat16 and target.describe()["compute_dtype"] == "bfloat16"
    assert relative_tolerance(target.compute_dtype) > 1.7e-3  # the error the issue saw fails no more


# -- gradient to the input ----------------------------------------------------------------------


class NoGradBackboneNet(TinyGAPNet):
    """Runs its backbone under torch.no_grad(): nothing reaches the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.features(x)
        return self.fc(self.flatten(self.pool(features)))


class DetachingNet(TinyGAPNet):
    """Detaches its input inside forward: the graph never reaches the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.detach())


class QuantizingNet(TinyGAPNet):
    """Rounds its input to 8 bits: a gradient reaches the input but is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.round(x * 255) / 255)


class NumpyNet(TinyGAPNet):
    """Leaves torch inside forward: autograd cannot follow (and refuses .numpy() on a graph)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.from_numpy(x.numpy()))


@pytest.mark.parametrize("cls", [NoGradBackboneNet, DetachingNet, NumpyNet])
def test_no_input_gradient_removes_the_white_box_capability(cls, images):
    torch.manual_seed(0)
    model = cls(num_classes=4).train()
    modes = {n: m.training for n, m in model.named_modules()}
    target = Target(model)
    with target:
        target.probe(images)
    assert target.input_gradient is False
    assert "white_box" not in target.capabilities and {"layers", "scores"} <= target.capabilities
    assert target.white_box is True  # what it is; what it can do is the capability
    assert target.describe()["input_gradient"] is False
    assert _missing_reason(["white_box"], target) == NO_INPUT_GRADIENT
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_a_zero_gradient_is_gradient_masking_for_the_white_box_checks_not_a_missing_gradient(images):
    torch.manual_seed(0)
    target = Target(QuantizingNet(num_classes=4))
    with target:
        target.probe(images)
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target(x).sum(), x)
    assert not grad.any()
    assert target.input_gradient is True and "white_box" in target.capabilities  # whitebox.masking flags it


def test_the_gradient_probe_leaves_the_model_untouched(images):
    model = _net().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    target = Target(model)
    with target:
        target.probe(images)
    assert target.input_gradient is True and "white_box" in target.capabilities
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN statistics too
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert model.training


def test_white_box_checks_are_skipped_with_one_reason(tiny_data):
    class NeedsGradients(Check):
        id = "test.needs_gradients"
        requires = ("white_box",)

        def run(self, ctx):
            return Findings(metrics={"value": 1.0})

    torch.manual_seed(0)
    run = auditkit.audit(NoGradBackboneNet(num_classes=4), tiny_data, plugins=[CheckPlugin(NeedsGradients)], autoload=False)
    result = run["test.needs_gradients"]
    assert result.outcome is Outcome.SKIPPED and result.message == NO_INPUT_GRADIENT
    gradients = auditkit.audit(_net(), tiny_data, plugins=[CheckPlugin(NeedsGradients)], autoload=False)
    assert gradients["test.needs_gradients"].outcome is Outcome.PASSED
