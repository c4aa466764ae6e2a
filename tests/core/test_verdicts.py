"""A verdict needs evidence: an uncomputable headline or threshold metric, a sample below the
check's ``min_sample`` and a model that predicts one class for every image make a result
"insufficient evidence" (skipped, with the reason), never passed; real evidence still fails."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import auditkit
from auditkit import Check, Findings, Outcome, Target, Threshold
from auditkit.config import Config
from auditkit.data.loaders import load_data
from auditkit.main import run_audit
from auditkit.plugin_manager import get_plugin_manager
from auditkit.session import CleanPass
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.plugins import CheckPlugin

DATA = "synthetic:shapes?n=8&size=32&classes=4&seed=1"
NAN = math.nan


@pytest.fixture(scope="module")
def shapes():
    return load_data(DATA)


class Reports(Check):
    """Reports exactly what its settings say: a headline ``score``, an ``aux`` metric for
    thresholds, the sample size ``n_images`` and optionally a failure of its own."""

    id = "verdicts.reports"
    headline = ("score",)
    metrics = ("score", "aux", "n_images", "n_pairs")

    @dataclass
    class Settings:
        score: float = 1.0
        aux: float = 1.0
        n_images: float = 10.0
        report_count: bool = True
        failure: str = ""

    def run(self, ctx):
        s = self.settings
        metrics = {"score": s.score, "aux": s.aux}
        if s.report_count:
            metrics["n_images"] = s.n_images
        return Findings(metrics=metrics, message="measured", failures=[s.failure] if s.failure else [])


class NeedsFive(Reports):
    id = "verdicts.needs_five"
    min_sample = 5


class NeedsPairs(Reports):
    id = "verdicts.needs_pairs"
    metrics = ("score", "aux", "n_images", "n_pairs")
    min_sample = 3
    sample_metric = "n_pairs"


def _run(shapes, check_cls=Reports, model=None, **settings):
    thresholds = settings.pop("thresholds", None)
    table = dict(settings, **({"thresholds": thresholds} if thresholds else {}))
    run = auditkit.audit(
        model if model is not None else QuadrantNet(), shapes, plugins=[CheckPlugin(check_cls)], autoload=False,
        device="cpu", settings={check_cls.id: table},
    )
    return run[check_cls.id]


class QuadrantNet(nn.Module):
    """Class k is the quadrant with the brightest mean (a hand-set model whose predictions
    follow the image, so they are not constant on shapes)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(12, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4).repeat(1, 3) * 10)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(self.pool(x)))


class ConstantNet(nn.Module):
    """Predicts ``winner`` for every image: the logits depend on the image (gradients reach it)
    but by far too little for any attack in budget to close the margin."""

    def __init__(self, winner: int = 1, num_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(8, num_classes)
        with torch.no_grad():
            self.fc.weight.mul_(1e-3)
            self.fc.bias.zero_()
            self.fc.bias[winner] = 20.0

    def forward(self, x):
        return self.fc(self.flatten(self.pool(torch.relu(self.conv(x)))))


# -- uncomputable evidence ----------------------------------------------------------------


def test_a_nan_headline_is_insufficient_evidence_not_a_pass(shapes):
    result = _run(shapes, score=NAN)
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("insufficient evidence: score could not be computed (nan)")
    assert "measured" in result.message  # the check's own message stays
    assert math.isnan(result.metrics["score"]) and result.metrics["aux"] == 1.0  # the numbers stay


def test_a_nan_threshold_metric_is_skipped_not_failed(shapes):
    result = _run(shapes, aux=NAN, thresholds={"aux": {"min": 0.5}})
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("insufficient evidence: aux could not be computed (nan)")
    assert result.thresholds == {"aux": {"op": "min", "value": 0.5}}


def test_a_missing_threshold_metric_is_skipped_naming_it(shapes):
    result = _run(shapes, thresholds={"n_pairs": {"min": 1}})
    assert result.outcome is Outcome.SKIPPED
    assert "insufficient evidence: n_pairs could not be computed (the check reported no 'n_pairs')" in result.message


def test_a_real_failure_still_fails_beside_a_nan_headline(shapes):
    result = _run(shapes, score=NAN, failure="identity broken on image 3")
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("identity broken on image 3; score could not be computed (nan)")


def test_a_threshold_violated_by_a_real_number_fails_beside_a_nan_one(shapes):
    result = _run(shapes, score=0.1, aux=NAN, thresholds={"score": {"min": 0.5}, "aux": {"min": 0.5}})
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("score=0.1 violates score >= 0.5; aux could not be computed (nan)")


@pytest.mark.parametrize("op, outcome", [("max", Outcome.FAILED), ("min", Outcome.PASSED)])
def test_inf_is_a_value_not_missing_evidence(shapes, op, outcome):
    result = _run(shapes, aux=math.inf, thresholds={"aux": {op: 1.0}})
    assert result.outcome is outcome, result.message


def test_threshold_violated_by_says_nothing_about_nan():
    assert not Threshold("x", "min", 0.5).violated_by(NAN)
    assert not Threshold("x", "min", 0.5, baseline="resnet18").violated_by(1.0, NAN)
    assert not Threshold("x", "min", 0.5, baseline="resnet18").violated_by(1.0, None)
    assert Threshold("x", "max", 0.5).violated_by(math.inf)
    assert Threshold("x", "min", 0.5).violated_by(0.4)


class Relative(Check):
    """Held against the baseline ``ref``: the baseline reports what the settings say, the
    target 0.5, which violates 0.9 x ref's 1.0."""

    id = "verdicts.relative"
    headline = ("score",)
    metrics = ("score", "n_images")
    thresholds = (Threshold("score", "min", 0.9, baseline="ref"),)
    min_sample = 5

    @dataclass
    class Settings:
        baseline_score: float = 1.0
        baseline_images: float = 10.0

    def run(self, ctx):
        s = self.settings
        if ctx.target.role == "baseline":
            return Findings(metrics={"score": s.baseline_score, "n_images": s.baseline_images})
        return Findings(metrics={"score": 0.5, "n_images": 10.0})


@pytest.mark.parametrize(
    "settings, outcome, why",
    [
        ({}, Outcome.FAILED, None),
        ({"baseline_score": NAN}, Outcome.SKIPPED, "its result is skipped"),
        ({"baseline_images": 2.0}, Outcome.SKIPPED, "its result is skipped"),
    ],
    ids=["measured", "nan-baseline", "baseline-on-too-few-images"],
)
def test_a_relative_threshold_needs_a_baseline_verdict_to_compare_with(shapes, settings, outcome, why):
    config = Config(checks={Relative.id: settings}, progress=False, device="cpu")
    pm = get_plugin_manager(autoload=False, extra=[CheckPlugin(Relative)])
    baseline = Target(QuadrantNet(), name="ref", role="baseline")
    session = run_audit(config, pm, model=QuadrantNet(), data=shapes, baselines=[baseline])
    results = {r.model: r for r in session.results}
    target = results["target"]
    assert target.outcome is outcome, target.message
    if why:
        assert results["ref"].outcome is Outcome.SKIPPED
        assert target.message.startswith(
            f"insufficient evidence: no score from baseline 'ref' to compare with ({why}), "
            "so threshold score >= 0.9 x ref cannot be evaluated"
        )
        assert "reference" not in target.thresholds["score@ref"]


# -- sample size ------------------------------------------------------------------------


@pytest.mark.parametrize("aux", [0.0, 1.0], ids=["would-fail", "would-pass"])
def test_below_min_sample_is_insufficient_evidence_with_the_count(shapes, aux):
    result = _run(shapes, NeedsFive, n_images=1, aux=aux, thresholds={"aux": {"min": 0.5}})
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("insufficient evidence: 1 image (this check's rule needs at least 5); measured")
    assert result.metrics["n_images"] == 1 and result.metrics["aux"] == aux  # reports still show the numbers
    assert result.thresholds == {"aux": {"op": "min", "value": 0.5}}


def test_at_min_sample_the_rule_decides(shapes):
    result = _run(shapes, NeedsFive, n_images=5, aux=0.0, thresholds={"aux": {"min": 0.5}})
    assert result.outcome is Outcome.FAILED and result.message.startswith("aux=0 violates aux >= 0.5")


def test_a_missing_sample_metric_is_insufficient_evidence(shapes):
    result = _run(shapes, NeedsFive, report_count=False)
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(
        "insufficient evidence: the sample size n_images is not reported (this check's rule needs at least 5)"
    )


def test_sample_metric_names_the_count(shapes):
    result = _run(shapes, NeedsPairs)  # reports n_images but not n_pairs
    assert result.outcome is Outcome.SKIPPED and "the sample size n_pairs is not reported" in result.message


def test_the_sample_rule_wins_over_a_nan_headline(shapes):
    result = _run(shapes, NeedsFive, n_images=2, score=NAN)
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("insufficient evidence: 2 images (this check's rule needs at least 5)")


def test_randomization_on_too_few_images_is_insufficient_evidence_not_a_verdict(shapes):
    torch.manual_seed(0)
    run = auditkit.audit(
        TinyGAPNet(num_classes=4), shapes, checks=["gradcam.randomization"], device="cpu",
        settings={"gradcam.randomization": {"max_images": 3}},
    )
    result = run["gradcam.randomization"]
    assert result.outcome is Outcome.SKIPPED, result.message
    n = int(result.metrics["n_images"])
    assert n <= 3
    assert result.message.startswith(f"insufficient evidence: {n} image")
    assert "this check's rule needs at least 5" in result.message
    assert "max_rank_corr" in result.metrics


# -- constant predictions ---------------------------------------------------------------


def test_clean_pass_knows_constant_predictions():
    assert CleanPass(None, torch.tensor([2, 2, 2]), None, score_kind=None).constant == (2, 3)
    assert CleanPass(None, torch.tensor([2, 1, 2]), None, score_kind=None).constant is None
    assert CleanPass(None, torch.tensor([2]), None, score_kind=None).constant is None  # one image says nothing


FAST_ATTACKS = {
    "whitebox.fgsm": {"l2_eps": [], "targeted": [], "bisection_steps": 0, "examples": 0},
    "whitebox.pgd": {"l2_eps": [], "targeted": [], "bisection_steps": 0, "examples": 0, "steps": 2},
}


def test_attacks_on_a_constant_model_are_insufficient_evidence_and_every_result_says_so(shapes):
    run = auditkit.audit(
        ConstantNet(winner=1), shapes, checks=["accuracy.clean", "whitebox.fgsm", "whitebox.pgd"],
        device="cpu", settings=FAST_ATTACKS,
    )
    constant = {"class": 1, "n_images": 8}
    name = shapes.class_names[1]
    for check in ("whitebox.fgsm", "whitebox.pgd"):
        result = run[check]
        assert result.outcome is Outcome.SKIPPED, result.message
        assert result.message.startswith(
            f"insufficient evidence: target predicts class 1 ({name}) for all 8 images; "
            "an attack cannot change a constant output"
        )
        assert result.details["constant_predictions"] == constant
        assert "robust_acc@linf_8/255" in result.metrics
    accuracy = run["accuracy.clean"]
    assert accuracy.outcome is Outcome.FAILED  # a constant answer is never significantly above chance
    assert accuracy.metrics["p_above_chance"] > 0.05
    assert f"note: target predicts class 1 ({name}) for all 8 images (constant predictions)" in accuracy.message
    assert accuracy.details["constant_predictions"] == constant
    assert run.exit_code == 1


def test_a_constant_baseline_is_reported_as_such_and_the_target_is_not(shapes):
    config = Config(select=["accuracy.clean", "whitebox.fgsm"], checks=dict(FAST_ATTACKS), progress=False, device="cpu")
    pm = get_plugin_manager()
    baseline = Target(ConstantNet(winner=2), name="const", role="baseline")
    session = run_audit(config, pm, model=QuadrantNet(), data=shapes, baselines=[baseline])
    results = {(r.model, r.check): r for r in session.results}
    fgsm = results["const", "whitebox.fgsm"]
    assert fgsm.outcome is Outcome.SKIPPED
    assert fgsm.message.startswith("insufficient evidence: const predicts class 2")
    accuracy = results["const", "accuracy.clean"]
    assert "note: const predicts class 2" in accuracy.message
    assert accuracy.details["constant_predictions"] == {"class": 2, "n_images": 8}
    for check in ("accuracy.clean", "whitebox.fgsm"):
        target = results["target", check]
        assert "constant_predictions" not in target.details and "constant" not in target.message
    assert results["target", "whitebox.fgsm"].outcome is not Outcome.SKIPPED


def test_cam_consistency_with_constant_maps_is_not_passed(shapes):
    torch.manual_seed(0)
    model = TinyGAPNet(num_classes=4)
    with torch.no_grad():
        model.features[0].weight.zero_()  # every feature map constant: CAM correlations undefined
    result = auditkit.audit(model, shapes, checks=["cam.consistency"], device="cpu")["cam.consistency"]
    assert result.outcome is Outcome.SKIPPED, result.message
    assert result.message.startswith("insufficient evidence: cam_gradcam_corr could not be computed (nan)")
    assert "flip_corr could not be computed (nan)" in result.message
    assert math.isnan(result.metrics["cam_gradcam_corr"]) and math.isnan(result.metrics["flip_corr"])
    assert result.metrics["logit_max_abs_err"] < 1e-4  # the identity itself was measured and holds


def test_one_class_data_predicted_right_is_not_constant():
    # a model right on every image of one-class data cannot be told from a constant one
    assert CleanPass(None, torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]), score_kind=None).constant is None
    assert CleanPass(None, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0]), score_kind=None).constant == (0, 3)
