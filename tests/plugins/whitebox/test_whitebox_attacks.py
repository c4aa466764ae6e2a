"""The torchattacks bridge: budget labels, the Target as a module, per-image budgets, restarts,
minimal-epsilon bisection and confidence intervals, against exact answers."""
from __future__ import annotations

import math
import re

import pytest
import scipy.stats
import torch
import torchattacks
from torch import nn

from auditkit import Target, TargetError
from auditkit.attacks import LogitsModule
from auditkit.target import NO_INPUT_GRADIENT
from auditkit_whitebox.attacks import (
    AttackSpec,
    budget_label,
    input_gradient,
    least_likely_class,
    minimal_epsilon,
    parse_budget,
    perturb,
    random_wrong_class,
    run_attack,
)
from auditkit_whitebox.robustness import median


@pytest.mark.parametrize(
    "norm, eps, label",
    [("linf", 1 / 255, "linf_1/255"), ("linf", 8 / 255, "linf_8/255"), ("linf", 0.01, "linf_0.01"),
     ("l2", 0.25, "l2_0.25"), ("l2", 1.0, "l2_1"), ("linf", 1.0, "linf_255/255")],
)
def test_budget_labels_are_stable_and_read_back(norm, eps, label):
    assert budget_label(norm, eps) == label
    back_norm, back_eps = parse_budget(label)
    assert back_norm == norm and back_eps == pytest.approx(eps, rel=1e-6)


def test_parse_budget_accepts_bare_forms_and_rejects_junk():
    assert parse_budget("8/255") == ("linf", pytest.approx(8 / 255))
    assert parse_budget("0.03") == ("linf", 0.03)
    assert parse_budget("l2_1e-05") == ("l2", 1e-05)
    with pytest.raises(ValueError, match="expected e.g. 'linf_8/255'"):
        parse_budget("linf-eight")
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        budget_label("l1", 0.1)


def test_median_handles_even_counts_and_unfooled_images():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert median([1.0, math.inf, math.inf]) == math.inf
    assert median([1.0, 2.0, math.inf]) == 2.0
    assert math.isnan(median([]))


def test_target_choices():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(1000) % 5
    targets = random_wrong_class(labels, 5, g)
    assert bool((targets != labels).all()) and set(targets.tolist()) == set(range(5))
    # uniform over the four wrong classes: each class is drawn for 1/4 of the 800 labels that
    # are not it, 200 times (sd ~12.6), and pairs (label, target) are equally likely
    counts = torch.bincount(targets, minlength=5)
    assert int(counts.min()) > 150 and int(counts.max()) < 250
    pairs = torch.bincount(labels * 5 + targets, minlength=25).reshape(5, 5)
    assert scipy.stats.chisquare(pairs[~torch.eye(5, dtype=torch.bool)].numpy()).pvalue > 1e-3
    logits = torch.tensor([[0.0, -3.0, 2.0], [5.0, 1.0, -1.0]])
    assert least_likely_class(logits, torch.tensor([2, 0])).tolist() == [1, 2]
    # the least likely class is never the label itself, even where the label's logit is lowest
    assert least_likely_class(logits, torch.tensor([1, 2])).tolist() == [0, 1]
    # tied logits (a constant model): the lowest index other than the label, deterministically
    tied = torch.zeros(4, 3)
    assert least_likely_class(tied, torch.tensor([0, 1, 2, 0])).tolist() == [1, 0, 0, 1]


class _ModeRecorder(nn.Module):
    """Records its training flag at every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return self.body(x)


def test_torchattacks_never_reaches_the_users_model():
    model = _ModeRecorder()
    model.train()  # torchattacks would switch a model it can see to eval and back
    module = LogitsModule(Target(model))
    assert list(module.children()) == [] and [p.numel() for p in module.parameters()] == [0]
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    out = run_attack(module, AttackSpec("pgd", "linf", steps=3, random_start=True), x, y, 0.1)
    assert model.seen and all(model.seen), "the user's model changed mode during the attack"
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters()), "the attack left .grad on the model"
    assert all(p.requires_grad for p in model.parameters())
    assert out.adversarial.shape == x.shape and out.logits.shape == (4, 3)


@pytest.mark.parametrize(
    "spec",
    [AttackSpec("fgsm", "linf"), AttackSpec("fgsm", "l2"),
     AttackSpec("pgd", "linf", steps=4), AttackSpec("pgd", "l2", steps=4)],
    ids=lambda s: f"{s.method}-{s.norm}",
)
def test_per_image_budgets_equal_separate_runs(spec):
    """Bisection passes a tensor of budgets into torchattacks; each image must get exactly
    what a run with its own scalar budget gives (this guards the torchattacks internals)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    module = LogitsModule(Target(model.eval()))
    x, y = torch.rand(3, 3, 6, 6), torch.tensor([0, 1, 2])
    eps = torch.tensor([0.01, 0.05, 0.2]) * (1 if spec.norm == "linf" else 10)
    together = perturb(module, spec, x, y, eps)
    for i in range(3):
        alone = perturb(module, spec, x[i : i + 1], y[i : i + 1], float(eps[i]))
        assert torch.allclose(together[i], alone[0], atol=1e-6)
    delta = (together - x).flatten(1)
    size = delta.abs().amax(1) if spec.norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-5)).all())
    with pytest.raises(ValueError, match="random_start=False"):
        perturb(module, AttackSpec("pgd", "linf", random_start=True), x, y, eps)


def test_restarts_attack_only_survivors_and_keep_any_success(linear_problem):
    p = linear_problem
    module = LogitsModule(Target(p.model))
    eps = sorted(p.min_linf)[len(p.min_linf) // 2]  # half the images can be fooled at this budget
    calls = []
    original = module.forward

    def counting(x):
        calls.append(x.shape[0])
        return original(x)

    module.forward = counting
    # 5 steps of eps/2 reach the optimal corner from any random start (2 eps away at most)
    spec = AttackSpec("pgd", "linf", steps=5, rel_step_size=0.5, random_start=True, restarts=3)
    out = run_attack(module, spec, p.images, p.labels, eps * 1.001)
    expected = torch.tensor(p.min_linf) < eps * 1.001
    assert out.success.tolist() == expected.tolist()
    survivors = int((~expected).sum())
    # first restart: every image (5 steps + 1 scoring pass); later ones: survivors only
    assert calls == [len(p.images)] * 6 + [survivors] * 12


def test_the_budget_guard_rejects_an_attack_that_overshoots(linear_problem, monkeypatch):
    p = linear_problem
    module = LogitsModule(Target(p.model))
    monkeypatch.setattr(torchattacks.FGSM, "forward", lambda self, x, y: (x + 0.5).clamp(0, 1))
    with pytest.raises(RuntimeError, match="left its budget"):
        run_attack(module, AttackSpec("fgsm", "linf"), p.images, p.labels, 0.01)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_epsilon_finds_the_exact_answer_on_a_linear_model(linear_problem, norm):
    p = linear_problem
    truth = torch.tensor(p.min_linf if norm == "linf" else p.min_l2)
    module = LogitsModule(Target(p.model))
    spec = AttackSpec("fgsm", norm)
    grid = [0.004, 0.02] if norm == "linf" else [0.02, 0.1]
    broken = torch.stack([truth < e for e in grid], 1)  # what the grid attack found

    def attack(rows, eps):
        return run_attack(module, spec, p.images[rows], p.labels[rows], eps).success

    found = minimal_epsilon(attack, grid, broken, bisection_steps=18, cap=1.0, median_only=False)
    assert bool((found >= truth * (1 - 1e-5)).all()), "reported a budget below the true minimum"
    # grid brackets are at most 4x the grid's largest step wide (doubling past it), 2^-18 after bisection
    assert torch.allclose(found, truth, rtol=0, atol=4 * grid[-1] / 2**18 + 1e-6)
    # searching only where the median can move gives the same median
    near = minimal_epsilon(attack, grid, broken, bisection_steps=18, cap=1.0)
    assert median(near.tolist()) == median(found.tolist())
    assert bool((near >= found).all())


def test_input_gradient_is_zero_only_where_the_model_is_flat(linear_problem):
    p = linear_problem
    grad = input_gradient(Target(p.model), p.images, p.labels)
    assert bool((grad.flatten(1).abs().amax(1) > 0).all())
    assert all(q.grad is None for q in p.model.parameters())

    class Detached(nn.Module):
        def forward(self, x):
            return p.model(x).detach()

    # the session's one message, whether the logits or the attack find the gradient missing
    with pytest.raises(TargetError, match=re.escape(NO_INPUT_GRADIENT)):
        input_gradient(Target(Detached()), p.images, p.labels)
    with pytest.raises(TargetError, match=re.escape(NO_INPUT_GRADIENT)):
        run_attack(LogitsModule(Target(Detached())), AttackSpec("fgsm", "linf"), p.images, p.labels, 0.01)
