"""Targeted attacks on tied logits: the target class is never the true label (the least likely
class is chosen among the others, ties to the lowest index), and a targeted success needs the
prediction to become that target, so it never counts an image that was not misclassified."""
from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

import auditkit
from auditkit import AuditData, Outcome, Target, TensorSplit
from auditkit.attacks import LogitsModule
from auditkit_whitebox.attacks import AttackSpec, budget_label, least_likely_class, run_attack

EPS = 8 / 255


class OneLiveLogit(nn.Module):
    """Logits (0, 0, 0, 100 * (mean pixel - 0.5)): zero for all classes but the last. On images
    whose mean is exactly 0.5 every logit ties at 0, so the prediction is class 0, and the lowest
    logit is also class 0: an argmin target would be the label itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live = 100 * (x.mean(dim=(1, 2, 3)) - 0.5)
        zeros = torch.zeros_like(live)
        return torch.stack([zeros, zeros, zeros, live], dim=1)


def _tied_images(n: int = 8, size: int = 8) -> torch.Tensor:
    """Checkerboards of 0.25 and 0.75 with random phase: the mean is exactly 0.5 in float32."""
    board = (torch.arange(size).view(1, size) + torch.arange(size).view(size, 1)) % 2
    phases = torch.arange(n) % 2
    images = 0.25 + 0.5 * ((board[None] + phases[:, None, None]) % 2).float()
    return images[:, None].expand(n, 3, size, size).clone()


@pytest.fixture(scope="module")
def tied() -> AuditData:
    images = _tied_images()
    labels = torch.zeros(len(images), dtype=torch.long)
    return AuditData("tied logits", TensorSplit(images, labels), num_classes=4)


def test_the_logits_really_tie_and_argmin_would_pick_the_label(tied):
    logits = OneLiveLogit()(tied.eval.images)
    assert torch.equal(logits, torch.zeros_like(logits))
    assert logits.argmax(1).tolist() == logits.argmin(1).tolist() == [0] * len(logits)
    assert least_likely_class(logits, tied.eval.labels).tolist() == [1] * len(logits)


def test_targeted_success_is_zero_when_nothing_is_misclassified(tied):
    images, labels = tied.eval.images, tied.eval.labels
    model = OneLiveLogit()
    # what torchattacks does, run directly: untargeted FGSM raises the live logit (class 3 wins);
    # FGSM towards class 1, whose logit is constant, lowers the live logit, so the prediction
    # stays at the label 0; towards the label itself (the old argmin target) nothing changes either
    untargeted = model(torchattacks.FGSM(model, eps=EPS)(images, labels)).argmax(1)
    towards_1 = torchattacks.FGSM(model, eps=EPS)
    towards_1.set_mode_targeted_by_label(quiet=True)
    after = model(towards_1(images, torch.ones_like(labels))).argmax(1)
    assert untargeted.tolist() == [3] * len(images) and after.tolist() == [0] * len(images)

    result = auditkit.audit(
        model, tied, checks=["whitebox.fgsm"],
        settings={"whitebox.fgsm": {"linf_eps": [EPS], "l2_eps": [], "targeted": ["least_likely"]}},
    )["whitebox.fgsm"]
    assert result.outcome is Outcome.PASSED, result.traceback or result.message
    label = budget_label("linf", EPS)
    assert result.metrics["clean_acc"] == 1.0
    assert result.metrics[f"attack_success@{label}"] == 1.0
    # the targeted attack left every prediction at the label: no success at all (was 1.0 when
    # the least likely "target" was the label itself and an unchanged prediction counted)
    assert result.metrics[f"targeted_success_least_likely@{label}"] == 0.0


def test_a_target_equal_to_the_label_never_counts_as_success(tied):
    module = LogitsModule(Target(OneLiveLogit()))
    images, labels = tied.eval.images, tied.eval.labels
    out = run_attack(module, AttackSpec("fgsm", "linf"), images, labels, EPS, targets=labels)
    assert bool((out.logits.argmax(1) == labels).all())  # the prediction is the "target"...
    assert not bool(out.success.any())  # ...but nothing was misclassified
