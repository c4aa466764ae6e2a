"""Crafting on the proxy and replaying on the target: budgets, metric names, intervals, and the
known answers: a proxy identical to the target transfers almost always, noise rarely."""
from __future__ import annotations

import copy

import pytest
import torch

from auditkit import Target
from auditkit_transfer.attacks import (
    AttackConfig,
    TransferMeasurement,
    craft,
    random_noise,
    random_other_class,
    threat_key,
)
from auditkit_transfer.check import Oracle


@pytest.mark.parametrize(
    "norm, eps, key",
    [("linf", 8 / 255, "linf_8/255"), ("linf", 1 / 255, "linf_1/255"), ("linf", 0.01, "linf_0.01"), ("l2", 0.5, "l2_0.5"), ("l2", 1.0, "l2_1")],
)
def test_threat_keys_are_stable_names(norm, eps, key):
    assert threat_key(norm, eps) == key
    assert AttackConfig("pgd", norm, eps).key == f"pgd_{key}"


def test_random_noise_has_exactly_the_attack_size():
    images = torch.full((4, 3, 8, 8), 0.5)  # far from the [0, 1] walls: nothing is clipped
    linf = random_noise(images, "linf", 8 / 255, torch.Generator().manual_seed(0)) - images
    assert torch.allclose(linf.abs(), torch.full_like(linf, 8 / 255))
    l2 = random_noise(images, "l2", 0.5, torch.Generator().manual_seed(0)) - images
    assert torch.allclose(l2.flatten(1).norm(dim=1), torch.full((4,), 0.5))


def test_random_other_class_never_draws_the_reference():
    reference = torch.arange(400) % 4
    drawn = random_other_class(reference, 4, torch.Generator().manual_seed(0))
    assert not torch.any(drawn == reference) and set(drawn.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("config", [AttackConfig(a, n, e) for a, n, e in [
    ("fgsm", "linf", 4 / 255), ("pgd", "linf", 4 / 255), ("mifgsm", "linf", 4 / 255), ("fgsm", "l2", 0.5), ("pgd", "l2", 0.5),
]], ids=lambda c: c.key)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_crafted_images_stay_in_the_ball_and_in_range(config, targeted, target_cnn, shapes):
    images = shapes.eval.images[:8]
    labels = torch.arange(8) % 4
    adv = craft(copy.deepcopy(target_cnn), config, images, labels, steps=3, targeted=targeted)
    delta = (adv - images).flatten(1)
    size = delta.abs().max(dim=1).values if config.norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= config.eps + 1e-5) and torch.all(size > 0)
    assert adv.min() >= 0 and adv.max() <= 1


def test_a_proxy_identical_to_the_target_transfers_almost_always_and_noise_rarely(target_cnn, labelled_by_target):
    images, reference = labelled_by_target.eval.images, labelled_by_target.eval.labels  # the target's own answers
    oracle = Oracle(Target(target_cnn), batch_size=64, num_classes=4)
    # budgets at which white-box PGD fools this small CNN on (nearly) every image
    configs = [AttackConfig("pgd", "linf", 16 / 255), AttackConfig("fgsm", "linf", 16 / 255), AttackConfig("pgd", "l2", 1.0)]
    measurement = TransferMeasurement(
        copy.deepcopy(target_cnn), oracle, configs, modes=("untargeted",), steps=10,
        noise=[("linf", 16 / 255), ("l2", 1.0)], generator=torch.Generator().manual_seed(0),
    )
    measurement.add(images, reference)
    n = len(images)
    assert measurement.n_images == n and oracle.count == (len(configs) + 2) * n
    for config in configs:
        hits, proxy_hits, count = measurement.counts[("transfer_success", config.key)]
        assert hits == proxy_hits and count == n  # the same function: the target answers exactly as the proxy
    assert measurement.rate("transfer_success", "pgd_linf_16/255") >= 0.95
    assert measurement.rate("transfer_success", "pgd_l2_1") >= 0.9
    # noise of the same size: the largest Linf noise (every pixel +-16/255) and a random L2 direction
    assert measurement.rate("noise_success", "linf_16/255") <= 0.2
    assert measurement.rate("noise_success", "l2_1") <= 0.1


def test_targeted_examples_from_an_identical_proxy_reach_their_class(target_cnn, labelled_by_target):
    images, reference = labelled_by_target.eval.images[:16], labelled_by_target.eval.labels[:16]
    wanted = random_other_class(reference, 4, torch.Generator().manual_seed(1))
    oracle = Oracle(Target(target_cnn), batch_size=64, num_classes=4)
    measurement = TransferMeasurement(copy.deepcopy(target_cnn), oracle, [AttackConfig("pgd", "linf", 32 / 255)], modes=("targeted",), steps=20)
    measurement.add(images, reference, wanted)
    hits, proxy_hits, _ = measurement.counts[("targeted_success", "pgd_linf_32/255")]
    assert hits == proxy_hits and hits >= 14
    with pytest.raises(ValueError, match="targeted mode needs the wanted classes"):
        measurement.add(images, reference)
