"""The contract every registered check keeps (built-in or third-party): it leaves the user's
model exactly as found, and its results are deterministic for a seed."""
from __future__ import annotations

import math

import pytest
import torch

import auditkit
from auditkit.config import Config
from auditkit.data.loaders import load_data
from auditkit.main import registered_checks
from auditkit.plugin_manager import get_plugin_manager
from auditkit.testing.models import TinyFCNet, TinyGAPNet

CHECK_IDS = [cls.id for cls, _ in registered_checks(Config(), get_plugin_manager())]


@pytest.fixture(scope="module")
def shapes():
    return load_data("synthetic:shapes?n=8&size=32&classes=4&seed=1")


def _snapshot(model: torch.nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in model.named_modules()},
        {n: p.grad is None for n, p in model.named_parameters()},
    )


def _metrics(run):
    return {(r.check, r.model): {k: (None if math.isnan(v) else v) for k, v in r.metrics.items()} for r in run.results}


@pytest.mark.parametrize("check_id", CHECK_IDS)
@pytest.mark.parametrize("make_model", [TinyGAPNet, TinyFCNet], ids=["gap", "fc"])
def test_check_leaves_the_model_as_found_and_is_deterministic(check_id, make_model, shapes):
    torch.manual_seed(0)
    model = make_model(num_classes=4)
    model.train()  # the user's model in training mode must come back in training mode
    model.features[0].register_forward_hook(lambda *a: None)  # the user's own hook must survive
    before = _snapshot(model)

    first = auditkit.audit(model, shapes, checks=[check_id], seed=7, max_images=4)
    after = _snapshot(model)
    for key in before[0]:
        assert torch.equal(before[0][key], after[0][key]), f"{check_id} changed {key}"
    assert before[1:] == after[1:], f"{check_id} changed the model's mode, hooks, grads or requires_grad"

    second = auditkit.audit(model, shapes, checks=[check_id], seed=7, max_images=4)
    assert _metrics(first) == _metrics(second)
    assert all(r.outcome is not auditkit.Outcome.ERROR for r in first.results), [r.traceback for r in first.results]
