"""Grad-CAM on vision transformers and modern backbones: the layer the automatic rule picks on
timm's ViT, DeiT, register ViT, Swin and ConvNeXt, Hugging Face's ViT and torchvision's ViT and
Swin (tiny random-weight models, nothing downloaded), where the grid is in each layer's output,
and the maps against pytorch-grad-cam with its documented ``reshape_transform``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from gradcam_models import pgc_pipeline

from auditkit import Target, UsageError
from auditkit.layer_choice import choose_layer
from auditkit.layouts import ActivationLayout, infer_layouts
from auditkit.saliency import grad_cam
from auditkit.testing.transformers import tiny_hf_swin

timm = pytest.importorskip("timm")


def _vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, depth=2, num_classes=3, embed_dim=48, num_heads=2)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()


def _swin():
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=56, window_size=7, embed_dim=24, depths=(1, 1), num_heads=(1, 2), num_classes=3
    ).eval()


def _hf_vit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    return transformers.ViTForImageClassification(config).eval()


def _hf_swin():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    return tiny_hf_swin(3).eval()


def _probed(model, size):
    target = Target(model)  # mean 0, std 1: pytorch-grad-cam sees the same input
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, size, size, generator=g)
    target.__enter__()
    target.probe(x[:2])
    return target, x


# (model, image size, the layer pytorch-grad-cam's documentation and common practice use)
ARCHITECTURES = {
    "timm ViT": (lambda: _vit(), 32, "blocks.1.norm1", ActivationLayout("tokens", (4, 4), 1)),
    "timm DeiT (class + distillation token)": (
        lambda: timm.create_model(
            "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3, embed_dim=48, num_heads=2
        ).eval(),
        32, "blocks.0.norm1", ActivationLayout("tokens", (4, 4), 2),
    ),
    # timm's dynamic-size patch embedding hands back [B,h,w,C] through an Identity
    "timm ViT, dynamic image size": (
        lambda: _vit(dynamic_img_size=True), 32, "blocks.1.norm1", ActivationLayout("tokens", (4, 4), 1),
    ),
    "timm ViT with 4 registers": (
        lambda: _vit(reg_tokens=4, depth=1), 32, "blocks.0.norm1", ActivationLayout("tokens", (4, 4), 5),
    ),
    "timm ViT, token-mean head": (
        lambda: _vit(global_pool="avg", fc_norm=False, depth=1), 32, "norm", ActivationLayout("tokens", (4, 4), 1),
    ),
    "timm Swin": (_swin, 56, "norm", ActivationLayout("nhwc", (7, 7))),
    "Hugging Face ViT": (_hf_vit, 32, "vit.layers.1.layernorm_before", ActivationLayout("tokens", (4, 4), 1)),
    # tokens all the way, the grid halved by patch merging: the final norm before the pool
    "Hugging Face Swin": (lambda: _hf_swin(), 32, "swin.layernorm", ActivationLayout("tokens", (8, 8), 0)),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_automatic_layer_on_transformers(name):
    build, size, expected, layout = ARCHITECTURES[name]
    target, x = _probed(build(), size)
    try:
        choice = choose_layer(target, x)
        assert choice.name == expected
        assert choice.layout == layout
        assert choice.source == "automatic" and "grid" in choice.reason
        maps, _ = grad_cam(target, x, torch.tensor([0, 1, 2]), choice.name, layout=choice.layout, relu=False)
    finally:
        target.__exit__(None, None, None)
    assert maps.shape == (3, *layout.grid)
    # before the ReLU no map is constant: the grid positions carry the evidence
    assert (maps.flatten(1).std(dim=1) > 0).all()
    # the details say where the grid is, for the reports
    assert choice.to_details()["layer_layout"] == layout.to_details()


def test_vit_passes_over_layers_that_only_reach_the_class_token():
    target, x = _probed(_vit(), 32)
    try:
        choice = choose_layer(target, x)
    finally:
        target.__exit__(None, None, None)
    why = dict(choice.passed_over)
    # after the last attention the head reads only the class token: the grid's gradient is zero
    assert "class or register tokens" in why["norm"]
    assert "class or register tokens" in why["blocks.1"]
    assert "class token" in choice.reason


def test_attention_internals_hold_no_grid():
    """q/k per head [B,heads,N,d] and a qkv projection [B,N,3C] are not the image grid; the
    patch embedding's convolution is (channels first)."""
    target, _ = _probed(_vit(), 32)
    target.__exit__(None, None, None)
    infos = {info.name: info for info in target.layers}
    assert infos["patch_embed.proj"].layout == ActivationLayout("nchw", (4, 4))
    assert infos["blocks.0.attn.q_norm"].layout is None
    assert "tokens" in infos["blocks.0.attn.q_norm"].no_grid
    # the qkv projection [B,N,3C] is on the grid too; the layer choice passes over it for the norm
    assert infos["blocks.0.attn.qkv"].layout == ActivationLayout("tokens", (4, 4), 1)
    assert infos["head"].layout is None


def test_swin_windows_folded_into_the_batch_hold_no_grid():
    target, _ = _probed(_swin(), 56)
    target.__exit__(None, None, None)
    infos = {info.name: info for info in target.layers}
    assert infos["layers.0.blocks.0.attn.qkv"].layout is None  # [4 windows, 49, 72]
    assert "not the batch" in infos["layers.0.blocks.0.attn.qkv"].no_grid
    assert infos["layers.0.blocks.0"].layout == ActivationLayout("nhwc", (14, 14))
    assert infos["layers.0.blocks.0.norm2"].layout == ActivationLayout("tokens", (14, 14), 0)


def test_convnext_and_cnns_keep_channels_first():
    torch.manual_seed(0)
    model = timm.create_model("convnext_tiny", num_classes=3, depths=(1, 1, 1, 1), dims=(24, 32, 48, 64)).eval()
    target, x = _probed(model, 64)
    try:
        choice = choose_layer(target, x)
    finally:
        target.__exit__(None, None, None)
    assert choice.grid_layout.kind == "nchw" and choice.output_shape == (64, 2, 2)
    infos = {info.name: info for info in target.layers}
    # ConvNeXt's inner LayerNorm and MLP work channels last; the block hands back channels first
    assert infos["stages.0.blocks.0.norm"].layout == ActivationLayout("nhwc", (16, 16))
    assert infos["stages.0.blocks.0"].layout == ActivationLayout("nchw", (16, 16))


def test_torchvision_transformers():
    torch.manual_seed(0)
    swin = torchvision.models.swin_t(num_classes=3).eval()
    target, x = _probed(swin, 64)
    try:
        choice = choose_layer(target, x)
        infos = {info.name: info for info in target.layers}
    finally:
        target.__exit__(None, None, None)
    assert choice.name == "permute" and choice.grid_layout.kind == "nchw"
    assert infos["features.7"].layout == ActivationLayout("nhwc", (2, 2))

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision zeroes the head: every gradient would be 0
    target, x = _probed(vit.eval(), 32)
    try:
        choice = choose_layer(target, x)
    finally:
        target.__exit__(None, None, None)
    assert choice.name == "encoder.layers.encoder_layer_1.ln_1"
    assert choice.layout == ActivationLayout("tokens", (4, 4), 1)


def test_configured_layer_overrides_and_bad_layers_are_clear():
    target, x = _probed(_vit(), 32)
    try:
        assert choose_layer(target, x, layer="blocks.0.norm1").layout == ActivationLayout("tokens", (4, 4), 1)
        assert choose_layer(target, x, layer="blocks.0").source == "setting layer"
        with pytest.raises(UsageError, match=r"blocks\.0\.attn\.q_norm.*runs over tokens.*expected an output over the image grid"):
            choose_layer(target, x, layer="blocks.0.attn.q_norm")
    finally:
        target.__exit__(None, None, None)


def test_layout_rearranges_as_the_documented_reshape_transform():
    tokens = torch.arange(2 * 18 * 5, dtype=torch.float32).view(2, 18, 5)
    layout = ActivationLayout("tokens", (4, 4), 2)
    grid = layout.to_nchw(tokens)
    assert grid.shape == (2, 5, 4, 4)
    # token 2 + 4*i + j is position (i, j)
    assert torch.equal(grid[:, :, 1, 3], tokens[:, 2 + 4 * 1 + 3, :])
    with pytest.raises(ValueError, match=r"expected \[B,18,C\] tokens"):
        layout.to_nchw(tokens[:, 1:])
    nhwc = torch.randn(2, 3, 4, 5)
    assert torch.equal(ActivationLayout("nhwc", (3, 4)).to_nchw(nhwc), nhwc.permute(0, 3, 1, 2))


def test_infer_layouts_on_a_hand_written_record():
    linear, norm, conv = torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Conv2d(3, 8, 4, 4)
    calls = [
        ("embed", conv, (1, 8, 4, 4)),
        ("tokens", torch.nn.Identity(), (1, 17, 8)),
        ("heads", torch.nn.Identity(), (1, 2, 17, 17)),  # attention weights over 17 tokens
        ("swin", norm, (1, 4, 4, 8)),  # LayerNorm over the last dimension: channels last
        ("block", torch.nn.Identity(), (1, 4, 4, 8)),  # the same shape as a channels-last output
        ("wide", linear, (1, 17, 24)),  # a block's qkv or MLP layer: on the grid too
        ("windows", linear, (3, 16, 8)),
        ("merged", norm, (1, 4, 32)),  # patch merging: 2x2 patches of the 4x4 grid
        ("odd", linear, (1, 30, 8)),  # 26 tokens beyond the 2x2 grid: no prefix is that long
    ]
    out = infer_layouts(calls, (16, 16), batch=1)
    assert out[0] == (ActivationLayout("nchw", (4, 4)), None)
    assert out[1] == (ActivationLayout("tokens", (4, 4), 1), None)
    assert out[2][0] is None and "tokens" in out[2][1]
    assert out[3] == (ActivationLayout("nhwc", (4, 4)), None)
    assert out[4] == (ActivationLayout("nhwc", (4, 4)), None)
    assert out[5] == (ActivationLayout("tokens", (4, 4), 1), None)
    assert out[6][0] is None and "not the batch" in out[6][1]
    assert out[7] == (ActivationLayout("tokens", (2, 2), 0), None)
    assert out[8][0] is None and "do not fit the 2x2 grid" in out[8][1]


# -- known answer: pytorch-grad-cam with its documented reshape_transform -----------------------


def _vit_reshape_transform(tensor, height=4, width=4):
    # pytorch-grad-cam's docs (tutorials/vision_transformers.md), the class token dropped
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _swin_reshape_transform(tensor):
    # timm >= 0.9 hands Swin's stages channels last [B,h,w,C]
    return tensor.permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("build", "size", "layer", "transform"),
    [
        (_vit, 32, "blocks.1.norm1", _vit_reshape_transform),
        (_swin, 56, "norm", _swin_reshape_transform),
    ],
    ids=["vit", "swin"],
)
def test_maps_equal_pytorch_grad_cam_with_reshape_transform(build, size, layer, transform):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = build()
    target, x = _probed(model, size)
    classes = torch.tensor([0, 1, 2])
    try:
        ours, _ = grad_cam(target, x, classes, layer)  # the layout the probe recorded
    finally:
        target.__exit__(None, None, None)
    assert (ours.flatten(1).amax(dim=1) > 0).all()
    module = dict(model.named_modules())[layer]
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[module], reshape_transform=transform) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    model.zero_grad(set_to_none=True)
    theirs = torch.from_numpy(np.asarray(theirs))
    assert (pgc_pipeline(ours, size) - theirs).abs().max() < 1e-4


def _photographs(n: int = 3) -> torch.Tensor:
    """ImageNet sample photographs from the foolbox wheel, at the 224x224 a ViT-B/16 takes."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    spec = importlib.util.find_spec("foolbox")  # finds the files without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    files = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))[:n]
    if len(files) < n:
        pytest.skip("this foolbox has too few ImageNet sample photographs")
    pictures = [Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR) for path in files]
    return torch.stack([torch.from_numpy(np.asarray(p).copy()).permute(2, 0, 1).float() / 255 for p in pictures])


def test_vit_at_224_on_photographs_equals_pytorch_grad_cam():
    """The full-size timm ViT (14x14 patches of 16 px, 12 blocks; random weights: no download)
    on real photographs at its native 224 px: the automatic layer is the last block's norm1, as
    in pytorch-grad-cam's ViT tutorial, and the maps equal pytorch-grad-cam's with the
    tutorial's reshape_transform (14x14)."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224").eval()
    x = _photographs()
    target = Target(model)
    with target:
        target.probe(x[:1])
        choice = choose_layer(target, x)
        classes = target(x).argmax(dim=1)
        ours, _ = grad_cam(target, x, classes, choice.name, layout=choice.layout)
    assert choice.name == "blocks.11.norm1" and choice.layout == ActivationLayout("tokens", (14, 14), 1)
    module = dict(model.named_modules())[choice.name]
    with pytorch_grad_cam.GradCAM(
        model=model, target_layers=[module], reshape_transform=lambda t: _vit_reshape_transform(t, 14, 14)
    ) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    model.zero_grad(set_to_none=True)
    assert (pgc_pipeline(ours, 224) - torch.from_numpy(np.asarray(theirs))).abs().max() < 1e-4
