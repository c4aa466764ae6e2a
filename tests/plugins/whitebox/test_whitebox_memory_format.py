"""Memory layout never changes an attack: a channels_last model, and images in a permuted
(non-contiguous) layout, get the numbers the contiguous model and images get, and FGSM's numbers
are those of torchattacks run directly."""
from __future__ import annotations

import copy

import pytest
import torch
import torchattacks

import auditkit
from auditkit import AuditData, Outcome, Target, TensorSplit
from auditkit.attacks import LogitsModule
from auditkit_whitebox.attacks import AttackSpec, budget_label, perturb

LINF = [16 / 255, 24 / 255]
L2 = [1.0, 2.0]
SETTINGS = {
    "whitebox.fgsm": {"linf_eps": LINF, "l2_eps": L2, "targeted": ["least_likely"], "bisection_steps": 2},
    "whitebox.pgd": {"linf_eps": LINF, "l2_eps": L2, "targeted": ["least_likely"], "bisection_steps": 2, "steps": 8},
}


def _channels_last(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _permuted(data: AuditData) -> AuditData:
    """The same images stored as [N,H,W,3] and permuted back: NCHW shape, channels_last strides."""
    nhwc = data.eval.images.permute(0, 2, 3, 1).contiguous()
    images = nhwc.permute(0, 3, 1, 2)
    assert not images.is_contiguous() and torch.equal(images, data.eval.images)
    return AuditData("quadrants, permuted", TensorSplit(images, data.eval.labels), num_classes=4)


def _audit(model, data, check_id):
    result = auditkit.audit(model, data, checks=[check_id], seed=3, settings=SETTINGS)[check_id]
    assert result.outcome is Outcome.PASSED, result.traceback or result.message
    return result


def test_a_channels_last_model_really_returns_channels_last_input_gradients(quadrant_cnn, quadrants):
    """Guards the tests below: without a layout fix torchattacks' L2 .view would see these."""
    model = _channels_last(quadrant_cnn)
    x = quadrants.eval.images[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert not grad.is_contiguous() and grad.is_contiguous(memory_format=torch.channels_last)
    x = quadrants.eval.images[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(LogitsModule(Target(model))(x).sum(), x)
    assert grad.is_contiguous()


@pytest.mark.parametrize("check_id", ["whitebox.fgsm", "whitebox.pgd"])
def test_channels_last_models_and_permuted_images_get_the_same_numbers(check_id, quadrant_cnn, quadrants):
    reference = _audit(copy.deepcopy(quadrant_cnn), quadrants, check_id)
    for model, data in ((_channels_last(quadrant_cnn), quadrants), (copy.deepcopy(quadrant_cnn), _permuted(quadrants))):
        result = _audit(model, data, check_id)
        assert result.metrics.keys() == reference.metrics.keys()
        for name, value in reference.metrics.items():
            assert result.metrics[name] == pytest.approx(value, abs=1e-6), name
    # the numbers are not trivial: some but not all images fall at the larger budgets
    assert 0 < reference.metrics[f"robust_acc@{budget_label('linf', LINF[-1])}"] < 1
    assert 0 < reference.metrics[f"robust_acc@{budget_label('l2', L2[-1])}"] < 1


def test_fgsm_numbers_are_torchattacks_own(quadrant_cnn, quadrants):
    """FGSM (Linf) and the fast gradient method (one PGD-L2 step) run by torchattacks directly on
    the contiguous model and images, scored by hand."""
    model = copy.deepcopy(quadrant_cnn).eval()
    images, labels = quadrants.eval.images, quadrants.eval.labels
    with torch.no_grad():
        correct = model(images).argmax(1) == labels
    expected = {}
    for eps in LINF:
        adv = torchattacks.FGSM(model, eps=eps)(images, labels)
        with torch.no_grad():
            expected[budget_label("linf", eps)] = float(((model(adv).argmax(1) == labels) & correct).float().mean())
    for eps in L2:
        adv = torchattacks.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)(images, labels)
        with torch.no_grad():
            expected[budget_label("l2", eps)] = float(((model(adv).argmax(1) == labels) & correct).float().mean())
    for model_variant, data in ((_channels_last(quadrant_cnn), quadrants), (_channels_last(quadrant_cnn), _permuted(quadrants))):
        result = _audit(model_variant, data, "whitebox.fgsm")
        for label, value in expected.items():
            assert result.metrics[f"robust_acc@{label}"] == pytest.approx(value, abs=1e-9), label


@pytest.mark.parametrize("spec", [AttackSpec("fgsm", "l2"), AttackSpec("pgd", "l2", steps=2, random_start=True),
                                  AttackSpec("pgd", "linf", steps=2, random_start=True)], ids=lambda s: f"{s.method}-{s.norm}")
def test_perturb_takes_any_layout_and_returns_contiguous_images(spec, quadrant_cnn, quadrants):
    module = LogitsModule(Target(_channels_last(quadrant_cnn)))
    images = _permuted(quadrants).eval.images[:4]
    adv = perturb(module, spec, images, quadrants.eval.labels[:4], 1.0 if spec.norm == "l2" else 8 / 255)
    assert adv.is_contiguous() and adv.shape == images.shape
