"""Hand-set models whose inversions have known answers, and small synthetic data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from auditkit.data.loaders import load_data


def _sign_split(channels: int) -> torch.Tensor:
    """1x1 conv weights [I; -I]: after a ReLU, (relu(x), relu(-x)) keeps x exactly."""
    return torch.cat([torch.eye(channels), -torch.eye(channels)]).view(2 * channels, channels, 1, 1)


def _average_2x2(channels: int) -> torch.Tensor:
    """2x2 stride-2 conv weights that average each channel over 2x2 blocks (a 2x downsampling)."""
    w = torch.zeros(channels, channels, 2, 2)
    for c in range(channels):
        w[c, c] = 0.25
    return w


class IdentityThenPool(nn.Module):
    """``conv``: a 1x1 convolution with identity weights (the output is the input);
    ``pool``: 8x8 average pooling of it (an 8x-downsampled thumbnail); then a linear head."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.pool = nn.AvgPool2d(8)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * (size // 8) ** 2, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.conv(x))))


class IdentityThenDownsample(nn.Module):
    """``conv``: a 1x1 identity convolution, a stage of its own (the next convolution halves the
    resolution); ``down`` + ``relu``: 2x2 block means of it (a half-resolution thumbnail, >= 0
    for images in [0,1]); then global pooling and a linear head. The automatic stages start at
    ``conv``, the anchor itself."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.down = nn.Conv2d(3, 3, 2, stride=2, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.down.weight.copy_(_average_2x2(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.down(self.conv(x))))))


class StagedNet(nn.Module):
    """Four stages whose information content is known, for images in [0,1]:
    ``features.1`` = (x, 0) exactly (invertible), ``features.3`` = x averaged over 2x2 blocks,
    ``features.5`` = over 4x4 blocks, ``pool`` = the mean colour; then a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 1, bias=False), nn.ReLU(),
            nn.Conv2d(6, 6, 2, stride=2, bias=False), nn.ReLU(),
            nn.Conv2d(6, 6, 2, stride=2, bias=False), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.features[0].weight.copy_(_sign_split(3))
            self.features[2].weight.copy_(_average_2x2(6))
            self.features[4].weight.copy_(_average_2x2(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class DeepInvertibleNet(nn.Module):
    """Eight layers that all keep the image exactly ((relu(x), relu(-x)) passed through
    [[I, -I], [-I, I]] 1x1 convolutions and ReLUs), then global pooling and a linear head:
    the deep ``features`` stage leaks the input completely."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 6, 1, bias=False), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Conv2d(6, 6, 1, bias=False), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.features[0].weight.copy_(_sign_split(3))
            swap = torch.cat([torch.cat([torch.eye(3), -torch.eye(3)], 1), torch.cat([-torch.eye(3), torch.eye(3)], 1)])
            for conv in self.features[2::2]:
                conv.weight.copy_(swap.view(6, 6, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv(x))


class ResidualNet(nn.Module):
    """A stem, a residual block (a skip connection around ``block.conv``), a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = ResidualBlock(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.block(self.stem(x)))))


class QuantizedInputNet(StagedNet):
    """A :class:`StagedNet` that rounds its input to 4 grey levels first: every gradient with
    respect to the pixels is zero, so no inversion can make progress (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.round(x * 3) / 3)


@pytest.fixture(scope="session")
def shapes16():
    """Four 16x16 synthetic-shapes images (with clutter), 4 classes."""
    return load_data("synthetic:shapes?n=4&size=16&classes=4&seed=0")


@pytest.fixture(scope="session")
def staged_net_class() -> type[StagedNet]:
    """The class, for module-scoped fixtures that build their own."""
    return StagedNet


@pytest.fixture
def staged_net() -> StagedNet:
    torch.manual_seed(0)
    return StagedNet()


@pytest.fixture
def identity_then_pool() -> IdentityThenPool:
    torch.manual_seed(0)
    return IdentityThenPool()


@pytest.fixture
def identity_then_downsample() -> IdentityThenDownsample:
    torch.manual_seed(0)
    return IdentityThenDownsample()


@pytest.fixture
def deep_invertible_net() -> DeepInvertibleNet:
    torch.manual_seed(0)
    return DeepInvertibleNet()


@pytest.fixture
def residual_net() -> ResidualNet:
    torch.manual_seed(0)
    return ResidualNet()


@pytest.fixture
def quantized_input_net() -> QuantizedInputNet:
    torch.manual_seed(0)
    return QuantizedInputNet()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run these tests on one CPU thread. Their tensors are tiny, so a second thread only adds
    synchronisation; on a shared, loaded 2-core machine it made this folder 15x slower
    (measured: ~150 s with 2 threads against ~10 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
