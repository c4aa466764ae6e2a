"""whitebox.fgsm and whitebox.pgd through the audit runner: exact answers on a linear model,
a monotone robustness curve on a trained CNN, artifacts, settings and the model left as found."""
from __future__ import annotations

import copy
import io
import json
import math

import pytest
import torch
from PIL import Image

import auditkit
from auditkit import Outcome, UsageError
from auditkit_whitebox.attacks import budget_label
from auditkit_whitebox.robustness import median


def _just_around(values, rel=1e-3):
    return sorted([v * (1 - rel) for v in values] + [v * (1 + rel) for v in values])


@pytest.mark.parametrize("check_id", ["whitebox.fgsm", "whitebox.pgd"])
def test_linf_attack_flips_exactly_above_the_minimal_perturbation(check_id, linear_problem):
    """Binary linear model: the smallest Linf perturbation is margin / ||w_y - w_t||_1, and both
    FGSM and PGD reach it, so each image is fooled at eps just above it and not just below."""
    p = linear_problem
    grid = _just_around(p.min_linf)
    run = auditkit.audit(
        p.model, p.data, checks=[check_id],
        settings={check_id: {"linf_eps": grid, "l2_eps": [], "targeted": ["random", "least_likely"],
                             "targeted_budgets": "all"}},
    )
    result = run[check_id]
    assert result.outcome is Outcome.PASSED, result.message
    n = len(p.min_linf)
    assert result.metrics["clean_acc"] == 1.0
    for eps in grid:
        label = budget_label("linf", eps)
        n_fooled = sum(m < eps for m in p.min_linf)
        assert result.metrics[f"robust_acc@{label}"] == (n - n_fooled) / n, label
        assert result.metrics[f"attack_success@{label}"] == n_fooled / n
        # two classes: both targeted modes aim at the only other class, with the same minimum
        assert result.metrics[f"targeted_success_random@{label}"] == n_fooled / n
        assert result.metrics[f"targeted_success_least_likely@{label}"] == n_fooled / n
    assert result.metrics["median_min_eps"] == pytest.approx(median(p.min_linf), rel=2e-3)
    assert result.metrics["attack_success"] == result.metrics[f"attack_success@{budget_label('linf', grid[-1])}"] == 1.0


def test_l2_fast_gradient_flips_exactly_above_the_minimal_l2_perturbation(linear_problem):
    p = linear_problem
    grid = _just_around(p.min_l2)
    result = auditkit.audit(
        p.model, p.data, checks=["whitebox.fgsm"],
        settings={"whitebox.fgsm": {"linf_eps": [], "l2_eps": grid, "targeted": []}},
    )["whitebox.fgsm"]
    n = len(p.min_l2)
    for eps in grid:
        assert result.metrics[f"robust_acc@{budget_label('l2', eps)}"] == sum(m >= eps for m in p.min_l2) / n
    assert result.metrics["median_min_eps_l2"] == pytest.approx(median(p.min_l2), rel=2e-3)
    assert "median_min_eps" not in result.metrics and "targeted_success_random@l2_0.1" not in result.metrics


def test_median_min_eps_bisects_far_below_the_grid_spacing(linear_problem):
    p = linear_problem
    result = auditkit.audit(
        p.model, p.data, checks=["whitebox.fgsm"],
        settings={"whitebox.fgsm": {"linf_eps": [2 / 255, 8 / 255], "l2_eps": [], "targeted": [],
                                    "bisection_steps": 16}},
    )["whitebox.fgsm"]
    # brackets at most 6/255 wide (the doubling past 8/255 is 8/255 wide), halved 16 times
    assert result.metrics["median_min_eps"] == pytest.approx(median(p.min_linf), abs=8 / 255 / 2**16)


def test_pgd_robust_accuracy_falls_monotonically_on_a_small_cnn(quadrant_cnn, quadrants):
    linf = [1 / 255, 4 / 255, 8 / 255, 16 / 255, 24 / 255, 32 / 255, 48 / 255, 64 / 255]
    l2 = [0.5, 1.0, 2.0, 4.0]
    result = auditkit.audit(
        quadrant_cnn, quadrants, checks=["whitebox.pgd"],
        settings={"whitebox.pgd": {"linf_eps": linf, "l2_eps": l2, "targeted": []}},
    )["whitebox.pgd"]
    assert result.outcome is Outcome.PASSED and result.metrics["rises_with_eps"] == 0
    for norm, grid in (("linf", linf), ("l2", l2)):
        acc = [result.metrics[f"robust_acc@{budget_label(norm, e)}"] for e in grid]
        assert all(a >= b for a, b in zip(acc, acc[1:])), (norm, acc)
        assert acc[0] == 1.0 and acc[-1] == 0.0, (norm, acc)  # the curve spans the whole range
        for e, a in zip(grid, acc):
            label = budget_label(norm, e)
            assert result.metrics[f"robust_acc_lo@{label}"] <= a <= result.metrics[f"robust_acc_hi@{label}"]
    assert 16 / 255 < result.metrics["median_min_eps"] < 64 / 255


def test_on_an_ordinary_cnn_pgd_is_at_least_as_strong_as_fgsm(quadrant_cnn, quadrants):
    """Not an identity, but what every sound evaluation shows (and whitebox.masking checks)."""
    settings = {"linf_eps": [24 / 255, 32 / 255, 48 / 255], "l2_eps": []}
    run = auditkit.audit(
        quadrant_cnn, quadrants, checks=["whitebox.fgsm", "whitebox.pgd"],
        settings={"whitebox.fgsm": settings, "whitebox.pgd": {**settings, "targeted_budgets": "all"}},
    )
    for eps in settings["linf_eps"]:
        label = budget_label("linf", eps)
        fgsm, pgd = run["whitebox.fgsm"].metrics, run["whitebox.pgd"].metrics
        assert pgd[f"robust_acc@{label}"] <= fgsm[f"robust_acc@{label}"]
    # at 48/255 PGD fools every image, and reaches a chosen class for most of them
    assert pgd["attack_success@linf_48/255"] == 1.0
    assert pgd["targeted_success_random@linf_48/255"] >= 0.5 and pgd["targeted_success_least_likely@linf_48/255"] >= 0.5
    assert run["whitebox.fgsm"].metrics["median_min_eps"] >= run["whitebox.pgd"].metrics["median_min_eps"]


def test_results_carry_curves_examples_thresholds_and_serialize(quadrant_cnn, quadrants, tmp_path):
    out = tmp_path / "report.json"
    run = auditkit.audit(
        quadrant_cnn, quadrants, checks=["whitebox.pgd"], json=str(out),
        settings={"whitebox.pgd": {"linf_eps": [8 / 255, 48 / 255], "l2_eps": [1.0], "targeted": [], "examples": 2}},
    )
    result = run["whitebox.pgd"]
    assert result.thresholds == {"rises_with_eps": {"op": "max", "value": 0.0}}
    assert "not gated" in result.message and "rises_with_eps <= 0" in result.message
    assert {(c.metric, c.norm) for c in result.curves} == {("robust_acc", "linf"), ("robust_acc", "l2")}
    linf = result.curve("robust_acc", "linf")
    assert [p.x for p in linf.points] == [8 / 255, 48 / 255]
    assert [p.value for p in linf.points] == [result.metrics["robust_acc@linf_8/255"], result.metrics["robust_acc@linf_48/255"]]
    assert [p.lo for p in linf.points] == [result.metrics["robust_acc_lo@linf_8/255"], result.metrics["robust_acc_lo@linf_48/255"]]
    assert all(p.lo <= p.value <= p.hi for p in linf.points)
    assert not [a for a in result.artifacts if a.kind == "curve"]  # the curves are typed, not artifacts
    images = [a for a in result.artifacts if a.kind == "image/png"]
    assert len(images) == 2
    for artifact in images:
        picture = Image.open(io.BytesIO(artifact.data))
        assert picture.format == "PNG" and picture.size[1] == 96 and picture.size[0] > 3 * 96
        assert len(artifact.data) < 40_000
        assert "linf_48/255" in artifact.caption and "->" in artifact.caption and "perturbation x" in artifact.caption
    report = json.loads(out.read_text())
    (entry,) = [r for r in report["results"] if r["check"] == "whitebox.pgd"]
    assert entry["metrics"]["robust_acc@linf_48/255"] == result.metrics["robust_acc@linf_48/255"]
    assert auditkit.CheckResult.from_json(entry).curves == result.curves


def test_defaults_cover_the_issues_budgets_and_stay_fast(quadrant_cnn, quadrants):
    run = auditkit.audit(quadrant_cnn, quadrants, checks=["whitebox.fgsm", "whitebox.pgd"])
    for check_id in ("whitebox.fgsm", "whitebox.pgd"):
        metrics = run[check_id].metrics
        for label in ("linf_1/255", "linf_2/255", "linf_4/255", "linf_8/255", "l2_0.25", "l2_0.5", "l2_1"):
            for name in ("robust_acc", "robust_acc_lo", "robust_acc_hi", "attack_success"):
                assert f"{name}@{label}" in metrics, f"{check_id}: {name}@{label}"
        targeted = {name for name in metrics if name.startswith("targeted_success_")}
        assert targeted == {f"targeted_success_{mode}@{label}" for mode in ("random", "least_likely")
                            for label in ("linf_8/255", "l2_1")}
        assert {"clean_acc", "attack_success", "median_min_eps", "median_min_eps_l2", "rises_with_eps"} <= set(metrics)
        assert run[check_id].duration_s < 20


def test_checks_leave_a_training_model_as_found(quadrant_cnn, quadrants):
    model = copy.deepcopy(quadrant_cnn).train()
    model.features[0].register_forward_hook(lambda *a: None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run = auditkit.audit(
        model, quadrants, checks=["whitebox.*"], max_images=4,
        settings={"whitebox.fgsm": {"linf_eps": [8 / 255]}, "whitebox.pgd": {"linf_eps": [8 / 255], "steps": 2}},
    )
    assert {r.check for r in run} == {"whitebox.fgsm", "whitebox.pgd", "whitebox.masking"}
    assert all(r.outcome is not Outcome.ERROR for r in run), [r.traceback for r in run]
    assert all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert len(model.features[0]._forward_hooks) == 1


def test_same_seed_same_numbers(quadrant_cnn, quadrants):
    settings = {"whitebox.pgd": {"linf_eps": [24 / 255], "l2_eps": [2.0]}}
    first = auditkit.audit(quadrant_cnn, quadrants, checks=["whitebox.pgd"], settings=settings, seed=3)
    second = auditkit.audit(quadrant_cnn, quadrants, checks=["whitebox.pgd"], settings=settings, seed=3)
    assert dict(first["whitebox.pgd"].metrics) == dict(second["whitebox.pgd"].metrics)


def test_a_model_with_nothing_correct_is_insufficient_evidence_with_zero_robust_accuracy(linear_problem):
    p = linear_problem
    wrong = auditkit.AuditData("wrong", auditkit.TensorSplit(p.images, 1 - p.labels), num_classes=2)
    run = auditkit.audit(p.model, wrong, checks=["whitebox.fgsm"], settings={"whitebox.fgsm": {"l2_eps": []}})
    result = run["whitebox.fgsm"]
    # nothing was attacked: no verdict, but the numbers are still reported
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("insufficient evidence: n_attacked = 0 (this check's rule needs at least 4)")
    assert result.metrics["robust_acc@linf_8/255"] == 0.0 and math.isnan(result.metrics["attack_success"])
    assert "no correctly classified image" in result.message


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"linf_eps": [-0.1]}, r'"whitebox.pgd"\] linf_eps: every epsilon must be \(0, 1\], got -0.1'),
        ({"linf_eps": [], "l2_eps": []}, "both empty; expected at least one budget"),
        ({"targeted": ["nearest"]},
         r"unknown mode\(s\) \['nearest'\]; expected a subset of \['random', 'least_likely'\]"),
        ({"steps": 0}, "steps and restarts must be >= 1"),
        ({"rel_step_size": 0}, "rel_step_size: must be > 0"),
        ({"linf_eps": "8/255"}, "must be a list"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_setting(settings, message, linear_problem):
    with pytest.raises(UsageError, match=message):
        auditkit.audit(
            linear_problem.model, linear_problem.data, checks=["whitebox.pgd"], settings={"whitebox.pgd": settings}
        )


class _Periodic(torch.nn.Module):
    """Binary model whose class-1 logit is -cos(omega * (mean pixel - 0.45)): the loss gradient
    always says "brighter", and brightening by 0.05 crosses into class 1 while brightening by
    0.1 comes back round to class 0. A one-step attack then fools everything at the small
    budget and nothing at the large one, though the large budget contains the small one."""

    omega = 2 * math.pi / 0.1

    def forward(self, x):
        g = -torch.cos(self.omega * (x.mean((1, 2, 3)) - 0.45))
        return torch.stack([torch.zeros_like(g), g], 1)


def test_robust_accuracy_rising_with_eps_fails_the_check():
    offsets = torch.linspace(0.002, 0.01, 16).view(16, 1, 1, 1)
    checkerboard = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2 * 2 - 1
    images = (0.45 + offsets + 0.05 * checkerboard.float()).expand(16, 3, 8, 8).clone()
    labels = torch.zeros(16, dtype=torch.long)
    data = auditkit.AuditData("periodic", auditkit.TensorSplit(images, labels), num_classes=2)
    result = auditkit.audit(
        _Periodic(), data, checks=["whitebox.fgsm"],
        settings={"whitebox.fgsm": {"linf_eps": [0.05, 0.1], "l2_eps": [], "targeted": []}},
    )["whitebox.fgsm"]
    assert result.metrics["robust_acc@linf_0.05"] == 0.0 and result.metrics["robust_acc@linf_0.1"] == 1.0
    assert result.metrics["rises_with_eps"] == 1 and result.outcome is Outcome.FAILED
    assert result.message.startswith("rises_with_eps=1 violates rises_with_eps <= 0")
    assert "rose beyond its 95% interval at linf_0.05 -> linf_0.1" in result.message


def test_images_not_fooled_within_the_search_limit_count_as_infinite(linear_problem):
    p = linear_problem
    tiny = min(p.min_linf) / 8  # the search reaches 2 x tiny < every image's minimum
    result = auditkit.audit(
        p.model, p.data, checks=["whitebox.fgsm"],
        settings={"whitebox.fgsm": {"linf_eps": [tiny], "l2_eps": [], "min_eps_search_factor": 2.0}},
    )["whitebox.fgsm"]
    assert result.metrics["median_min_eps"] == math.inf
    assert f"median smallest fooling eps Linf above {2 * tiny * 255:.2f}/255 (the search limit)" in result.message
    report_value = result.to_json()["metrics"]["median_min_eps"]
    assert report_value is None  # JSON has no infinity
