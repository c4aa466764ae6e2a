"""Which layers are inverted by default (the output of each stage), how configured names
are checked, and which layer is the calibration anchor."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from auditkit import Target
from auditkit.testing.models import TinyFCNet, TinyGAPNet, Wrapped
from auditkit_inversion.stages import LayerSelectionError, anchor_stage, configured_stages, default_stages


def probed(model: nn.Module, size: int = 32) -> Target:
    target = Target(model)
    with target:
        target.probe(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return target


def stage_names(model: nn.Module, size: int = 32) -> tuple[list[str], list[str]]:
    target = probed(model, size)
    stages, notes = default_stages(model, target.layers, target.num_classes)
    return [s.name for s in stages], notes


def test_gap_net_stages_are_resolution_levels_then_the_pooled_embedding():
    names, notes = stage_names(TinyGAPNet())
    # features = conv-bn-relu at 32 px, then two conv-bn-relu at 16 px (the stride-2 conv starts a stage)
    assert names == ["features.2", "features.8", "pool"]
    assert notes == ["fc skipped: it is the classifier head (outputs the logits)"]


def test_fc_net_stages_end_at_each_pool_and_each_hidden_linear_layer():
    names, notes = stage_names(TinyFCNet())
    assert names == ["features.2", "features.5", "classifier.3"]
    assert notes == ["classifier.5 skipped: it is the classifier head (outputs the logits)"]


def test_sequential_model_and_wrapped_model():
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(4, 3),
    )
    assert stage_names(seq)[0] == ["2", "5", "6"]

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyGAPNet()

        def forward(self, x):
            return self.net(x)

    assert stage_names(Wrapper())[0] == ["net.features.2", "net.features.8", "net.pool"]


def test_resnet18_stages_are_the_stem_the_four_layers_and_the_embedding():
    names, _ = stage_names(torchvision.models.resnet18(num_classes=4))
    assert names == ["maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]


def test_vgg_shaped_blocks_end_at_their_max_pool_and_each_hidden_linear_is_a_stage():
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    class MiniVGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*block(3, 4), *block(4, 8), *block(8, 8))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Dropout(),
                nn.Linear(16, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 4),
            )

        def forward(self, x):
            return self.classifier(self.features(x))

    names, notes = stage_names(MiniVGG())
    assert names == ["features.4", "features.9", "features.14", "classifier.2", "classifier.5"]
    assert notes == ["classifier.7 skipped: it is the classifier head (outputs the logits)"]


def test_depth_grows_along_the_network_and_stays_in_0_1():
    target = probed(TinyGAPNet())
    stages, _ = default_stages(target.model, target.layers, target.num_classes)
    depths = [s.depth for s in stages]
    assert depths == sorted(depths) and 0 < depths[0] and depths[-1] < 1
    # features.2 closes the first 3 of the 12 leaf modules (3 x conv-bn-relu, pool, flatten, fc)
    assert depths[0] == pytest.approx(3 / 12)


def test_a_model_that_is_only_a_head_has_no_stage():
    target = probed(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)))
    stages, notes = default_stages(target.model, target.layers, target.num_classes)
    assert stages == [] and "classifier head" in notes[0]


def test_a_module_called_twice_is_not_a_default_stage():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.down = nn.Conv2d(3, 3, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(self.pool(self.down(self.conv(self.conv(x)))).flatten(1))

    names, notes = stage_names(Shared())
    assert "conv" not in names and any("conv skipped: it runs 2 times" in n for n in notes)
    assert names == ["down", "pool"]


def test_configured_layers_are_sorted_in_call_order():
    target = probed(TinyGAPNet())
    stages = configured_stages(["pool", "features.0"], target.layers)
    assert [s.name for s in stages] == ["features.0", "pool"]
    assert stages[0].output_shape == (1, 8, 32, 32)


def test_an_unknown_layer_names_close_candidates():
    target = probed(TinyGAPNet())
    with pytest.raises(LayerSelectionError, match=r"layer 'feature.2' is not a module.*close names: \['features.2'"):
        configured_stages(["feature.2"], target.layers)


def test_duplicate_and_repeated_layers_are_rejected():
    target = probed(TinyGAPNet())
    with pytest.raises(LayerSelectionError, match="configured twice"):
        configured_stages(["pool", "pool"], target.layers)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    twice = probed(Twice())
    with pytest.raises(LayerSelectionError, match="runs 2 times per forward"):
        configured_stages(["conv"], twice.layers)


# -- stages from the recorded calls: wrappers, backbone + head, children called directly ------


def _body_stages(model: nn.Module, size: int = 32) -> tuple[list[str], list[str]]:
    """Stage names and notes as the check computes them: from the Target's body."""
    target = probed(model, size)
    stages, notes = default_stages(target.model, target.layers, target.num_classes, target.body_name)
    return [s.name for s in stages], notes


def test_plain_wrapped_and_data_parallel_models_get_the_same_stages():
    import copy

    torch.manual_seed(0)
    tiny = TinyGAPNet()
    plain, plain_notes = _body_stages(copy.deepcopy(tiny))
    assert plain == ["features.2", "features.8", "pool"]
    for model, prefix in (
        (Wrapped(copy.deepcopy(tiny)), "net."),
        (Wrapped(Wrapped(copy.deepcopy(tiny))), "net.net."),
        (nn.DataParallel(copy.deepcopy(tiny)), ""),  # the Target runs DataParallel's module
        (nn.DataParallel(Wrapped(copy.deepcopy(tiny))), "net."),
    ):
        names, notes = _body_stages(model)
        assert names == [prefix + n for n in plain]
        assert notes == [f"{prefix}fc skipped: it is the classifier head (outputs the logits)"]
    # the depths (share of leaf modules run) do not depend on the wrapping either
    target = probed(Wrapped(copy.deepcopy(tiny)))
    wrapped = default_stages(target.model, target.layers, target.num_classes, target.body_name)[0]
    target = probed(copy.deepcopy(tiny))
    assert [s.depth for s in wrapped] == [s.depth for s in default_stages(target.model, target.layers, target.num_classes)[0]]


class _BackboneHead(nn.Module):
    """A ResNet-18 without its classifier as ``backbone``, and a separate linear ``head``."""

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18(num_classes=4)
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(512, 4)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_a_backbone_plus_head_model_gets_the_backbones_stages():
    names, notes = _body_stages(_BackboneHead(), size=64)
    assert names == [
        "backbone.maxpool", "backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4",
        "backbone.avgpool",
    ]
    assert notes == ["head skipped: it is the classifier head (outputs the logits)"]


class _ChildrenCalledDirectly(nn.Module):
    """forward loops over ``self.backbone``'s children without ever calling ``self.backbone``."""

    def __init__(self):
        super().__init__()
        self.backbone = TinyGAPNet().features  # conv-bn-relu at 32 px, then two at 16 px
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        for block in self.backbone.children():
            x = block(x)
        return self.head(self.pool(x).flatten(1))


class _BlocksInAModuleList(nn.Module):
    """Blocks held in a ModuleList (which cannot be called), each a conv-BN-ReLU Sequential."""

    def __init__(self):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.blocks = nn.ModuleList([block(3, 8, 1), block(8, 16, 2), block(16, 16, 1), block(16, 32, 2)])
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def test_children_called_directly_are_found_from_the_recorded_calls():
    names, notes = _body_stages(_ChildrenCalledDirectly())
    assert names == ["backbone.2", "backbone.8", "pool"]
    assert notes == ["head skipped: it is the classifier head (outputs the logits)"]
    names, notes = _body_stages(_BlocksInAModuleList())
    # resolution levels 32, 16 (two blocks: the stride-2 one and the one after it) and 8
    assert names == ["blocks.0", "blocks.2", "blocks.3"]
    assert notes == ["head skipped: it is the classifier head (outputs the logits)"]


def test_a_residual_block_stays_whole_though_its_children_change_resolution():
    # torchvision's ResNet-50 bottleneck strides in conv2, so inside a block conv1 runs at the
    # input resolution; its shared ReLU runs three times, which keeps the block whole
    names, _ = _body_stages(torchvision.models.resnet50(num_classes=4), size=64)
    assert names == ["maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]


# -- the calibration anchor: the first convolution's output ----------------------------------------


def test_the_anchor_is_the_first_convolution_in_call_order():
    target = probed(TinyGAPNet())
    anchor, source = anchor_stage(target.layers)
    assert (anchor.name, source, anchor.output_shape) == ("features.0", "first convolution", (1, 8, 32, 32))
    assert anchor.depth == pytest.approx(1 / 12)  # the first of the 12 leaf modules
    # ResNet-18: the stem's conv1 (stride 2), before the first automatic stage (maxpool)
    target = probed(torchvision.models.resnet18(num_classes=4))
    assert anchor_stage(target.layers)[0].name == "conv1"
    assert anchor_stage(probed(Wrapped(TinyGAPNet())).layers)[0].name == "net.features.0"


def test_the_anchor_follows_the_call_order_not_the_definition_order():
    class Reordered(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(4, 4, 3, padding=1)
            self.early = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.late(self.early(x)).mean((2, 3)))

    assert anchor_stage(probed(Reordered()).layers)[0].name == "early"


def test_a_shared_convolution_is_not_the_anchor_the_next_one_is():
    class SharedStem(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.down = nn.Conv2d(3, 3, 3, stride=2, padding=1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(self.down(self.conv(self.conv(x))).mean((2, 3)))

    assert anchor_stage(probed(SharedStem()).layers)[0].name == "down"


def test_without_a_convolution_the_anchor_is_the_first_spatial_layer_else_none():
    no_conv = nn.Sequential(nn.Identity(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    anchor, source = anchor_stage(probed(no_conv).layers)
    assert (anchor.name, source) == ("1", "first spatial layer")  # not the pass-through Identity
    assert anchor_stage(probed(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))).layers) == (None, "")
