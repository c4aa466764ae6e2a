"""The contract every registered check keeps (built-in or third-party): it leaves the user's
model exactly as found, its results are deterministic for a seed, and it reports only the
metric names it declares (so a config threshold can be validated before the audit runs)."""
from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import pytest
import torch

import auditkit
from auditkit.config import Config
from auditkit.data.loaders import load_data
from auditkit.main import registered_checks
from auditkit.plugin_manager import get_plugin_manager
from auditkit.testing.models import TinyFCNet, TinyGAPNet

CHECK_CLASSES = {cls.id: cls for cls, _ in registered_checks(Config(), get_plugin_manager())}
CHECK_IDS = list(CHECK_CLASSES)
BUILT_IN_PLUGINS = {p.name for p in (Path(__file__).resolve().parents[2] / "plugins").iterdir() if p.is_dir()}


def _undeclared(names, declared):
    return sorted(n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in declared))


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

    check_cls = CHECK_CLASSES[check_id]
    declared = check_cls.reported_metrics(check_cls.Settings())
    if declared:  # a check that declares nothing (a third-party one) is not held to it
        for result in first.results:
            assert not _undeclared(result.metrics, declared), f"{check_id} reported undeclared metrics"


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_check_declares_its_headline_and_threshold_metrics(check_id):
    check_cls = CHECK_CLASSES[check_id]
    declared = check_cls.reported_metrics(check_cls.Settings())
    if check_cls.__module__.split(".")[0] in BUILT_IN_PLUGINS:
        assert declared, f"built-in check {check_id} declares no metrics"
    if not declared:
        return
    assert not _undeclared(check_cls.headline, declared), f"{check_id}: headline metrics it does not declare"
    assert not _undeclared([t.metric for t in check_cls.thresholds], declared), f"{check_id}: default thresholds on undeclared metrics"
    # reported_metrics may narrow the class-level declaration to the settings, never widen it
    assert not _undeclared(declared, check_cls.metrics), f"{check_id}: reported_metrics() outside its metrics"
