"""Target: when no GAP head is detected, the reason says precisely what the head is instead
(issue #14, 8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from auditkit.session import _missing_reason
from auditkit.target import Target
from auditkit.testing.models import TinyFCNet, TinyGAPNet


def _probe(model: nn.Module, size: int = 32) -> Target:
    target = Target(model)
    with target:
        target.probe(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return target


class FunctionalGapNet(TinyGAPNet):
    """Pools with F.adaptive_avg_pool2d inside forward: no pooling module runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class ConvHeadNet(nn.Module):
    """Classifies with a 1x1 convolution on the pooled map, as SqueezeNet-like heads do."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x))).flatten(1)


FUNCTIONAL = (
    "the pooling is functional (F.adaptive_avg_pool2d or a mean over H, W inside forward, after 'features'): "
    "there is no pooling module whose input is the feature map f_k(i,j) that CAM needs"
)


def test_densenet_pools_functionally():
    torch.manual_seed(0)
    target = _probe(torchvision.models.densenet121(num_classes=4), size=64)
    assert target.gap_head is None and "gap_head" not in target.capabilities
    assert target.gap_head_reason == FUNCTIONAL
    assert target.describe()["gap_head_reason"] == FUNCTIONAL


def test_a_functional_gap_model_is_named_as_such():
    torch.manual_seed(0)
    target = _probe(FunctionalGapNet(num_classes=4))
    assert target.gap_head is None and target.gap_head_reason == FUNCTIONAL
    assert _missing_reason(["gap_head"], target) == (
        f"the model has no global-average-pooling + single linear head: {FUNCTIONAL}"
    )


@pytest.mark.parametrize(
    "model, size, linears",
    [(lambda: TinyFCNet(num_classes=4), 32, 2), (lambda: torchvision.models.alexnet(num_classes=4), 64, 3)],
)
def test_a_fully_connected_head_counts_its_linear_layers(model, size, linears):
    torch.manual_seed(0)
    target = _probe(model(), size=size)
    assert target.gap_head_reason == f"the head has {linears} linear layers (a fully connected head, as AlexNet's)"


def test_a_convolutional_classifier_is_not_linear():
    target = _probe(ConvHeadNet())
    assert target.gap_head_reason == "the last layer is Conv2d ('classifier'), not Linear"


@pytest.mark.parametrize(
    "between, kind",
    [(nn.LayerNorm(4), "a norm (LayerNorm '3')"), (nn.ReLU(), "a nonlinearity (ReLU '3')")],
)
def test_a_layer_between_pooling_and_linear_is_named(between, kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), between, nn.Linear(4, 3))
    target = _probe(model)
    assert target.gap_head is None
    assert target.gap_head_reason == f"{kind} sits between the pooling '1' and the linear layer '4'"


def test_max_pooling_is_not_average_pooling():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    target = _probe(model)
    assert target.gap_head_reason == "the pooling '1' is AdaptiveMaxPool2d with output [4, 1, 1], not global average pooling to 1x1"


def test_a_gap_head_has_no_reason():
    target = _probe(TinyGAPNet(num_classes=4))
    assert target.gap_head is not None and target.gap_head_reason is None
    assert "gap_head_reason" not in target.describe()
    assert _missing_reason(["gap_head"], Target(TinyGAPNet())) == "the model has no global-average-pooling + single linear head"
