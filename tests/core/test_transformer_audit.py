"""Transformers audited end to end (tiny random-weight models, nothing downloaded): a Hugging
Face ViT loaded from a factory file, whose forward returns a ``ModelOutput``, and a timm ViT
and Swin, through every white-box check. The images are noise labelled with the model's own
predictions, so that every image counts as correctly classified and the attacks have work."""
from __future__ import annotations

import math

import pytest
import torch

import auditkit
from auditkit import AuditData, Outcome, TensorSplit

CHECKS = ["gradcam.*", "cam.*", "whitebox.*", "inversion.*"]
HF_FACTORY = '''
import torch
from transformers import ViTConfig, ViTForImageClassification


def build(num_classes=3):
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                       intermediate_size=64, num_labels=num_classes)
    return ViTForImageClassification(config)
'''


def _labelled_noise(model: torch.nn.Module, n: int = 12) -> AuditData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        out = model.eval()(images)
    logits = out.logits if hasattr(out, "logits") else out
    return AuditData("noise", TensorSplit(images, logits.argmax(dim=1)), num_classes=3)


def _audited(model, data):
    run = auditkit.audit(model, data, checks=CHECKS, baselines=[], device="cpu", seed=0)
    errors = {r.check: r.message for r in run.results if r.outcome is Outcome.ERROR}
    assert not errors
    return run


def _attacked(run):
    for check in ("whitebox.fgsm", "whitebox.pgd"):
        result = run[check]
        assert result.outcome is Outcome.PASSED, result.message
        assert result.metrics["clean_acc"] == 1.0
        assert math.isfinite(result.metrics["robust_acc@linf_8/255"])
    assert run["whitebox.masking"].outcome is Outcome.PASSED


def test_hugging_face_vit_from_a_factory(tmp_path):
    pytest.importorskip("transformers")
    factory = tmp_path / "hf_vit.py"
    factory.write_text(HF_FACTORY)
    namespace: dict = {}
    exec(compile(HF_FACTORY, str(factory), "exec"), namespace)
    data = _labelled_noise(namespace["build"](3))
    run = _audited(f"{factory}:build", data)
    localization = run["gradcam.randomization"].details
    assert localization["layer"] == "vit.layers.1.layernorm_before"
    assert localization["layer_layout"] == {"kind": "tokens", "grid": [4, 4], "prefix_tokens": 1}
    cam = run["cam.consistency"]
    assert cam.outcome is Outcome.SKIPPED and "reads the class token of 'vit.layernorm'" in cam.message
    _attacked(run)


def test_timm_vit_and_swin():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3, embed_dim=48, num_heads=2)
    run = _audited(vit, _labelled_noise(vit))
    assert run["gradcam.faithfulness"].details["layer"] == "blocks.1.norm1"
    _attacked(run)

    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1),
        num_heads=(1, 2), num_classes=3,
    )
    run = _audited(swin, _labelled_noise(swin))
    assert run["gradcam.faithfulness"].details["layer"] == "norm"
    assert run["cam.consistency"].outcome is Outcome.PASSED, run["cam.consistency"].message


def test_a_vit_given_images_of_another_size_is_one_clear_line():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=4, embed_dim=48, num_heads=2)
    with pytest.raises(auditkit.UsageError, match=r"rejected input of shape \[3, 64, 64\].*the model declares 32x32 px input.*give \?size=32"):
        auditkit.audit(vit, "synthetic:shapes?n=8&size=64", checks=["accuracy.clean"], baselines=[], device="cpu")


def test_hugging_face_swin_keeps_tokens_through_its_stages():
    """Hugging Face's Swin keeps tokens [B,N,C] through its stages and folds its windows into
    the batch: Grad-CAM follows the grid through patch merging to the final norm, the pooler
    over its transposed tokens is a GAP head, and no layer with windows in its first dimension
    is inverted."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3
    )
    model = transformers.SwinForImageClassification(config)
    run = _audited(model, _labelled_noise(model, n=8))
    assert run["gradcam.faithfulness"].details["layer"] == "swin.layernorm"
    assert run["cam.consistency"].outcome is Outcome.PASSED, run["cam.consistency"].message
    inverted = run["inversion.fidelity"].message
    assert "attention" not in inverted and "relative_position_bias" not in inverted
