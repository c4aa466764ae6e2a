"""Fixtures for the gradcam tests: synthetic shapes with the corner marker on every image, a
net trained on them once per session (about a second) and a model built to look at the object."""
from __future__ import annotations

import pytest
import torch

from auditkit.data.synthetic import make_shapes
from gradcam_models import ObjectnessNet, train_shortcut_model


@pytest.fixture(scope="session")
def marked_shapes():
    """128 evaluation and 256 training images, 32x32, plain backgrounds, every image with its
    class's corner marker (spurious=1: the marker predicts the class perfectly)."""
    return make_shapes(n=128, n_train=256, size=32, classes=4, seed=3, spurious=1.0, background="plain")


@pytest.fixture(scope="session")
def shortcut_model(marked_shapes):
    # One thread: on a shared 2-core machine, two threads on these tiny batches mostly wait
    # for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_shortcut_model(marked_shapes)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def object_model():
    return ObjectnessNet(num_classes=4, size=32)
