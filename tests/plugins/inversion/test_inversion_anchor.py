"""The calibration anchor of ``inversion.fidelity``: the first convolution's output is inverted
first, reconstructs near-losslessly when that layer keeps the image, and every deeper layer is
read against what the optimization reaches there."""
from __future__ import annotations

import pytest
import torch.nn.functional as F

import auditkit
from auditkit import Outcome
from auditkit_inversion import InversionFidelity
from auditkit_inversion.fidelity import psnr

FAST = {"steps": 100}


def fidelity(model, data, **settings):
    run = auditkit.audit(model, data, checks=["inversion.fidelity"], seed=0, settings={"inversion.fidelity": {**FAST, **settings}})
    return run["inversion.fidelity"]


def test_an_identity_first_layer_is_the_anchor_and_reconstructs_above_every_deeper_layer(identity_then_pool, shapes16):
    r = fidelity(identity_then_pool, shapes16)
    m = r.metrics
    # the automatic stages alone are [pool], past the 8x downsampling; the anchor comes first
    assert r.details["selection"] == "automatic"
    assert [layer["name"] for layer in r.details["layers"]] == ["conv", "pool"]
    anchor = r.details["anchor"]
    assert (anchor["layer"], anchor["source"]) == ("conv", "first convolution")
    assert (anchor["psnr"], anchor["ssim"], anchor["feature_rel_err"]) == (m["conv.psnr"], m["conv.ssim"], m["conv.feature_rel_err"])
    # an identity layer: ~41 dB at 16 px in 100 steps (the TV term's blur is the rest)
    assert m["anchor_psnr"] == m["conv.psnr"] > 35 and m["anchor_ssim"] > 0.99
    # pool keeps an 8x8-block thumbnail: far below the anchor, by what the layer loses
    thumbnail = F.interpolate(F.avg_pool2d(shapes16.eval.images, 8), scale_factor=8, mode="bilinear", align_corners=False)
    assert m["pool.psnr"] == pytest.approx(psnr(thumbnail, shapes16.eval.images).mean().item(), abs=3.0)
    assert m["pool.psnr_drop"] == pytest.approx(m["anchor_psnr"] - m["pool.psnr"]) and m["pool.psnr_drop"] > 20
    assert m["conv.psnr_drop"] == 0.0
    assert "the optimizer reaches only" not in r.message and r.outcome is Outcome.PASSED
    assert all(InversionFidelity.may_report(name) for name in m)


def test_no_duplicate_when_the_first_automatic_stage_is_the_anchor(identity_then_downsample, shapes16):
    r = fidelity(identity_then_downsample, shapes16)
    m = r.metrics
    assert [layer["name"] for layer in r.details["layers"]] == ["conv", "relu", "pool"]
    assert m["n_layers"] == 3 and r.details["anchor"]["layer"] == "conv"
    assert [layer["anchor"] for layer in r.details["layers"]] == [True, False, False]
    assert m["anchor_psnr"] > 35
    assert all(m["anchor_psnr"] > m[f"{name}.psnr"] and m[f"{name}.psnr_drop"] > 0 for name in ("relu", "pool"))
    # relu keeps the half-resolution thumbnail: it reconstructs at about the thumbnail's PSNR
    x0 = shapes16.eval.images
    thumbnail = F.interpolate(F.avg_pool2d(x0, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert m["relu.psnr"] == pytest.approx(psnr(thumbnail, x0).mean().item(), abs=3.0)


def test_deeper_layers_are_read_against_what_the_optimization_reaches_at_the_anchor(deep_invertible_net, shapes16):
    # 10 steps: the optimization reaches only ~0.86 SSIM (~23 dB) even at the lossless anchor; the
    # deep layer, lossless too, reaches as much. Against an absolute 0.9 it would pass as not
    # faithful; read against the anchor (0.9 of the anchor's SSIM, itself credited 0.9 at least)
    # it keeps what the optimization can show, and the message blames the optimization.
    r = fidelity(deep_invertible_net, shapes16, steps=10, leak_ssim=0.9)
    m = r.metrics
    assert 0.7 < m["anchor_ssim"] < 0.9 and m["anchor_psnr"] < 30
    assert m["features.ssim"] < 0.9 and abs(m["features.psnr_drop"]) < 1
    assert m["leaking_layers"] == 1 and r.details["leaks"] == ["features"]
    assert f"the optimizer reaches only {m['anchor_psnr']:.1f} dB at the anchor features.0: deeper layers' losses are bounded by it" in r.message
    assert "(SSIM >= 0.81, 0.9 of the anchor's 0.90)" in r.message

    absolute = fidelity(deep_invertible_net, shapes16, steps=10, leak_ssim=0.9, anchor=False)
    assert [layer["name"] for layer in absolute.details["layers"]] == ["features", "pool"]
    assert absolute.metrics["leaking_layers"] == 0 and "anchor" not in absolute.details
    assert not any(name.startswith("anchor_") or name.endswith(".psnr_drop") for name in absolute.metrics)
    assert absolute.metrics["features.ssim"] == pytest.approx(m["features.ssim"], abs=0.05)


def test_the_anchor_psnr_to_reach_is_a_setting(identity_then_pool, shapes16):
    r = fidelity(identity_then_pool, shapes16, steps=20, max_images=2, anchor_min_psnr=60)
    assert f"the optimizer reaches only {r.metrics['anchor_psnr']:.1f} dB at the anchor conv" in r.message
    with pytest.raises(auditkit.UsageError, match="anchor_min_psnr must be >= 0"):
        fidelity(identity_then_pool, shapes16, anchor_min_psnr=-1)
