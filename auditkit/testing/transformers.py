"""Tiny random-weight vision transformers for tests (a plugin's too): timm's ViT and Swin,
Hugging Face's ViT and Swin, torchvision's ViT, all at 32x32 px and small enough to audit in
seconds on a CPU. Nothing is downloaded. timm and transformers are imported when a builder
is called (``pytest.importorskip`` them first in a test); seed with ``torch.manual_seed``
before calling for reproducible weights."""
from __future__ import annotations

from typing import Any

import torchvision
from torch import nn


def tiny_vit(num_classes: int = 2, *, depth: int = 2, embed_dim: int = 64, **kwargs: Any) -> nn.Module:
    """timm's ViT: 8 px patches of a 32 px image (a 4x4 grid and a class token), two heads;
    ``kwargs`` go to ``timm.create_model`` (``global_pool="avg"``, ``reg_tokens=4``,
    ``dynamic_img_size=True``...)."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=depth, num_classes=num_classes,
        embed_dim=embed_dim, num_heads=2, **kwargs,
    )


def tiny_swin(num_classes: int = 2) -> nn.Module:
    """timm's Swin: 2 px patches of a 32 px image (16x16, then 8x8 after patch merging),
    windows of 4x4, one block per stage; its stages are channels last ``[B,h,w,C]``."""
    import timm

    return timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1),
        num_heads=(1, 2), num_classes=num_classes,
    )


def tiny_hf_vit(num_classes: int = 2) -> nn.Module:
    """Hugging Face's ``ViTForImageClassification``: two layers, 8 px patches of 32 px images;
    its forward returns a ``ModelOutput`` with ``logits``."""
    import transformers

    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, num_labels=num_classes,
    )
    return transformers.ViTForImageClassification(config)


def tiny_hf_swin(num_classes: int = 2) -> nn.Module:
    """Hugging Face's ``SwinForImageClassification``: tokens ``[B,N,C]`` through its stages
    (16x16, then 8x8), windows folded into the batch, a pooler over transposed tokens."""
    import transformers

    config = transformers.SwinConfig(
        image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=num_classes
    )
    return transformers.SwinForImageClassification(config)


def tiny_torchvision_vit(num_classes: int = 2) -> nn.Module:
    """torchvision's ``VisionTransformer``: two encoder layers, 8 px patches of 32 px images.
    torchvision zeroes the head's weights: draw them (``nn.init.normal_``) where gradients
    must reach the layers."""
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=num_classes
    )
