"""whitebox.masking: planted gradient masking raises the right flags, an ordinary model none."""
from __future__ import annotations

import pytest
import torch

import auditkit
import auditkit_whitebox
from auditkit import Check, Findings, Outcome
from auditkit.testing.scorecard import budget_curve
from auditkit_whitebox.masking import FLAGS

from whitebox_models import NoisyLogits, QuantizedInput, ScaledLogits, SoftmaxOutput


def _masking(model, data, **settings):
    run = auditkit.audit(model, data, checks=["whitebox.masking"], settings={"whitebox.masking": settings})
    return run["whitebox.masking"]


def _raised(result):
    return {flag for flag in FLAGS if result.metrics[flag] == 1.0}


def test_an_ordinary_model_raises_no_flag(quadrant_cnn, quadrants):
    result = _masking(quadrant_cnn, quadrants)
    assert result.outcome is Outcome.PASSED, result.message
    assert result.metrics["flags"] == 0 and _raised(result) == set()
    assert all(result.metrics[flag] == 0.0 for flag in FLAGS)
    # the probes did real work: the unbounded attack fools everything, PGD beats FGSM
    assert result.metrics["unbounded_acc"] == 0.0 and result.metrics["zero_grad_share"] == 0.0
    assert result.metrics["pgd_acc@linf_32/255"] < result.metrics["pgd_acc@linf_2/255"] == 1.0
    assert result.metrics["pgd_acc@linf_8/255"] <= result.metrics["fgsm_acc@linf_8/255"]
    assert result.thresholds == {flag: {"op": "max", "value": 0.0} for flag in FLAGS}
    assert result.message.startswith("no flags")


@pytest.mark.parametrize("masked", [ScaledLogits, QuantizedInput], ids=["logits_x1e4", "quantized_input"])
def test_gradient_masking_raises_the_flags_and_names_them(masked, quadrant_cnn, quadrants):
    """Saturated softmax (logits x 1e4) and input quantization (round() has no gradient) keep
    clean accuracy at 100% but give gradient attacks nothing to follow."""
    result = _masking(masked(quadrant_cnn), quadrants)
    assert result.outcome is Outcome.FAILED
    assert {"zero_gradients", "unbounded_attack_fails", "eps_insensitive"} <= _raised(result)
    assert result.metrics["zero_grad_share"] == 1.0 and result.metrics["unbounded_acc"] == 1.0
    assert result.metrics["flags"] == len(_raised(result))
    for flag in ("zero_gradients", "unbounded_attack_fails", "eps_insensitive"):
        assert f"{flag}=1 violates {flag} <= 0" in result.message
        assert FLAGS[flag] in result.message


def test_probability_outputs_and_randomized_outputs(quadrant_cnn, quadrants):
    probabilities = _masking(SoftmaxOutput(quadrant_cnn), quadrants)
    assert _raised(probabilities) == {"probability_outputs"}
    noisy = _masking(NoisyLogits(quadrant_cnn), quadrants)
    assert "randomized_outputs" in _raised(noisy) and noisy.metrics["randomized_share"] == 1.0


def test_a_weak_pgd_configuration_is_caught(quadrant_cnn, quadrants):
    """One PGD step of eps from a random start is weaker than FGSM's step from the clean image,
    and four steps with restarts move robust accuracy a lot: both are evaluation failures."""
    weaker = _masking(quadrant_cnn, quadrants, eps=24 / 255, steps=1, rel_step_size=1.0)
    assert "pgd_weaker_than_fgsm" in _raised(weaker)
    assert weaker.metrics["pgd_acc@linf_24/255"] - weaker.metrics["fgsm_acc@linf_24/255"] > 0.25
    unconverged = _masking(quadrant_cnn, quadrants, steps=1, rel_step_size=1.0)
    assert "budget_sensitive" in _raised(unconverged)
    assert unconverged.metrics["pgd_acc@linf_32/255"] - unconverged.metrics["strong_pgd_acc@linf_32/255"] > 0.25


def test_a_flag_can_be_dropped_from_the_config(quadrant_cnn, quadrants):
    run = auditkit.audit(
        SoftmaxOutput(quadrant_cnn), quadrants, checks=["whitebox.masking"],
        settings={"whitebox.masking": {"thresholds": {"probability_outputs": False}}},
    )
    result = run["whitebox.masking"]
    assert result.outcome is Outcome.PASSED and result.metrics["probability_outputs"] == 1.0
    assert "probability_outputs" not in result.thresholds


class _FakeTransfer:
    """Stands in for the transfer plugin: a ``transfer.proxy`` result with planted success curves."""

    def __init__(self, metrics, curves):
        class TransferProxy(Check):
            id = "transfer.proxy"

            def run(self, ctx):
                return Findings(metrics=dict(metrics), curves=list(curves))

        self.check = TransferProxy

    @auditkit.hookimpl
    def auditkit_collect_checks(self, config):
        return [self.check]


def _with_transfer(model, data, curves, metrics=None):
    run = auditkit.audit(
        model, data, checks=["transfer.proxy", "whitebox.masking"],
        plugins=[auditkit_whitebox, _FakeTransfer(metrics or {"queries": 100.0}, curves)], autoload=False,
    )
    return run["whitebox.masking"]


def test_a_transfer_attack_stronger_than_white_box_is_flagged(quadrant_cnn, quadrants):
    # On the masked model white-box PGD at 8/255 fools nothing; a black-box attack fooling 90% is
    # proof that the gradients, not the model, are the obstacle.
    planted = [budget_curve("transfer_success", "linf", [8 / 255], [0.9])]
    masked = _with_transfer(ScaledLogits(quadrant_cnn), quadrants, planted)
    assert "transfer_beats_whitebox" in _raised(masked)
    assert masked.metrics["whitebox_success@linf_8/255"] == 0.0
    assert "transfer_success@linf_8/255: transfer 0.90 vs white-box PGD 0.00" in masked.message
    # On the ordinary model white-box PGD at 48/255 (another budget than the probes use) fools
    # everything, so a transfer success of 0.5 is no warning; a transfer success within the
    # tolerance needs no white-box run; one attack's curve (a variant) is not the budget's.
    planted = [
        budget_curve("transfer_success", "linf", [48 / 255], [0.5]), budget_curve("transfer_success", "l2", [0.5], [0.0]),
        budget_curve("transfer_success", "linf", [8 / 255], [1.0], variant="pgd"),
    ]
    plain = _with_transfer(quadrant_cnn, quadrants, planted)
    assert plain.metrics["transfer_beats_whitebox"] == 0.0 and plain.metrics["whitebox_success@linf_48/255"] == 1.0
    assert not any(name.startswith("whitebox_success@l2") for name in plain.metrics)
    assert plain.details["not_evaluated"] == []
    assert plain.details["flags"]["transfer_beats_whitebox"]["evidence"].endswith("(2 budgets)")


def test_without_transfer_results_the_comparison_is_reported_as_not_evaluated(quadrant_cnn, quadrants):
    result = _masking(quadrant_cnn, quadrants)
    assert result.details["not_evaluated"] == ["transfer_beats_whitebox"]
    assert result.details["flags"]["transfer_beats_whitebox"]["evidence"] == "no transfer.proxy result for this model"


def test_nothing_correct_skips_with_the_reason(linear_problem):
    p = linear_problem
    wrong = auditkit.AuditData("wrong", auditkit.TensorSplit(p.images, 1 - p.labels), num_classes=2)
    result = _masking(p.model, wrong)
    assert result.outcome is Outcome.SKIPPED and "none of the 12 images correctly" in result.message


def test_bad_settings_name_the_setting(quadrant_cnn, quadrants):
    with pytest.raises(auditkit.UsageError, match=r'"whitebox.masking"\] tolerance: must be in \[0, 1\), got 1.5'):
        _masking(quadrant_cnn, quadrants, tolerance=1.5)
    with pytest.raises(auditkit.UsageError, match=r"unknown setting 'epsilon'"):
        _masking(quadrant_cnn, quadrants, epsilon=0.1)


def test_a_constant_model_is_named_as_the_cause(quadrants):
    class Constant(torch.nn.Module):
        """Predicts class 2 whatever the image (a flat function of the input)."""

        def forward(self, x):
            return torch.tensor([0.0, 0.0, 1.0, 0.0]) + 0 * x.mean((1, 2, 3))[:, None]

    result = _masking(Constant(), quadrants)
    assert {"zero_gradients", "unbounded_attack_fails", "eps_insensitive"} <= _raised(result)
    assert result.metrics["clean_acc"] == 0.25
    assert "predicts one class for every image" in result.message
