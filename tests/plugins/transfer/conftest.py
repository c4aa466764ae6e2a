"""Fixtures for the transfer plugin: small CNN targets with varied answers (one with random
weights, its head rescaled so every class is answered; one trained on an easy task), and
16x16 shapes labelled by them."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from auditkit import AuditData, TensorSplit
from auditkit.data.loaders import load_data
from auditkit.testing.models import TinyGAPNet

SHAPES = "synthetic:shapes?n=32&train=128&size=16&classes=4&seed=0&background=plain"

# Small settings for audits in tests: one attack, one budget per norm, few epochs.
FAST = {
    "query_budget": 96,
    "seed_size": 48,
    "augment_rounds": 1,
    "epochs_per_round": 4,
    "attacks": ["pgd"],
    "modes": ["untargeted"],
    "linf_epsilons": ["8/255"],
    "l2_epsilons": [1.0],
    "steps": 3,
}


@contextlib.contextmanager
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two
    threads per process spin against each other: these tests compute on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def standardized_cnn(calibration: torch.Tensor, num_classes: int = 4, seed: int = 0, temperature: float = 4.0) -> TinyGAPNet:
    """A TinyGAPNet with random weights whose head is rescaled so each class logit has mean 0
    and standard deviation ``temperature`` on ``calibration``, then whose biases are nudged
    until each class is the answer for about as many calibration images: unlike a plain
    random network, which answers one class for everything, it spreads its answers."""
    torch.manual_seed(seed)
    net = TinyGAPNet(num_classes=num_classes, width=8).eval()
    with torch.no_grad(), single_thread():
        logits = net(calibration)
        mean, std = logits.mean(0), logits.std(0).clamp_min(1e-6)
        net.fc.weight.mul_(temperature / std[:, None])
        net.fc.bias.copy_((net.fc.bias - mean) * temperature / std)
        for _ in range(50):
            share = net(calibration).argmax(1).bincount(minlength=num_classes).float() / len(calibration)
            net.fc.bias.sub_(0.5 * torch.log((share * num_classes).clamp_min(0.1)))
    return net


@pytest.fixture(scope="session")
def shapes() -> AuditData:
    return load_data(SHAPES)


@pytest.fixture(scope="session")
def target_cnn(shapes) -> TinyGAPNet:
    return standardized_cnn(shapes.train.images)


def labelled_by(model, data: AuditData) -> AuditData:
    """``data`` with the labels replaced by ``model``'s own answers (and its number of classes):
    every evaluation image is answered correctly, so every one is attacked."""
    with torch.no_grad(), single_thread():
        eval_logits = model(data.eval.images)
        train_labels = model(data.train.images).argmax(1)
    return AuditData(
        f"{data.name} labelled by the target", TensorSplit(data.eval.images, eval_logits.argmax(1)),
        TensorSplit(data.train.images, train_labels), num_classes=eval_logits.shape[1], spec=data.spec,
    )


@pytest.fixture(scope="session")
def labelled_by_target(shapes, target_cnn) -> AuditData:
    return labelled_by(target_cnn, shapes)


def dominant_colour(images: torch.Tensor) -> torch.Tensor:
    """The task the trained target learns: which channel is brightest on average (3 classes)."""
    return images.mean(dim=(2, 3)).argmax(1)


@pytest.fixture(scope="session")
def colour_cnn() -> TinyGAPNet:
    """A TinyGAPNet trained for 60 steps to tell the dominant colour of shapes images (about
    90% right on held-out images): a small, real target whose answers follow the images."""
    images = load_data(SHAPES.replace("train=128", "train=256")).train.images
    labels = dominant_colour(images)
    torch.manual_seed(0)
    net = TinyGAPNet(num_classes=3, width=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    with single_thread():
        for _ in range(60):
            idx = torch.randint(0, len(images), (64,))
            loss = F.cross_entropy(net(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()
