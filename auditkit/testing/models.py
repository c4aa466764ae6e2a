"""Tiny image classifiers for tests and plugin authors: fast on CPU at 32x32 or 64x64 inputs,
each with one trait a check must handle (a GAP head, an FC head, odd outputs, NaN logits)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "DictOutputNet",
    "NaNNet",
    "TinyFCNet",
    "TinyGAPNet",
    "TupleOutputNet",
    "Wrapped",
    "tiny_factory",
]


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class TinyGAPNet(nn.Module):
    """Three conv+BN+ReLU blocks, then global average pooling, flatten and one linear layer.

    The head is exactly the class-activation-map shape (``pool`` -> ``flatten`` -> ``fc``), so
    :class:`auditkit.target.Target` detects it as a GAP head and the CAM identity holds.
    Accepts any input size of at least 4x4; feature map ``features`` is [B, 2*width, H/2, W/2].

    Args:
        num_classes: size of the logits.
        width: channels of the first block (the last two have ``2 * width``).
    """

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, width),
            *_conv_bn_relu(width, 2 * width, stride=2),
            *_conv_bn_relu(2 * width, 2 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map [B, 2*width, H/2, W/2], before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class TinyFCNet(nn.Module):
    """An AlexNet-shaped classifier in miniature: two conv+ReLU+max-pool blocks, then flatten
    and two linear layers with dropout between them (a fully connected head, no GAP head).

    The first linear layer's size depends on the input, so the model only accepts
    ``input_size`` x ``input_size`` images.

    Args:
        num_classes: size of the logits.
        width: channels of the first block (the second has ``2 * width``).
        input_size: height and width of the images it accepts; a multiple of 4.
    """

    def __init__(self, num_classes: int = 4, width: int = 8, input_size: int = 32):
        super().__init__()
        if input_size % 4 or input_size < 4:
            raise ValueError(f"input_size must be a positive multiple of 4, got {input_size}")
        self.input_size = input_size
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Dropout(0.5),
            nn.Linear(2 * width * side * side, 4 * width),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TupleOutputNet(TinyGAPNet):
    """A :class:`TinyGAPNet` whose forward returns ``(logits, features)``, like models with
    auxiliary outputs; the logits come first."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        features = self.features(x)
        return self.fc(self.flatten(self.pool(features))), features


class DictOutputNet(TinyGAPNet):
    """A :class:`TinyGAPNet` whose forward returns ``{"logits": ..., "features": ...}``, like
    Hugging Face-style models."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        features = self.features(x)
        return {"logits": self.fc(self.flatten(self.pool(features))), "features": features}


class NaNNet(TinyGAPNet):
    """A :class:`TinyGAPNet` whose logits are all NaN (still attached to the graph), for
    testing that checks report a broken model instead of crashing or passing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


class Wrapped(nn.Module):
    """A network held as the one child ``net`` of a wrapper without parameters of its own, as
    users often write models: checks must see through it to the same blocks and verdicts as
    for ``net`` alone (:attr:`auditkit.Target.body`)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_factory(num_classes: int = 4) -> nn.Module:
    """A fresh :class:`TinyGAPNet`; usable as the model spec
    ``auditkit.testing.models:tiny_factory``."""
    return TinyGAPNet(num_classes=num_classes)
