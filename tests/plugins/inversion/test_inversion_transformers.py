"""Which layers inversion.fidelity inverts on vision transformers: the output of every block,
the patch embedding and the final norm, never a layer inside a block (timm's ViT and Swin,
Hugging Face's and torchvision's ViT; tiny random-weight models, nothing downloaded), while
the stages of CNNs stay what they were."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import auditkit
from auditkit import Outcome, Target
from auditkit.data.synthetic import make_shapes
from auditkit.testing.transformers import tiny_hf_vit, tiny_swin, tiny_torchvision_vit, tiny_vit
from auditkit_inversion.stages import default_stages

timm = pytest.importorskip("timm")

CHECK = "inversion.fidelity"


def _vit(depth: int = 2, embed_dim: int = 64) -> nn.Module:
    return tiny_vit(depth=depth, embed_dim=embed_dim)


def _hf_vit() -> nn.Module:
    pytest.importorskip("transformers")
    return tiny_hf_vit()


_swin, _tv_vit = tiny_swin, tiny_torchvision_vit


def _stages(model: nn.Module, size: int = 32) -> tuple[list[str], list[str]]:
    torch.manual_seed(0)
    target = Target(model.eval())
    with target:
        target.probe(torch.rand(1, 3, size, size))
    stages, notes = default_stages(target.model, target.layers, target.num_classes, target.body_name)
    return [s.name for s in stages], notes


@pytest.mark.parametrize(
    ("build", "expected", "head"),
    [
        (_vit, ["patch_embed", "blocks.0", "blocks.1", "norm"], "head"),
        # the blocks, not their layernorm_before, q_proj, k_proj, v_proj, ... as before
        (_hf_vit, ["vit.embeddings", "vit.layers.0", "vit.layers.1", "vit.layernorm"], "classifier"),
        # `encoder` holds the stack of blocks, so it is opened up
        (_tv_vit, ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1", "encoder.ln"], "heads"),
        # each stage (its blocks stay together, as a ResNet's do), then the pooled embedding
        (_swin, ["patch_embed", "layers.0", "layers.1", "norm", "head.global_pool"], "head.fc"),
    ],
    ids=["timm ViT", "Hugging Face ViT", "torchvision ViT", "timm Swin"],
)
def test_each_transformer_block_is_a_stage(build, expected, head):
    names, notes = _stages(build())
    assert names == expected
    assert notes == [f"{head} skipped: it is the classifier head (outputs the logits)"]


def test_a_deep_vit_inverts_every_block():
    names, _ = _stages(_vit(depth=12, embed_dim=16))
    assert names == ["patch_embed", *(f"blocks.{i}" for i in range(12)), "norm"]


def test_cnn_stages_are_unchanged():
    assert _stages(torchvision.models.alexnet(num_classes=4), 64)[0] == [
        "features.2", "features.5", "features.11", "avgpool", "classifier.2", "classifier.5",
    ]
    googlenet = torchvision.models.googlenet(num_classes=4, aux_logits=True, init_weights=False)
    assert _stages(googlenet, 64)[0] == ["maxpool1", "maxpool2", "maxpool3", "maxpool4", "inception5b", "avgpool"]
    # ConvNeXt's blocks work channels last inside, but its stages are channels first
    convnext = timm.create_model("convnext_atto", num_classes=4, depths=(1, 1, 1, 1))
    assert _stages(convnext, 64)[0] == ["stages.0", "stages.1", "stages.2", "stages.3", "head.norm"]


def test_the_check_inverts_the_blocks_after_the_anchor():
    torch.manual_seed(0)
    data = make_shapes(n=4, n_train=4, size=32, classes=2, seed=0)
    settings = {CHECK: {"max_images": 1, "steps": 3}}
    result = auditkit.audit(_vit(), data, checks=[CHECK], baselines=[], device="cpu", settings=settings)[CHECK]
    assert result.outcome is not Outcome.ERROR, result.message
    assert [layer["name"] for layer in result.details["layers"]] == [
        "patch_embed.proj", "patch_embed", "blocks.0", "blocks.1", "norm",
    ]
    assert result.details["anchor"]["layer"] == "patch_embed.proj"
