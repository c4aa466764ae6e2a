"""A model in a single-child wrapper or in nn.DataParallel is the same model: Grad-CAM picks the
same layer, and cascading randomization opens the same blocks (under the wrapper's prefix) and
gives the same numbers, instead of randomizing the whole wrapped network in one step."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import auditkit
from auditkit import Target
from auditkit.testing.models import TinyGAPNet, Wrapped
from auditkit_gradcam.layer_choice import choose_layer
from auditkit_gradcam.randomization import cascade_blocks

CHECK = "gradcam.randomization"
TINY_BLOCKS = ["fc", "features.7", "features.6", "features.4", "features.3", "features.1", "features.0"]


def _variants(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """The same weights plain, wrapped and in DataParallel (on a CPU-only machine DataParallel
    just calls the module), with the prefix each gives the layer names."""
    return {
        "plain": (copy.deepcopy(model), ""),
        "wrapped": (Wrapped(copy.deepcopy(model)), "net."),
        "twice_wrapped": (Wrapped(Wrapped(copy.deepcopy(model))), "net.net."),
        "data_parallel": (nn.DataParallel(copy.deepcopy(model)), ""),
    }


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyGAPNet(num_classes=4).eval()


def _probed(model: nn.Module) -> tuple[Target, torch.Tensor]:
    target = Target(model.eval())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target.probe(x)
    return target, x


def test_the_cascade_starts_from_the_body_of_a_wrapped_model(tiny):
    for name, (model, prefix) in _variants(tiny).items():
        target, _ = _probed(model)
        blocks = cascade_blocks(target.model, [info.name for info in target.layers], target.body_name)
        assert [b.name for b in blocks] == [prefix + n for n in TINY_BLOCKS], name
        # every parameter is randomized exactly once
        owned = sorted(p for b in blocks for p in b.parameters)
        assert owned == sorted(n for n, _ in target.model.named_parameters()), name


def test_without_the_body_a_wrapper_would_be_one_block(tiny):
    # what the cascade did before it started from the body: the whole network in one step
    model = Wrapped(copy.deepcopy(tiny))
    target, _ = _probed(model)
    assert [b.name for b in cascade_blocks(model, [info.name for info in target.layers])] == ["net"]


def test_grad_cam_picks_the_same_layer_for_a_wrapped_model(tiny):
    for name, (model, prefix) in _variants(tiny).items():
        target, x = _probed(model)
        choice = choose_layer(target, x)
        assert choice.name == prefix + "features" and choice.output_shape == (16, 16, 16), name


def test_randomization_gives_the_same_verdict_and_numbers_wrapped_or_not(marked_shapes, shortcut_model):
    settings = {CHECK: {"max_images": 8}}
    results = {}
    for name, (model, prefix) in _variants(shortcut_model).items():
        result = auditkit.audit(model, marked_shapes, checks=[CHECK], seed=5, settings=settings)[CHECK]
        results[name] = (result, prefix)
    plain = results["plain"][0]
    assert plain.metrics["n_blocks"] == 7 and plain.details["blocks"][0] == "evidence.0"
    for name, (result, prefix) in results.items():
        assert result.outcome is plain.outcome, name
        assert result.metrics == plain.metrics, name
        assert result.details["layer"] == prefix + plain.details["layer"], name
        assert result.details["blocks"] == [prefix + b for b in plain.details["blocks"]], name
