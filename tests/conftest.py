"""Shared fixtures: tiny data and models, so the suite stays fast on 2 CPU cores."""
from __future__ import annotations

import os

# Idle OpenMP threads spin-wait by default; on a shared or loaded 2-core machine that makes
# small tensor ops many times slower. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import atexit
import shutil
import tempfile

# The suite never writes to the user's home: auditkit's training cache and torch's hub cache
# point at a folder of this run's own, removed when the run ends. Set before anything
# imports torch, so subprocesses and the pytester runs inherit it too.
_SCRATCH = tempfile.mkdtemp(prefix="auditkit-tests-")
os.environ["AUDITKIT_CACHE_DIR"] = os.path.join(_SCRATCH, "auditkit-cache")
os.environ["TORCH_HOME"] = os.path.join(_SCRATCH, "torch-home")
os.environ["XDG_CACHE_HOME"] = os.path.join(_SCRATCH, "xdg-cache")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
# Nothing in the suite may download: pretrained weights come from checkpoints tests make.
os.environ["AUDITKIT_OFFLINE"] = "1"

import pytest
import torch

from auditkit import AuditData, TensorSplit

pytest_plugins = ["pytester"]

torch.set_num_threads(min(torch.get_num_threads(), 2))


def make_tiny_data(n: int = 24, size: int = 32, classes: int = 4, seed: int = 0, boxes: bool = False) -> AuditData:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = torch.arange(n) % classes
    box_t = mask_t = None
    if boxes:
        box_t = torch.tensor([[4.0, 4.0, size / 2, size / 2]]).repeat(n, 1)
        mask_t = torch.zeros(n, size, size, dtype=torch.bool)
        mask_t[:, 4 : size // 2, 4 : size // 2] = True
    train = TensorSplit(torch.rand(2 * n, 3, size, size, generator=g), torch.arange(2 * n) % classes)
    return AuditData(
        "tiny", TensorSplit(images, labels, box_t, mask_t), train, num_classes=classes,
        has_boxes=boxes, has_masks=boxes,
    )


@pytest.fixture
def tiny_data() -> AuditData:
    return make_tiny_data()


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    from auditkit.testing.models import TinyGAPNet

    torch.manual_seed(0)
    return TinyGAPNet(num_classes=4)
