"""The check ``inversion.fidelity`` through the public API: known answers on hand-set models,
the calibration anchor, the contract's metric names, the leak flag, the convergence gate,
artifacts and errors."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import auditkit
from auditkit import Outcome, UsageError
from auditkit.data.loaders import load_data
from auditkit.testing.models import Wrapped
from auditkit_inversion.fidelity import psnr

FAST = {"steps": 100}  # the defaults' 200 steps change these results by < 0.3 dB


def fidelity(model, data, seed=0, **settings):
    run = auditkit.audit(model, data, checks=["inversion.fidelity"], seed=seed, settings={"inversion.fidelity": {**FAST, **settings}})
    return run["inversion.fidelity"]


@pytest.fixture(scope="module")
def staged_result(shapes16, staged_net_class):
    torch.manual_seed(0)
    return fidelity(staged_net_class(), shapes16)


def test_fidelity_falls_with_depth_as_the_information_does(staged_result, shapes16):
    m = staged_result.metrics
    x0 = shapes16.eval.images
    layers = ["features.1", "features.3", "features.5", "pool"]
    ssims = [m[f"{name}.ssim"] for name in layers]
    assert ssims == sorted(ssims, reverse=True) and ssims[0] > ssims[1] + 0.1 > ssims[2] + 0.2
    assert m["ssim_slope"] < 0 and m["psnr_slope"] < 0
    # features.1 keeps the image exactly: near-perfect reconstruction
    assert m["features.1.psnr"] > 30 and m["features.1.ssim"] > 0.99
    # features.3 / features.5 keep 2x2 / 4x4 block means: about what upsampling those thumbnails gives
    for name, k in (("features.3", 2), ("features.5", 4)):
        thumbnail = F.interpolate(F.avg_pool2d(x0, k), scale_factor=k, mode="bilinear", align_corners=False)
        assert m[f"{name}.psnr"] == pytest.approx(psnr(thumbnail, x0).mean().item(), abs=3.0)
    # pool keeps the mean colour only: the reconstruction is that flat image
    flat = x0.mean(dim=(2, 3), keepdim=True).expand_as(x0)
    assert m["pool.psnr"] == pytest.approx(psnr(flat, x0).mean().item(), abs=0.5)
    assert all(m[f"{name}.feature_rel_err"] < 0.05 for name in layers)
    # the anchor, features.0 = (x, -x), is as exact as features.1 and reads the others
    assert m["anchor_psnr"] == m["features.0.psnr"] > 30 and m["anchor_ssim"] > 0.99
    assert [m[f"{name}.psnr_drop"] for name in layers] == pytest.approx([m["anchor_psnr"] - m[f"{name}.psnr"] for name in layers])
    assert abs(m["features.1.psnr_drop"]) < 1 and m["pool.psnr_drop"] > 20


def test_metric_names_outcome_and_message_follow_the_contract(staged_result):
    r = staged_result
    layers = ["features.0", "features.1", "features.3", "features.5", "pool"]
    per_layer = [f"{name}.{metric}" for name in layers for metric in ("feature_rel_err", "psnr", "ssim", "psnr_drop")]
    summary = ["max_feature_rel_err", "max_feature_err_ratio", "psnr_slope", "ssim_slope", "faithful_depth",
               "leaking_layers", "anchor_psnr", "anchor_ssim", "n_images", "n_layers"]
    assert sorted(r.metrics) == sorted(per_layer + summary)
    assert r.outcome is Outcome.PASSED
    assert r.metrics["n_images"] == 4 and r.metrics["n_layers"] == 5 and r.metrics["leaking_layers"] == 0
    assert r.thresholds == {"max_feature_err_ratio": {"op": "max", "value": 0.5}}
    assert "automatic: features.0, features.1, features.3, features.5, pool" in r.message
    assert f"anchor features.0 (first convolution): PSNR {r.metrics['anchor_psnr']:.1f} dB, SSIM 1.00" in r.message
    assert "the optimizer reaches only" not in r.message
    assert r.details["anchor"]["layer"] == "features.0" and r.details["anchor"]["source"] == "first convolution"
    assert [layer["anchor"] for layer in r.details["layers"]] == [True, False, False, False, False]
    assert r.details["not_inverted"] == ["fc skipped: it is the classifier head (outputs the logits)"]
    assert r.details["strategy"] == "drop"
    depths = [layer["depth"] for layer in r.details["layers"]]
    assert depths == sorted(depths)
    # the deepest layer still at SSIM >= 0.7 of the anchor's is features.3
    assert r.metrics["faithful_depth"] == r.details["layers"][2]["depth"]


def test_artifacts_are_a_png_grid_and_fidelity_curves(staged_result):
    by_name = {a.name: a for a in staged_result.artifacts}
    grid = by_name["reconstructions"]
    assert grid.kind == "image/png"
    image = Image.open(io.BytesIO(grid.data))
    # 4 images x (original + anchor + 4 layers), 16 px tiles enlarged 4x to 64 px, 2 px gaps
    assert image.size == (6 * 64 + 7 * 2, 4 * 64 + 5 * 2)
    curve = by_name["ssim_vs_depth"]
    assert curve.kind == "curve" and curve.data["names"] == ["features.0", "features.1", "features.3", "features.5", "pool"]
    assert curve.data["y"] == [staged_result.metrics[f"{n}.ssim"] for n in curve.data["names"]]
    assert curve.data["x"] == [layer["depth"] for layer in staged_result.details["layers"]]
    assert by_name["psnr_vs_depth"].data["y"] == [staged_result.metrics[f"{n}.psnr"] for n in curve.data["names"]]


def test_a_deep_layer_that_keeps_the_image_is_flagged_as_information(deep_invertible_net, shapes16):
    r = fidelity(deep_invertible_net, shapes16)
    assert r.outcome is Outcome.PASSED  # information, not a failure, by default
    assert r.metrics["leaking_layers"] == 1 and r.metrics["features.ssim"] > 0.99
    assert "info: deep layer(s) features (depth 0.73, SSIM 1.00) still reconstruct the input (SSIM >= 0.70, 0.7 of the anchor's 1.00)" in r.message
    assert r.details["leaks"] == ["features"]

    gated = auditkit.audit(
        deep_invertible_net, shapes16, checks=["inversion.fidelity"],
        settings={"inversion.fidelity": {**FAST, "thresholds": {"leaking_layers": {"max": 0}}}},
    )["inversion.fidelity"]
    assert gated.outcome is Outcome.FAILED and gated.message.startswith("leaking_layers=1 violates leaking_layers <= 0")


def test_an_inversion_that_cannot_converge_fails_the_check(quantized_input_net, shapes16):
    # rounding the input to 4 grey levels zeroes every pixel gradient: the features never approach
    r = fidelity(quantized_input_net, shapes16, steps=20)
    assert r.outcome is Outcome.FAILED
    assert r.metrics["max_feature_err_ratio"] > 0.5
    assert r.message.startswith("max_feature_err_ratio=") and "violates max_feature_err_ratio <= 0.5" in r.message
    assert "not converged at features.0" in r.message
    # the anchor shows that the optimizer, not the layers, is what fails
    assert f"the optimizer reaches only {r.metrics['anchor_psnr']:.1f} dB at the anchor features.0: deeper layers' losses are bounded by it" in r.message
    assert r.metrics["anchor_psnr"] < 20 and r.metrics["leaking_layers"] == 0


def test_configured_layers_and_identity_known_answer(identity_then_pool, shapes16):
    r = fidelity(identity_then_pool, shapes16, layers=["pool", "conv"], max_images=2)
    assert r.details["selection"] == "configured"
    assert [layer["name"] for layer in r.details["layers"]] == ["conv", "pool"]  # call order; conv is the anchor, once
    assert r.details["anchor"]["layer"] == "conv"
    assert r.metrics["conv.psnr"] > 30 and r.metrics["pool.psnr"] < r.metrics["conv.psnr"] - 10
    assert r.metrics["n_images"] == 2


def test_an_unknown_layer_is_an_error_naming_close_layers(staged_net, shapes16):
    r = fidelity(staged_net, shapes16, layers=["feature.3"])
    assert r.outcome is Outcome.ERROR
    assert "layer 'feature.3' is not a module of the model with a tensor output; close names: ['features.3'" in r.message


def test_bad_settings_are_usage_errors(staged_net, shapes16):
    with pytest.raises(UsageError, match=r"inversion.fidelity: steps must be >= 1, got 0; lr must be > 0, got -0.1"):
        fidelity(staged_net, shapes16, steps=0, lr=-0.1)
    with pytest.raises(UsageError, match=r"strategy must be one of 'auto', 'drop', 'stacked', 'sequential', got 'fast'"):
        fidelity(staged_net, shapes16, strategy="fast")


def test_a_model_without_a_stage_before_its_head_is_skipped(shapes16):
    r = fidelity(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)), shapes16)
    assert r.outcome is Outcome.SKIPPED
    assert r.message.startswith("no stage before the classifier head to invert") and "'layers'" in r.message


def test_deterministic_for_a_seed_and_independent_of_batching(staged_net, shapes16):
    settings = {"steps": 30}
    first = fidelity(staged_net, shapes16, seed=3, **settings).metrics
    again = fidelity(staged_net, shapes16, seed=3, **settings).metrics
    other = fidelity(staged_net, shapes16, seed=4, **settings).metrics
    assert first == again and first != other
    # batch_size 4 leaves room for one image's 4 copies per forward: 4 batches instead of 1
    one_by_one = auditkit.audit(
        staged_net, shapes16, checks=["inversion.fidelity"], seed=3, batch_size=4,
        settings={"inversion.fidelity": settings},
    )["inversion.fidelity"].metrics
    assert one_by_one == pytest.approx(first, abs=1e-4)


def test_default_layers_of_a_random_tiny_cnn_lose_fidelity_with_depth():
    from auditkit.testing.models import TinyGAPNet

    data = load_data("synthetic:shapes?n=2&size=16&classes=4&seed=0")
    torch.manual_seed(1)
    r = fidelity(TinyGAPNet(num_classes=4), data)
    ssims = [r.metrics[f"{name}.ssim"] for name in ("features.2", "features.8", "pool")]
    assert r.outcome is Outcome.PASSED
    assert ssims == sorted(ssims, reverse=True) and r.metrics["ssim_slope"] < 0
    # the first convolution (3 -> 8 channels, before its BN and ReLU) keeps the image: the
    # optimization reaches ~40 dB there, above every stage, so the stages' drops are their own
    assert r.details["anchor"]["layer"] == "features.0" and r.metrics["anchor_psnr"] > 30
    assert all(r.metrics[f"{name}.psnr_drop"] > 1 for name in ("features.2", "features.8", "pool"))


def test_a_wrapped_model_inverts_the_same_layers_with_the_same_numbers(shapes16, staged_net_class):
    torch.manual_seed(0)
    plain_model = staged_net_class()
    wrapped_model = Wrapped(staged_net_class())
    wrapped_model.net.load_state_dict(plain_model.state_dict())
    plain = fidelity(plain_model, shapes16, steps=20, max_images=2)
    wrapped = fidelity(wrapped_model, shapes16, steps=20, max_images=2)
    names = [layer["name"] for layer in plain.details["layers"]]
    assert names == ["features.0", "features.1", "features.3", "features.5", "pool"]
    assert [layer["name"] for layer in wrapped.details["layers"]] == [f"net.{n}" for n in names]

    def wrapped_name(metric: str) -> str:  # per-layer metrics are "<layer>.<metric>"
        return f"net.{metric}" if any(metric.startswith(f"{n}.") for n in names) else metric

    assert wrapped.metrics == {wrapped_name(k): v for k, v in plain.metrics.items()}
    assert wrapped.details["anchor"]["layer"] == "net.features.0"
