"""gradcam.randomization (Adebayo et al. 2018): the cascade order, the randomization itself, a
trained model whose maps decorrelate and an explanation that ignores the weights."""
from __future__ import annotations

import io

import pytest
import torch
import torchvision
from PIL import Image

import auditkit
from auditkit import Outcome, Target
from auditkit.testing.models import TinyGAPNet
from auditkit_gradcam.randomization import Block, cascade_blocks, randomize_
from gradcam_models import WeightBlindNet

CHECK = "gradcam.randomization"


def _call_order(model: torch.nn.Module, size: int) -> list[str]:
    target = Target(model.eval())
    target.probe(torch.rand(2, 3, size, size))
    return [info.name for info in target.layers]


def test_cascade_goes_from_the_logits_down_block_by_block():
    resnet = torchvision.models.resnet18(num_classes=4)
    names = [b.name for b in cascade_blocks(resnet, _call_order(resnet, 64))]
    assert names == ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0",
                     "layer1.1", "layer1.0", "bn1", "conv1"]
    tiny = TinyGAPNet(4)
    blocks = cascade_blocks(tiny, _call_order(tiny, 32))
    # Sequential stages are opened up; parameter-free ReLUs are not steps
    assert [b.name for b in blocks] == ["fc", "features.7", "features.6", "features.4", "features.3", "features.1", "features.0"]
    assert blocks[0].parameters == ("fc.weight", "fc.bias")
    # every parameter is randomized exactly once
    owned = [p for b in blocks for p in b.parameters]
    assert sorted(owned) == sorted(n for n, _ in tiny.named_parameters())


def test_blocks_that_do_not_run_are_left_out():
    googlenet = torchvision.models.googlenet(num_classes=4, aux_logits=True, init_weights=False)
    names = [b.name for b in cascade_blocks(googlenet, _call_order(googlenet, 64))]
    # the auxiliary classifiers only run in training mode
    assert "aux1" not in names and "aux2" not in names
    assert names[:3] == ["fc", "inception5b", "inception5a"] and names[-1] == "conv1"


def test_randomize_redraws_with_zero_mean_and_the_same_scale():
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256)
    with torch.no_grad():
        layer.weight.mul_(3).add_(0.5)  # a learned-looking offset the randomization must remove
    rms = layer.weight.detach().pow(2).mean().sqrt()
    before = layer.weight.detach().clone()
    randomize_(layer, Block("", ("weight",)), torch.Generator().manual_seed(1))
    after = layer.weight.detach()
    assert float(after.pow(2).mean().sqrt()) == pytest.approx(float(rms), rel=0.01)
    assert abs(float(after.mean())) < 0.01 * float(rms)
    assert abs(torch.corrcoef(torch.stack([before.flatten(), after.flatten()]))[0, 1]) < 0.02
    again = torch.nn.Linear(256, 256)
    with torch.no_grad():
        again.weight.copy_(before)
    randomize_(again, Block("", ("weight",)), torch.Generator().manual_seed(1))
    assert torch.equal(again.weight, after)  # reproducible for a seed


def test_a_trained_model_decorrelates_and_passes(marked_shapes, shortcut_model):
    before = {k: v.clone() for k, v in shortcut_model.state_dict().items()}
    result = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK])[CHECK]
    assert result.outcome is Outcome.PASSED, result.message
    m = result.metrics
    assert m["max_rank_corr"] < 0.35 and abs(m["final_rank_corr"]) < 0.2
    assert m["n_blocks"] == 7 and m["n_images"] == 16
    # the copy was randomized, not the model
    after = shortcut_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in shortcut_model.parameters())
    curve = next(a for a in result.artifacts if a.name == "rank_correlation_by_block")
    assert curve.kind == "curve" and curve.data["y"][0] == 1.0 and len(curve.data["x"]) == 8
    assert curve.data["x_labels"][:2] == ["original", "evidence.0"]
    assert max(curve.data["y"][1:]) == pytest.approx(m["max_rank_corr"])
    strip = next(a for a in result.artifacts if a.kind == "image/png")
    assert Image.open(io.BytesIO(strip.data)).format == "PNG" and len(strip.data) < 60_000
    assert "cascading randomization of 7 blocks (evidence.0 ... features.0)" in result.message


def test_an_explanation_that_ignores_the_weights_fails(marked_shapes):
    torch.manual_seed(0)
    result = auditkit.audit(WeightBlindNet(4), marked_shapes, checks=[CHECK])[CHECK]
    assert result.outcome is Outcome.FAILED
    # the map is the brightness map whatever the head's weights: unchanged, to rounding
    assert result.metrics["max_rank_corr"] == pytest.approx(1.0, abs=1e-6)
    assert result.metrics["final_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result.message.startswith("max_rank_corr=1 violates max_rank_corr <= 0.5")
    assert result.details["blocks"] == ["fc"]


def test_results_repeat_for_a_seed_and_the_threshold_is_configurable(marked_shapes, shortcut_model):
    settings = {CHECK: {"max_images": 5, "thresholds": {"max_rank_corr": {"max": 0.01}}}}  # the rule needs 5
    first = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK], seed=5, settings=settings)[CHECK]
    second = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK], seed=5, settings=settings)[CHECK]
    assert first.metrics == second.metrics
    assert first.outcome is Outcome.FAILED and first.thresholds == {"max_rank_corr": {"op": "max", "value": 0.01}}


def test_without_labels_the_prediction_is_explained_and_said_so(tiny_data):
    unlabelled = auditkit.AuditData("no-labels", auditkit.TensorSplit(tiny_data.eval.images[:8]), num_classes=4, has_labels=False)
    torch.manual_seed(0)
    result = auditkit.audit(TinyGAPNet(4), unlabelled, checks=[CHECK])[CHECK]
    assert result.outcome is not Outcome.ERROR, result.message
    assert result.details["explained_class"] == "the predicted class (the data has no labels)"
