"""auditkit.testing.passes.PassCounter: images entering a model, with and without autograd."""
from __future__ import annotations

import copy

import pytest
import torch

from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import PassCounter, first_parameterized_module


def test_counts_forward_and_gradient_passes_and_those_of_deep_copies():
    model = TinyGAPNet(num_classes=3)
    x = torch.rand(5, 3, 16, 16)
    with PassCounter(model) as counter:
        with torch.no_grad():
            model(x)
        model(x[:2]).sum().backward()
        copy.deepcopy(model)(x[:3])  # randomization's copies carry the hook: still this counter
        assert counter.forward[None] == 5 and counter.gradient[None] == 2 + 3
    model(x)  # closed: no longer counted
    assert counter.gradient[None] == 5


def test_a_model_without_parameters_is_refused():
    with pytest.raises(ValueError, match="holds no parameters"):
        first_parameterized_module(torch.nn.Sequential(torch.nn.ReLU()))
