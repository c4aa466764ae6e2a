"""Target: normalization inside, outputs reduced to logits, capabilities, the model restored."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from auditkit.errors import TargetError
from auditkit.target import BlackBoxTarget, Target, reduce_to_logits
from auditkit.testing.models import DictOutputNet, TinyFCNet, TinyGAPNet, TupleOutputNet


def test_reduce_to_logits_handles_every_output_form():
    t = torch.randn(2, 3)
    assert reduce_to_logits(t) is t
    embedding = torch.zeros(2, 5)
    assert reduce_to_logits((embedding, t), num_classes=3) is t  # chosen by shape, never by position
    assert reduce_to_logits((t, embedding), num_classes=5) is embedding
    assert reduce_to_logits((t, torch.zeros(2, 5, 7, 7))) is t  # the only 2-D tensor
    with pytest.raises(TargetError, match=r"tensors \{0: \[2, 3\], 1: \[2, 5\]\}; expected logits \[batch, classes\]"):
        reduce_to_logits((t, embedding))  # two candidates and no number of classes to tell them apart
    assert reduce_to_logits({"logits": t, "features": torch.zeros(2)}) is t
    assert reduce_to_logits({"out": t}) is t
    assert reduce_to_logits(SimpleNamespace(logits=t, hidden_states=None)) is t
    with pytest.raises(TargetError, match="expected logits"):
        reduce_to_logits({"a": t, "b": t})
    with pytest.raises(TargetError, match="expected a logits tensor"):
        reduce_to_logits("nope")


@pytest.mark.parametrize("cls", [TupleOutputNet, DictOutputNet])
def test_tuple_and_dict_models_give_logits(cls):
    torch.manual_seed(0)
    target = Target(cls(num_classes=4))
    with target:
        logits = target.probe(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 4) and target.num_classes == 4


def test_normalization_happens_inside_the_target():
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    target = Target(model, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.rand(1, 3, 2, 2)
    with target:
        out = target.model(target.normalize(x))
    assert torch.allclose(out, ((x - 0.5) / 0.25).flatten(1))


@pytest.mark.parametrize(
    "name, gap, pool, between",
    [("resnet18", True, "avgpool", ()), ("googlenet", True, "avgpool", ("dropout",)), ("alexnet", False, None, None)],
)
def test_gap_head_detection_on_torchvision_models(name, gap, pool, between):
    kwargs = {"init_weights": True, "aux_logits": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=5, **kwargs)
    target = Target(model)
    with target:
        target.probe(torch.rand(1, 3, 64, 64))
    assert (target.gap_head is not None) is gap
    if gap:
        assert target.gap_head.pool == pool and target.gap_head.between == between
        assert target.gap_head.weight is model.fc.weight
        assert "gap_head" in target.capabilities


@pytest.mark.parametrize("after_pool", [nn.ReLU(), nn.Hardtanh(0, 2)])
def test_a_nonlinearity_between_pool_and_linear_is_not_a_gap_head(after_pool):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), after_pool, nn.Flatten(), nn.Linear(4, 3))
    target = Target(model)
    with target:
        target.probe(torch.rand(1, 3, 16, 16))
    assert target.gap_head is None


def test_tiny_models_heads():
    for cls, gap in ((TinyGAPNet, True), (TinyFCNet, False)):
        target = Target(cls(num_classes=4))
        with target:
            target.probe(torch.rand(2, 3, 32, 32))
        assert (target.gap_head is not None) is gap


def test_restore_puts_training_flags_back_and_capture_removes_hooks():
    model = TinyGAPNet(num_classes=4).train()
    model.features[1].eval()  # a mixed state must survive exactly
    modes = {n: m.training for n, m in model.named_modules()}
    target = Target(model)
    with target:
        target.probe(torch.rand(2, 3, 32, 32))
        assert not model.training
        name = target.layers[0].name
        with target.capture(name) as feats:
            target(torch.rand(2, 3, 32, 32))
        assert feats[name].shape[0] == 2
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_wrong_input_size_names_expected_and_got():
    target = Target(TinyFCNet(num_classes=4, input_size=32), input_size=(3, 32, 32))
    with target, pytest.raises(TargetError, match=r"rejected input of shape \[3, 64, 64\]; it expects \[3, 32, 32\]"):
        target(torch.rand(1, 3, 64, 64))


def test_black_box_counts_queries_and_refuses_gradients():
    bb = BlackBoxTarget(lambda x: torch.zeros(x.shape[0], dtype=torch.long), returns="labels")
    bb.probe(torch.rand(2, 3, 8, 8))
    assert bb.queries == 0  # the host's probe is not charged to any check
    bb.query(torch.rand(5, 3, 8, 8))
    assert bb.queries == 5
    with pytest.raises(TargetError, match="black box"):
        bb(torch.rand(1, 3, 8, 8))
    bad = BlackBoxTarget(lambda x: torch.zeros(x.shape[0], 2, 2))
    with pytest.raises(TargetError, match="expected scores"):
        bad.query(torch.rand(1, 3, 8, 8))
