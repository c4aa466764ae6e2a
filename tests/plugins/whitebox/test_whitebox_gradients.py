"""Reused work in the white-box checks: FGSM from the shared clean-point gradient is
torchattacks' FGSM bit for bit, each clean-point gradient is computed once per image and loss
target across whitebox.fgsm and whitebox.masking, and the median-only minimal-epsilon search
reports what the full search reports, for fewer gradient passes."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torchattacks

import auditkit
from auditkit import AuditData, Target, TensorSplit
from auditkit.toolkit import LogitsModule, craft
from auditkit_whitebox import gradients
from auditkit_whitebox.attacks import minimal_epsilon, unbounded_attack
from auditkit.toolkit import clean_gradient, fgsm_step
from auditkit_whitebox.gradients import CleanGradients, pgd_linf_first_step
from auditkit_whitebox.robustness import median

from whitebox_models import GradientPasses, quadrant_images, tiny_gradient_problem

WHITEBOX = ["whitebox.fgsm", "whitebox.pgd", "whitebox.masking"]


@pytest.fixture(scope="module")
def quadrants48() -> AuditData:
    """Three batches of 16 at batch_size=16, so that sharing crosses batches and checks."""
    return AuditData("quadrants48", TensorSplit(*quadrant_images(48, seed=3)), num_classes=4)


def _batch(model, channels_last=False):
    images, labels = quadrant_images(16, seed=5)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    target = Target(model)
    target.probe(images[:2])
    return target, images, labels


@pytest.mark.parametrize("per_image", [False, True], ids=["one_eps", "per_image_eps"])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_from_the_shared_gradient_is_torchattacks_bit_for_bit(quadrant_cnn, norm, targeted, per_image):
    target, images, labels = _batch(quadrant_cnn)
    with target:
        module = LogitsModule(target)
        goal = (labels + 1) % 4 if targeted else labels
        eps = 8 / 255 if norm == "linf" else 0.5
        if per_image:
            eps = torch.linspace(0.5, 1.5, len(images)) * eps
        grad = clean_gradient(module, images, goal, targeted=targeted)
        ours = fgsm_step(images, grad, norm, eps)
        assert torch.equal(ours, craft(module, images, goal, "fgsm", norm, eps, targeted=targeted))
        if norm == "linf":  # torchattacks' FGSM itself, as a user would call it
            attack = torchattacks.FGSM(module, eps=eps.view(-1, 1, 1, 1) if per_image else eps)
            if targeted:
                attack.set_mode_targeted_by_label(quiet=True)
            assert torch.equal(ours, attack(images, goal))
        else:  # the one-line step differs from torchattacks' only by its idle projection's rounding
            size = eps.view(-1, 1, 1, 1) if per_image else eps
            norms = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            one_line = (images + size * grad / (norms + 1e-10)).clamp(0, 1)
            assert torch.allclose(ours, one_line, rtol=0, atol=1e-6)
            assert (ours - images).flatten(1).norm(dim=1).le(torch.as_tensor(eps) * (1 + 1e-6)).all()


def test_fgsm_from_the_shared_gradient_handles_channels_last_models(quadrant_cnn):
    target, images, labels = _batch(quadrant_cnn, channels_last=True)
    with target:
        module = LogitsModule(target)
        grad = clean_gradient(module, images, labels)
        for norm, eps in (("linf", 4 / 255), ("l2", 0.25)):
            assert torch.equal(fgsm_step(images, grad, norm, eps), craft(module, images, labels, "fgsm", norm, eps))


def test_the_unbounded_attacks_first_step_is_torchattacks_first_step(quadrant_cnn):
    target, images, labels = _batch(quadrant_cnn)
    with target:
        module = LogitsModule(target)
        grad = clean_gradient(module, images, labels)
        first = pgd_linf_first_step(images, grad, 1 / 8, 1.0)
        assert torch.equal(first, craft(module, images, labels, "pgd", "linf", 1.0, steps=1, alpha=1 / 8))
        # the whole unbounded attack fools the same images either way
        fresh = unbounded_attack(module, images, labels, 20)
        reused = unbounded_attack(module, images, labels, 20, first_gradient=grad)
        assert torch.equal(fresh.success, reused.success)


def _audit(model, data, checks, **options):
    counter = GradientPasses(model)
    run = auditkit.audit(counter, data, checks=checks, plugins=[counter], **options)
    return counter, {r.check: r for r in run.results}


def test_each_clean_point_gradient_is_computed_once_per_image_and_loss_target(quadrant_cnn, quadrants48):
    counter, results = _audit(quadrant_cnn, quadrants48, ["whitebox.fgsm", "whitebox.masking"], batch_size=16)
    n = int(results["whitebox.fgsm"].metrics["n_attacked"])
    assert n == 48 and int(results["whitebox.masking"].metrics["n_correct"]) == n
    fgsm, masking = counter.clean_points["whitebox.fgsm"], counter.clean_points["whitebox.masking"]
    untargeted = [key for key in fgsm if key[1][0] == "untargeted"]
    targeted = [key for key in fgsm if key[1][0] == "targeted"]
    # one untargeted gradient per image at its label, and one per image and targeted mode
    # (random, least likely), for every budget, norm and bisection step: each (image, loss
    # target) once, also where both modes pick the same class for an image
    assert len(untargeted) == n and set(fgsm.values()) == {1}
    assert n < len(targeted) < 2 * n  # here some images draw their least likely class at random
    # whitebox.masking reads them: its zero test, FGSM and unbounded first step cost nothing
    assert sum(masking.values()) == 0
    # FGSM itself is now forward passes only: no backward beyond the clean points
    assert counter.backward["whitebox.fgsm"] == len(fgsm)


def test_masking_alone_computes_each_gradient_once(quadrant_cnn, quadrants48):
    counter, _ = _audit(quadrant_cnn, quadrants48, ["whitebox.masking"], batch_size=16)
    masking = counter.clean_points["whitebox.masking"]
    assert len(masking) == 48 and set(masking.values()) == {1}


def test_pgd_from_the_clean_image_reads_the_shared_gradient(quadrant_cnn, quadrants48):
    """The minimal-epsilon search runs PGD from the clean image: its first step reads the
    untargeted gradient whitebox.fgsm and whitebox.masking share, so after them whitebox.pgd
    computes no clean-point gradient, and alone it computes each at most once per image."""
    counter, _ = _audit(quadrant_cnn, quadrants48, WHITEBOX, batch_size=16)
    assert sum(counter.clean_points["whitebox.pgd"].values()) == 0
    assert counter.clean_points["whitebox.fgsm"] and counter.backward["whitebox.pgd"] > 0
    alone, _ = _audit(quadrant_cnn, quadrants48, ["whitebox.pgd"], batch_size=16)
    points = alone.clean_points["whitebox.pgd"]
    assert points and set(points.values()) == {1}  # the search reached some images, each once
    assert all(goal[0] == "untargeted" for _, goal in points)


def test_sharing_changes_no_result_and_saves_gradient_passes(quadrant_cnn, quadrants48, monkeypatch):
    """Every metric, message, curve and adversarial example equal to the run without reuse
    (each FGSM run and masking probe through torchattacks, every image bisected), at a fixed
    seed; budgets wide enough that the grid, the targeted runs and the examples all see
    fooled images."""
    wide = {"linf_eps": [4 / 255, 8 / 255, 16 / 255, 24 / 255, 32 / 255], "l2_eps": [0.5, 1.0, 2.0, 3.0]}
    settings = {"whitebox.fgsm": wide, "whitebox.pgd": wide}
    counter, shared = _audit(quadrant_cnn, quadrants48, WHITEBOX, batch_size=16, settings=settings)
    monkeypatch.setattr(gradients, "REUSE", False)
    before, alone = _audit(quadrant_cnn, quadrants48, WHITEBOX, batch_size=16, settings=settings)
    for check in WHITEBOX:
        a, b = shared[check], alone[check]
        assert (a.outcome, a.metrics, a.message, a.curves) == (b.outcome, b.metrics, b.message, b.curves), check
        assert [(x.name, x.caption, x.data) for x in a.artifacts] == [(x.name, x.caption, x.data) for x in b.artifacts]
    assert len(shared["whitebox.fgsm"].artifacts) == 4 and shared["whitebox.pgd"].metrics["robust_acc@linf_32/255"] < 1
    n = 48
    # FGSM: at most 3 clean-point gradients per image instead of one per attack (21.5 here), masking
    # none instead of 3 (its input gradient, its FGSM, the unbounded attack's first step)
    assert counter.backward["whitebox.fgsm"] <= 3 * n and before.backward["whitebox.fgsm"] > 6 * 3 * n
    assert before.backward["whitebox.masking"] - counter.backward["whitebox.masking"] == 3 * n
    # PGD: the same attacks on the grid, fewer in the minimal-epsilon search (10270 -> 8510
    # when measured: most images' smallest budgets lie close together here, so most stay near
    # the median; the linear problem below has a wider spread)
    assert counter.backward["whitebox.pgd"] < before.backward["whitebox.pgd"]


def test_the_median_only_search_runs_fewer_pgd_steps_for_the_same_median(linear_problem, monkeypatch):
    p = linear_problem
    settings = {"linf_eps": [0.02, 0.05], "l2_eps": [0.05, 0.1], "bisection_steps": 10}

    def pgd():
        counter, results = _audit(p.model, p.data, ["whitebox.pgd"], settings={"whitebox.pgd": settings})
        return counter.backward["whitebox.pgd"], results["whitebox.pgd"]

    passes, result = pgd()
    monkeypatch.setattr(gradients, "REUSE", False)
    passes_before, result_before = pgd()
    assert result.metrics == result_before.metrics
    # 12 images, each 4 budgets x 10 steps and 4 targeted runs x 10 steps on the grid, then the
    # search: 3420 -> 1480 passes when measured (285 -> 123 per image)
    assert passes < passes_before / 2


def test_a_zero_batch_mean_gradient_is_checked_on_the_summed_loss():
    """The batch mean scales each gradient by 1/B, which can round a tiny gradient to zero: the
    zero-gradient probe must not flag that as masking."""
    model, data = tiny_gradient_problem()
    with Target(model) as target:
        module = LogitsModule(target)
        images, labels = data.eval.images, data.eval.labels
        assert bool((clean_gradient(module, images, labels) == 0).all())  # what FGSM steps along
    run = auditkit.audit(model, data, checks=["whitebox.masking"])
    assert run["whitebox.masking"].metrics["zero_grad_share"] == 0.0


@pytest.mark.parametrize("records_in_memory", ["64M", "0"], ids=["in_memory", "in_a_file"])
def test_the_store_keeps_rows_up_to_its_size_and_never_changes_one(records_in_memory, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITKIT_RECORDS_IN_MEMORY", records_in_memory)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    computed = []

    def compute(values):
        def run():
            computed.append(values)
            grads = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()
            return grads, -torch.tensor(values, dtype=torch.float32).view(-1, 1).expand(-1, 2).clone()

        return run

    row_bytes = 3 * 2 * 2 * 4 + 2 * 4  # the gradient and the pass's two logits
    store = CleanGradients(2 * row_bytes, 3, torch.device("cpu"))
    index, goal = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1])
    first, logits = store.rows(index, goal, compute([1.0, 2.0, 3.0]))
    assert first[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0] and logits[:, 0].tolist() == [-1.0, -2.0, -3.0]
    assert len(computed) == 1
    # rows 0 and 1 fit and are read back, with their logits; row 2 did not and is computed again, with its batch
    assert store.kept(index[:2], goal[:2]) and not store.kept(index, goal)
    again, logits = store.rows(index[:2], goal[:2], compute([9.0, 9.0]))
    assert again[:, 0, 0, 0].tolist() == [1.0, 2.0] and logits[:, 0].tolist() == [-1.0, -2.0] and len(computed) == 1
    mixed, logits = store.rows(index, goal, compute([7.0, 7.0, 7.0]))
    assert mixed[:, 0, 0, 0].tolist() == [1.0, 2.0, 7.0] and logits[:, 0].tolist() == [-1.0, -2.0, -7.0]
    assert len(computed) == 2
    # a row asked for towards another class is computed, and the kept one stays
    assert not store.kept(index[:1], torch.tensor([2]))
    other, _ = store.rows(index[:1], torch.tensor([2]), compute([5.0]))
    assert other[:, 0, 0, 0].tolist() == [5.0]
    assert store.rows(index[:1], goal[:1], compute([6.0]))[0][0, 0, 0, 0] == 1.0


def test_a_full_store_recomputes_and_changes_nothing(quadrant_cnn, quadrants48, monkeypatch):
    monkeypatch.setattr(gradients, "STORE_BYTES", 0)
    counter, results = _audit(quadrant_cnn, quadrants48, ["whitebox.fgsm", "whitebox.masking"], batch_size=16)
    monkeypatch.setattr(gradients, "STORE_BYTES", 1 << 30)
    _, reference = _audit(quadrant_cnn, quadrants48, ["whitebox.fgsm", "whitebox.masking"], batch_size=16)
    assert {c: r.metrics for c, r in results.items()} == {c: r.metrics for c, r in reference.items()}
    # nothing kept: masking computes its own, fgsm's bisection asks again for the images it searches
    assert sum(counter.clean_points["whitebox.masking"].values()) == 48
    assert counter.backward["whitebox.fgsm"] > 3 * 48


@pytest.mark.parametrize("seed", range(40))
def test_the_median_only_search_reports_the_full_searchs_median(seed):
    """Against an arbitrary deterministic attack (success a fixed coin per image and budget,
    not even monotone in the budget), with ties, unfooled images and odd and even counts."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    grid = [0.01, 0.02, 0.04, 0.08]
    threshold = torch.rand(n, generator=g) * 0.5
    salt = int(torch.randint(0, 2**30, (1,), generator=g))
    calls = {"full": 0, "median": 0}

    def attack_for(kind):
        def attack(rows, eps):
            calls[kind] += len(rows)
            eps = torch.as_tensor(eps, dtype=torch.float32).expand(len(rows))
            coin = torch.tensor([hash((int(i), float(e), salt)) % 7 == 0 for i, e in zip(rows, eps)])
            return (eps >= threshold[rows]) ^ coin

        return attack

    broken = torch.stack([threshold <= e for e in grid], 1) & (torch.rand(n, len(grid), generator=g) < 0.8)
    full = minimal_epsilon(attack_for("full"), grid, broken, bisection_steps=5, cap=0.32, median_only=False)
    near = minimal_epsilon(attack_for("median"), grid, broken, bisection_steps=5, cap=0.32)
    m_full, m_near = median(full.tolist()), median(near.tolist())
    assert m_near == m_full or (math.isinf(m_near) and math.isinf(m_full))
    assert bool((near >= full).all())  # every entry is still a budget at which the attack succeeded
    assert calls["median"] <= calls["full"]
