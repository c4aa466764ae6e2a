"""The proxy: its default network, building it from a spec, training on the target's answers,
and Jacobian-based augmentation with reservoir sampling."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditkit import UsageError
from auditkit_transfer.proxy import (
    ProxyResNet,
    Reservoir,
    TrainingLog,
    TrainingPlan,
    build_proxy,
    evaluate_agreement,
    jacobian_augmentation,
    soft_cross_entropy,
    train_proxy,
)


@pytest.mark.parametrize("side, feature_side", [(16, 4), (32, 8), (64, 8), (224, 14)])
def test_the_default_proxy_is_sized_for_the_input(side, feature_side):
    proxy = ProxyResNet(5, (3, side, side))
    x = torch.rand(2, 3, side, side)
    assert proxy(x).shape == (2, 5)
    assert proxy.stages(proxy.stem(x)).shape == (2, 64, feature_side, feature_side)
    assert sum(p.numel() for p in proxy.parameters()) == 77_392 + 65 * 5  # 64 weights + 1 bias per class


def test_build_proxy_from_specs():
    tv = build_proxy("torchvision:resnet18", 3, (3, 32, 32))
    assert tv(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert tv.target.mean_std[0] == pytest.approx((0.485, 0.456, 0.406))  # the Target's ImageNet normalization inside
    factory = build_proxy("auditkit.testing.models:tiny_factory", 6, (3, 16, 16))
    assert factory(torch.rand(2, 3, 16, 16)).shape == (2, 6)
    with pytest.raises(UsageError, match=r"setting proxy='torchvision:resnet19'.*did you mean"):
        build_proxy("torchvision:resnet19", 3, (3, 32, 32))


def test_soft_cross_entropy_on_one_hot_rows_is_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    expected = F.cross_entropy(logits, labels)
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(labels, 4).float()), expected)
    assert torch.allclose(soft_cross_entropy(logits, labels), expected)


# -- reservoir sampling --------------------------------------------------------------------------


def test_the_reservoir_keeps_everything_below_k_in_order():
    reservoir = Reservoir(10)
    reservoir.offer(torch.arange(4))
    reservoir.offer(torch.arange(4, 7))
    assert reservoir.items().tolist() == list(range(7)) and reservoir.offered == 7


def test_the_reservoir_keeps_k_distinct_rows_each_with_probability_k_over_n():
    n, k, trials = 10, 3, 3000
    generator = torch.Generator().manual_seed(0)
    kept = torch.zeros(n)
    for _ in range(trials):
        reservoir = Reservoir(k, generator)
        for start in range(0, n, 4):  # offered as a stream of batches
            reservoir.offer(torch.arange(start, min(start + 4, n)))
        items = reservoir.items()
        assert items.numel() == k and items.unique().numel() == k
        kept[items] += 1
    # each frequency is 0.3 with standard error 0.0084: within 4 standard errors
    assert torch.all((kept / trials - k / n).abs() < 0.034), kept / trials


def test_the_reservoir_is_deterministic_for_a_generator():
    def draw():
        reservoir = Reservoir(5, torch.Generator().manual_seed(3))
        reservoir.offer(torch.arange(100))
        return reservoir.items().tolist()

    assert draw() == draw()


# -- Jacobian-based augmentation -----------------------------------------------------------------


def test_jacobian_augmentation_steps_along_the_sign_of_the_labels_logit_gradient():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 4 * 4, 3)
    proxy = nn.Sequential(nn.Flatten(), linear)
    images = torch.rand(5, 3, 4, 4)
    labels = torch.tensor([0, 1, 2, 1, 0])
    new = jacobian_augmentation(proxy, images, labels, 0.1, k=5, batch_size=2)
    # d logit_y / dx = W[y] for a linear proxy
    expected = (images + 0.1 * linear.weight[labels].detach().sign().view(5, 3, 4, 4)).clamp(0, 1)
    assert torch.allclose(new, expected)
    # the negative step of Papernot's periodic schedule goes the other way
    back = jacobian_augmentation(proxy, images, labels, -0.1, k=5)
    assert torch.allclose(back, (images - 0.1 * linear.weight[labels].detach().sign().view(5, 3, 4, 4)).clamp(0, 1))
    # a budget of k keeps k of the new points, no more
    few = jacobian_augmentation(proxy, images, labels, 0.1, k=2, generator=torch.Generator().manual_seed(0))
    assert few.shape == (2, 3, 4, 4) and all(any(torch.equal(f, e) for e in expected) for f in few)
    assert jacobian_augmentation(proxy, images, labels, 0.1, k=0) is None


# -- training ------------------------------------------------------------------------------------


def _mean_colour_task(n: int, seed: int):
    """Images whose label is their brightest mean channel: easy to imitate."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + torch.rand(n, 3, 1, 1, generator=g) * 0.5
    return images, images.mean(dim=(2, 3)).argmax(1)


def test_training_imitates_a_simple_target_deterministically():
    images, labels = _mean_colour_task(192, seed=0)
    val_images, val_labels = _mean_colour_task(64, seed=1)

    def train(seed):
        torch.manual_seed(seed)
        proxy = ProxyResNet(3, (3, 8, 8), width=8)
        plan = TrainingPlan(epochs=12, batch_size=32, lr=1e-2, patience=0)
        _, log = train_proxy(proxy, images, F.one_hot(labels, 3).float(), plan, val_images=val_images, val_labels=val_labels,
                             generator=torch.Generator().manual_seed(seed))
        return proxy, log

    proxy, log = train(0)
    agreement, _ = evaluate_agreement(proxy, val_images, val_labels)
    assert agreement >= 0.9 and agreement == max(log.val_agreement)  # the best epoch's weights are kept
    assert log.epochs == [12] and log.stopped == ["epochs"] and log.images_seen == 12 * 192
    assert not proxy.training
    again, _ = train(0)
    assert all(torch.equal(a, b) for a, b in zip(proxy.state_dict().values(), again.state_dict().values()))


def test_training_stops_on_a_plateau_and_at_the_deadline():
    images, labels = _mean_colour_task(32, seed=0)
    proxy = ProxyResNet(3, (3, 8, 8), width=4)
    # a validation set the proxy cannot fit (labels unrelated to the images): agreement stalls
    val_labels = torch.arange(16) % 3
    plan = TrainingPlan(epochs=50, batch_size=16, patience=2)
    _, log = train_proxy(proxy, images, labels, plan, val_images=torch.rand(16, 3, 8, 8), val_labels=val_labels)
    assert log.stopped == ["plateau"] and log.epochs[0] < 50
    late = TrainingPlan(epochs=5, deadline=time.monotonic() - 1)
    _, log = train_proxy(proxy, images, labels, late, log=TrainingLog(epochs=[1], stopped=["plateau"]))
    assert log.epochs == [1, 0] and log.stopped == ["plateau", "time"]
