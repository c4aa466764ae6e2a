"""Tests of the example plugin, run against an installed auditkit."""
from __future__ import annotations

import torch
from torch import nn

import auditkit
import auditkit_example
from auditkit import AuditData, TensorSplit


class Constant(nn.Module):
    """Always the same logits: confidence softmax([3, 0, 0, 0]) ~ 0.87 whatever the image."""

    def forward(self, x):
        return torch.tensor([[3.0, 0.0, 0.0, 0.0]]).expand(x.shape[0], 4)


def _data():
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return AuditData("toy", TensorSplit(images, torch.arange(8) % 4), num_classes=4)


def test_confidence_and_overconfidence_are_exact_for_a_constant_model():
    run = auditkit.audit(Constant(), _data(), checks=["example.confidence"], plugins=[auditkit_example], autoload=False)
    result = run["example.confidence"]
    expected = torch.softmax(torch.tensor([3.0, 0.0, 0.0, 0.0]), 0)[0].item()
    assert abs(result.metrics["mean_confidence"] - expected) < 1e-6
    assert abs(result.metrics["overconfidence"] - (expected - 0.25)) < 1e-6  # accuracy is 2/8
    assert result.outcome is auditkit.Outcome.FAILED  # 0.62 > the 0.5 threshold


def test_scorecard_section_lists_each_model():
    run = auditkit.audit(Constant(), _data(), checks=["example.confidence"], plugins=[auditkit_example], autoload=False)
    sections = auditkit_example.auditkit_scorecard_sections(run.results, None)
    assert sections[0]["title"] == "Confidence (example plugin)"
    assert "target" in sections[0]["html"] and "0.87" in sections[0]["html"]


def test_a_black_box_answering_probabilities_gives_the_same_numbers_as_its_white_box():
    """A black box answers probabilities, not logits: the check must not softmax them again."""
    model = Constant()

    def predict(images):  # the same model, seen only through its probabilities
        return torch.softmax(model(images), dim=1)

    white = auditkit.audit(model, _data(), checks=["example.confidence"], plugins=[auditkit_example], autoload=False)
    black = auditkit.audit(predict, _data(), checks=["example.confidence"], plugins=[auditkit_example], autoload=False)
    for name in ("mean_confidence", "overconfidence"):
        assert abs(black["example.confidence"].metrics[name] - white["example.confidence"].metrics[name]) < 1e-6
