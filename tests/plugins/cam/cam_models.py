"""Models shared by the CAM tests: GAP + linear heads with planted traits."""
from __future__ import annotations

import torch
from torch import nn


class SignedGAPNet(nn.Module):
    """conv-BN-ReLU then a plain conv, so the feature map (the pool's input) has both signs;
    then pool -> flatten -> fc, which the structural detector accepts as a GAP head."""

    def __init__(self, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(width, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))
