"""gradcam.randomization on vision transformers: the cascade goes block by block through timm's,
Hugging Face's and torchvision's ViT and timm's Swin (tiny random-weight models, nothing
downloaded), while the blocks of CNNs stay what they were."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import auditkit
from auditkit import Outcome, Target
from auditkit.data.synthetic import make_shapes
from auditkit.testing.transformers import tiny_hf_vit, tiny_swin, tiny_torchvision_vit, tiny_vit
from auditkit_gradcam.randomization import cascade_blocks

timm = pytest.importorskip("timm")

CHECK = "gradcam.randomization"
OWN = "(model's own parameters)"


def _vit(depth: int = 2) -> nn.Module:
    return tiny_vit(depth=depth)


def _hf_vit() -> nn.Module:
    pytest.importorskip("transformers")
    return tiny_hf_vit()


_swin, _tv_vit = tiny_swin, tiny_torchvision_vit


def _blocks(model: nn.Module, size: int = 32):
    torch.manual_seed(0)
    target = Target(model.eval())
    with target:
        target.probe(torch.rand(1, 3, size, size))
    return cascade_blocks(target.model, [info.name for info in target.layers], target.body_name)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # cls_token and pos_embed are the model's own parameters: the last step
        (_vit, ["head", "norm", "blocks.1", "blocks.0", "patch_embed", OWN]),
        # the whole ViTModel `vit` (99% of the parameters) is opened up into its blocks
        (_hf_vit, ["classifier", "vit.layernorm", "vit.layers.1", "vit.layers.0", "vit.embeddings"]),
        # `encoder` is opened up; its pos_embedding goes with the class token to the last step
        (_tv_vit, ["heads.head", "encoder.ln", "encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_0",
                   "conv_proj", OWN]),
        # stage 1 holds most weights, so both stages are opened up; stage 0's downsample has none
        (_swin, ["head", "norm", "layers.1.blocks.0", "layers.1.downsample", "layers.0.blocks.0", "patch_embed"]),
    ],
    ids=["timm ViT", "Hugging Face ViT", "torchvision ViT", "timm Swin"],
)
def test_transformers_are_randomized_block_by_block(build, expected):
    model = build()
    blocks = _blocks(model)
    assert [b.name for b in blocks] == expected
    # every parameter is randomized exactly once
    owned = [p for b in blocks for p in b.parameters]
    assert sorted(owned) == sorted(n for n, _ in model.named_parameters())


def test_the_position_embedding_of_an_opened_encoder_is_randomized_last():
    blocks = _blocks(_tv_vit())
    assert blocks[-1].parameters == ("encoder.pos_embedding", "class_token")


def test_a_lone_transformer_block_stays_one_step():
    # blocks.0 holds most of the weights but no stack of blocks: it is a block, not a network
    assert [b.name for b in _blocks(_vit(depth=1))] == ["head", "norm", "blocks.0", "patch_embed", OWN]


def test_cnn_blocks_are_unchanged():
    alexnet = torchvision.models.alexnet(num_classes=4)  # classifier.1 holds 2/3 of it but has no children
    assert [b.name for b in _blocks(alexnet, 64)] == [
        "classifier.6", "classifier.4", "classifier.1", "features.10", "features.8", "features.6", "features.3", "features.0",
    ]
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=4)
    assert [b.name for b in _blocks(mobilenet, 64)] == [
        "classifier.3", "classifier.0", "features.12.1", "features.12.0", *(f"features.{i}" for i in range(11, 0, -1)),
        "features.0.1", "features.0.0",
    ]


def test_a_network_behind_a_parameter_free_module_is_opened_up():
    # a Sequential(normalize, resnet) used to be a single step, the whole ResNet
    model = nn.Sequential(nn.Identity(), torchvision.models.resnet18(num_classes=4))
    assert [b.name for b in _blocks(model, 64)] == [
        "1.fc", "1.layer4.1", "1.layer4.0", "1.layer3.1", "1.layer3.0", "1.layer2.1", "1.layer2.0", "1.layer1.1",
        "1.layer1.0", "1.bn1", "1.conv1",
    ]


def test_the_check_runs_on_a_hugging_face_vit():
    torch.manual_seed(0)
    data = make_shapes(n=8, n_train=8, size=32, classes=2, seed=0)
    run = auditkit.audit(_hf_vit(), data, checks=[CHECK], baselines=[], device="cpu", settings={CHECK: {"max_images": 5}})
    result = run[CHECK]
    assert result.outcome is not Outcome.ERROR, result.message
    assert result.metrics["n_blocks"] == 5
    assert result.details["blocks"] == ["classifier", "vit.layernorm", "vit.layers.1", "vit.layers.0", "vit.embeddings"]
