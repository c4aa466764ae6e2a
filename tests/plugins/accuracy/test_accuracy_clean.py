"""accuracy.clean: top-1 with its interval, against the best constant answer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import auditkit
from auditkit import AuditData, Outcome, TensorSplit
import auditkit_accuracy
from auditkit.toolkit import binomial_upper_tail


class Lookup(nn.Module):
    """Answers a fixed class per image, read from the image's first pixel (its index)."""

    def __init__(self, answers):
        super().__init__()
        self.register_buffer("answers", torch.as_tensor(answers))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        index = (x[:, 0, 0, 0] * 255).round().long()
        return nn.functional.one_hot(self.answers[index], 4).float() * 5 + self.dummy


def _data(labels):
    n = len(labels)
    images = torch.zeros(n, 3, 8, 8)
    images[:, 0, 0, 0] = torch.arange(n) / 255
    return AuditData("lookup", TensorSplit(images, torch.as_tensor(labels)), num_classes=4)


def _run(answers, labels):
    return auditkit.audit(Lookup(answers), _data(labels), checks=["accuracy.clean"], plugins=[auditkit_accuracy], autoload=False, verbose=-1)["accuracy.clean"]


def test_exact_binomial_tail_matches_known_values():
    assert binomial_upper_tail(5, 5, 0.5) == pytest.approx(0.5**5)
    assert binomial_upper_tail(0, 10, 0.3) == 1.0
    # P(X >= 10 | n=16, p=1/4), summed by hand
    from math import comb

    expected = sum(comb(16, k) * 0.25**k * 0.75 ** (16 - k) for k in range(10, 17))
    assert binomial_upper_tail(10, 16, 0.25) == pytest.approx(expected, rel=1e-12)


def test_a_model_at_chance_fails_and_one_well_above_passes():
    labels = [k % 4 for k in range(32)]
    right = _run(labels, labels)
    assert right.outcome is Outcome.PASSED and right.metrics["top1"] == 1.0
    assert right.metrics["chance"] == 0.25 and right.metrics["p_above_chance"] < 1e-12
    wrong = [(k + 1) % 4 for k in labels]
    at_chance = _run([labels[i] if i < 8 else wrong[i] for i in range(32)], labels)  # 8/32 = chance
    assert at_chance.outcome is Outcome.FAILED and at_chance.metrics["top1"] == 0.25


def test_chance_is_the_most_frequent_label_so_a_constant_majority_answer_never_passes():
    labels = [0] * 24 + [1, 2, 3] * 2 + [1, 2]  # 75% class 0
    result = _run([0] * 32, labels)
    assert result.metrics["top1"] == 0.75 == result.metrics["chance"]
    assert result.outcome is not Outcome.PASSED
    lo, hi = result.metrics["top1_ci_low"], result.metrics["top1_ci_high"]
    assert lo < 0.75 < hi
