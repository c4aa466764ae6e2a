"""cam.consistency on transformers (tiny random-weight timm models, nothing downloaded): a mean
over the patch tokens (or over a Swin stage's channels-last grid) followed by one linear layer
is a GAP head, and both CAM identities hold there; a head that reads the class token, or a
norm between the mean and the linear layer (timm's fc_norm, ConvNeXt's head norm), is no GAP
head and the check skips saying so."""
from __future__ import annotations

import pytest
import torch

from auditkit import Outcome
from auditkit.data.synthetic import make_shapes
from auditkit.testing.transformers import tiny_hf_swin

timm = pytest.importorskip("timm")

RTOL = 1e-5  # float32 tolerance the check applies (relative_tolerance)


@pytest.fixture(scope="module")
def shapes32():
    return make_shapes(n=8, n_train=0, size=32, classes=4, seed=0)


def _vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, depth=1, num_classes=4, embed_dim=48, num_heads=2)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw})


def _swin():
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1),
        num_heads=(1, 2), num_classes=4,
    )


def _hf_swin():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    return tiny_hf_swin(4)


@pytest.mark.parametrize(
    ("build", "pool", "features", "layout"),
    [
        (lambda: _vit(global_pool="avg", fc_norm=False), "norm", "layer output", {"kind": "tokens", "grid": [4, 4], "prefix_tokens": 1}),
        (lambda: _vit(global_pool="avg", fc_norm=False, class_token=False), "norm", "layer output", {"kind": "tokens", "grid": [4, 4], "prefix_tokens": 0}),
        (_swin, "head.global_pool.pool", "pool input", {"kind": "nhwc", "grid": [8, 8], "prefix_tokens": 0}),
        (lambda: _hf_swin(), "swin.layernorm", "layer output", {"kind": "tokens", "grid": [8, 8], "prefix_tokens": 0}),
    ],
    ids=["vit token mean, class token dropped", "vit token mean, no class token", "swin channels-last pool", "hugging face swin"],
)
def test_token_mean_heads_satisfy_both_identities(build, pool, features, layout, shapes32, audit_cam):
    result, run = audit_cam(build(), shapes32)
    assert run.models[0]["gap_head"] is True
    assert result.outcome is Outcome.PASSED, result.message
    m = result.metrics
    assert 0 <= m["logit_rel_err"] < RTOL
    assert m["gradcam_rel_err"] < RTOL
    assert m["cam_gradcam_corr"] == pytest.approx(1.0, abs=1e-6)
    head = result.details["gap_head"]
    assert head["pool"] == pool and head["features"] == features and head["layout"] == layout
    assert head["feature_shape"][1:] == layout["grid"]


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_vit, "the linear layer 'head' reads the class token of 'norm', not a mean over the image grid"),
        (lambda: _vit(global_pool="avg"), "a norm (LayerNorm 'fc_norm') sits between the mean over the grid of 'norm' and the linear layer 'head'"),
        (
            lambda: timm.create_model("convnext_atto", num_classes=4, depths=(1, 1, 1, 1)),
            "a norm (LayerNorm2d 'head.norm') sits between the pooling 'head.global_pool.pool' and the linear layer 'head.fc'",
        ),
    ],
    ids=["vit class token", "vit fc_norm", "convnext head norm"],
)
def test_heads_that_break_the_identities_are_skipped_with_the_reason(build, reason, shapes32, audit_cam):
    result, _ = audit_cam(build(), shapes32)
    assert result.outcome is Outcome.SKIPPED
    assert reason in result.message
