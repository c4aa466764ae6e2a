"""Fixtures for the white-box checks: a linear model with known minimal perturbations, a small
CNN trained in a second on bright-quadrant images, and the images it is audited on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from auditkit import AuditData, TensorSplit
from whitebox_models import LinearProblem, SmallCNN, quadrant_images


@pytest.fixture(scope="session")
def quadrant_cnn() -> SmallCNN:
    """A SmallCNN trained to 100% on quadrant images (eval mode; tests that need another mode
    set it on a copy)."""
    torch.manual_seed(0)
    model = SmallCNN()
    images, labels = quadrant_images(256, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        idx = torch.randint(0, len(images), (64,))
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture(scope="session")
def quadrants() -> AuditData:
    images, labels = quadrant_images(16, seed=2)
    return AuditData("quadrants", TensorSplit(images, labels), num_classes=4)


@pytest.fixture(scope="session")
def linear_problem() -> LinearProblem:
    return LinearProblem()
