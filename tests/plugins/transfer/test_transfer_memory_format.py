"""Memory layout and gradients on the proxy's side of a transfer attack: a channels_last proxy
and permuted (non-contiguous) images craft what the contiguous ones craft, training hands the
proxy back contiguous, targeted success never counts the reference class, and a proxy without
input gradients is refused with the session's one message."""
from __future__ import annotations

import copy
import re
import textwrap

import pytest
import torch
from torch import nn

import auditkit
from auditkit import Outcome, Target, TargetError
from auditkit.target import NO_INPUT_GRADIENT
from auditkit_transfer.attacks import AttackConfig, TransferMeasurement, craft
from auditkit_transfer.check import Oracle
from auditkit_transfer.proxy import ProxyResNet, TrainingPlan, require_input_gradient, train_proxy
from conftest import FAST

CONFIGS = [AttackConfig(a, n, e) for a, n, e in [
    ("fgsm", "linf", 8 / 255), ("pgd", "linf", 8 / 255), ("mifgsm", "linf", 8 / 255), ("fgsm", "l2", 0.5), ("pgd", "l2", 0.5),
]]


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _permuted(images: torch.Tensor) -> torch.Tensor:
    out = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not out.is_contiguous() and torch.equal(out, images)
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_a_channels_last_proxy_and_permuted_images_craft_the_same_examples(config, target_cnn, shapes):
    images, labels = shapes.eval.images[:8], torch.arange(8) % 4
    proxy = copy.deepcopy(target_cnn)
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_channels_last(proxy)(x).sum(), x)
    assert not grad.is_contiguous()  # what broke torchattacks' L2 .view before
    torch.manual_seed(0)
    expected = craft(proxy, config, images, labels, steps=3, targeted=False)
    torch.manual_seed(0)
    proxy_cl = _channels_last(proxy).eval()
    got = craft(proxy_cl, config, _permuted(images), labels, steps=3, targeted=False)
    assert got.is_contiguous()
    assert not any(m.training for m in proxy_cl.modules())  # left in eval mode, as found
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_the_measurement_counts_the_same_on_a_channels_last_proxy(target_cnn, labelled_by_target):
    images, reference = labelled_by_target.eval.images[:12], labelled_by_target.eval.labels[:12]
    wanted = (reference + 1) % 4
    counts = []
    for proxy, x in ((copy.deepcopy(target_cnn), images), (_channels_last(target_cnn), _permuted(images))):
        oracle = Oracle(Target(target_cnn), batch_size=64, num_classes=4)
        measurement = TransferMeasurement(proxy, oracle, CONFIGS, steps=3, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        measurement.add(x, reference, wanted)
        counts.append(measurement.counts)
    assert counts[0] == counts[1]
    assert counts[0][("transfer_success", "pgd_l2_0.5")][1] > 0  # the attack does something


def test_training_hands_the_proxy_back_contiguous(shapes):
    torch.manual_seed(0)
    proxy = ProxyResNet(4, (3, 16, 16), width=4).to(memory_format=torch.channels_last)
    assert not proxy.stem[0].weight.is_contiguous()
    images = shapes.train.images[:16]
    train_proxy(proxy, images, torch.arange(16) % 4, TrainingPlan(epochs=1, batch_size=8))
    four_d = [p for p in proxy.parameters() if p.ndim == 4]
    assert four_d and all(p.is_contiguous() for p in four_d)


def test_a_targeted_success_never_counts_the_reference_class(target_cnn, labelled_by_target):
    """A wanted class equal to the reference (the target's right answer) would count every image
    the attack leaves alone as a success; it counts none."""
    images, reference = labelled_by_target.eval.images[:8], labelled_by_target.eval.labels[:8]
    oracle = Oracle(Target(target_cnn), batch_size=64, num_classes=4)
    measurement = TransferMeasurement(
        copy.deepcopy(target_cnn), oracle, [AttackConfig("fgsm", "linf", 1 / 255)], modes=("targeted",), steps=1,
    )
    measurement.add(images, reference, wanted=reference.clone())
    hits, proxy_hits, n = measurement.counts[("targeted_success", "fgsm_linf_1/255")]
    assert (hits, proxy_hits, n) == (0, 0, 8)


class _DetachedInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))

    def forward(self, x):
        return self.net(x.detach())


def test_a_proxy_without_input_gradients_is_refused_with_the_sessions_message(shapes):
    example = shapes.eval.images[:2]
    require_input_gradient(ProxyResNet(4, (3, 16, 16)), example, "resnet")  # the default proxy has them
    proxy = _DetachedInput().train()
    with pytest.raises(TargetError, match=re.escape(f"the proxy 'mine': {NO_INPUT_GRADIENT}")):
        require_input_gradient(proxy, example, "mine")
    assert proxy.training  # its mode is left as found


def test_the_check_errors_cleanly_on_such_a_proxy(tmp_path, target_cnn, labelled_by_target):
    (tmp_path / "detached_proxy.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class DetachedInput(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, num_classes))

            def forward(self, x):
                return self.net(x.detach())

        def factory(num_classes=4):
            return DetachedInput(num_classes)
    '''))
    spec = f"{tmp_path / 'detached_proxy.py'}:factory"
    result = auditkit.audit(
        target_cnn, labelled_by_target, checks=["transfer.proxy"], settings={"transfer.proxy": {**FAST, "proxy": spec}}
    )["transfer.proxy"]
    assert result.outcome is Outcome.ERROR
    assert result.message == f"the proxy {spec!r}: {NO_INPUT_GRADIENT}"
