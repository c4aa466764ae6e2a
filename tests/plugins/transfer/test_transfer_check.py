"""The transfer.proxy check end to end: agreement within a small budget, exact query accounting,
metric names, white-box comparison, skips and settings errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

import auditkit
import auditkit_transfer
from auditkit import AuditData, Check, CheckResult, Findings, Outcome, TensorSplit, UsageError
from auditkit.check import Curve, CurvePoint
from auditkit.data.loaders import load_data
from auditkit_transfer.attacks import AttackConfig
from auditkit_transfer.check import whitebox_gaps
from conftest import FAST, SHAPES, dominant_colour, labelled_by


def _audit(model, data, **settings):
    return auditkit.audit(model, data, checks=["transfer.proxy"], settings={"transfer.proxy": {**FAST, **settings}})


def test_the_proxy_of_a_small_target_reaches_high_agreement_within_a_small_budget(colour_cnn):
    shapes = load_data(SHAPES.replace("n=32", "n=64"))
    assert (colour_cnn(shapes.eval.images).argmax(1) == dominant_colour(shapes.eval.images)).float().mean() >= 0.85
    data = labelled_by(colour_cnn, shapes)
    commonest = data.eval.labels.bincount(minlength=3).max().item() / 64
    run = _audit(colour_cnn, data, query_budget=256, seed_size=64, augment_rounds=2, epochs_per_round=10)
    result = run["transfer.proxy"]
    m = result.metrics
    # 64 natural images (13 held out for early stopping), then two rounds doubling the other 51
    assert m["queries"] == 64 + 51 + 102 <= 256
    assert m["proxy_agreement"] >= 0.85 > commonest + 0.4, (m["proxy_agreement"], commonest)
    assert m["proxy_agreement_lo"] <= m["proxy_agreement"] <= m["proxy_agreement_hi"]
    training = result.details["training"]
    assert training["trained_on"] == "scores" and training["augmentation_rounds"] == 2
    # what the proxy learned transfers; noise of the same size does not
    assert m["transfer_success@l2_1"] >= 0.1 and m["noise_success@l2_1"] == 0.0


def test_the_budget_is_never_exceeded(target_cnn, labelled_by_target):
    # 48 seed queries leave 12: the augmentation round is reservoir-sampled down to them
    m = _audit(target_cnn, labelled_by_target, query_budget=60)["transfer.proxy"].metrics
    assert m["queries"] == 60
    m = _audit(target_cnn, labelled_by_target, query_budget=30, seed_size=48)["transfer.proxy"].metrics
    assert m["queries"] == 30  # the seed set itself is cut to the budget


def test_a_python_callable_is_audited_with_every_query_counted(target_cnn, labelled_by_target):
    seen = {"images": 0}

    def predict(images):
        seen["images"] += images.shape[0]
        with torch.no_grad():
            return torch.softmax(target_cnn(images), 1)

    run = _audit(predict, labelled_by_target)
    m = run["transfer.proxy"].metrics
    assert run.models[0]["white_box"] is False
    assert seen["images"] == 2 + len(labelled_by_target.eval) + m["queries"] + m["attack_queries"]


def test_metric_names_are_stable_and_the_report_is_json(target_cnn, labelled_by_target, tmp_path):
    out = tmp_path / "report.json"
    run = auditkit.audit(
        target_cnn, labelled_by_target, checks=["transfer.proxy"], json=str(out),
        settings={"transfer.proxy": {**FAST, "attacks": ["fgsm", "pgd", "mifgsm"], "modes": ["untargeted", "targeted"]}},
    )
    result = run["transfer.proxy"]
    per_attack = {f"{a}_{b}" for a in ("fgsm", "pgd", "mifgsm") for b in ("linf_8/255", "l2_1") if not (a == "mifgsm" and b == "l2_1")}
    expected = {"queries", "attack_queries", "n_images", "proxy_agreement", "proxy_agreement_lo", "proxy_agreement_hi",
                "transfer_success", "transfer_success_lo", "transfer_success_hi"}
    for key in per_attack | {"linf_8/255", "l2_1"}:
        expected |= {f"transfer_success@{key}", f"transfer_success_lo@{key}", f"transfer_success_hi@{key}"}
    for key in per_attack:
        expected |= {f"targeted_success@{key}", f"targeted_success_lo@{key}", f"targeted_success_hi@{key}"}
    expected |= {"noise_success@linf_8/255", "noise_success@l2_1"}
    assert set(result.metrics) == expected
    m = result.metrics
    # the budget summary is the strongest attack there, and the gate is the Linf 8/255 summary
    assert m["transfer_success@linf_8/255"] == max(m[f"transfer_success@{a}_linf_8/255"] for a in ("fgsm", "pgd", "mifgsm"))
    assert m["transfer_success"] == m["transfer_success@linf_8/255"]
    assert result.thresholds == {"transfer_success": {"op": "max", "value": 0.5}, "proxy_agreement": {"op": "min", "value": 0.5}}
    report = json.loads(out.read_text())
    (entry,) = [r for r in report["results"] if r["check"] == "transfer.proxy"]
    assert entry["metrics"]["transfer_success@pgd_linf_8/255"] == m["transfer_success@pgd_linf_8/255"]
    assert "proxy_validation_agreement" in {a.name for a in result.artifacts}
    assert {"transfer_success_pgd_linf", "noise_success_l2", "transfer_success_linf"} <= {c.name for c in result.curves}
    (point,) = result.curve("transfer_success", "linf", "pgd").points
    assert point.x == 8 / 255 and point.value == m["transfer_success@pgd_linf_8/255"] and point.lo <= point.value <= point.hi
    (point,) = result.curve("transfer_success", "linf").points  # the strongest attack at the budget
    assert (point.value, point.lo) == (m["transfer_success@linf_8/255"], m["transfer_success_lo@linf_8/255"])
    assert [c["name"] for c in entry["curves"]] == [c.name for c in result.curves]


def test_thresholds_gate_on_transfer_success(target_cnn, labelled_by_target):
    strict = auditkit.audit(
        target_cnn, labelled_by_target, checks=["transfer.proxy"],
        settings={"transfer.proxy": {**FAST, "linf_epsilons": ["8/255", "32/255"], "gate_epsilon": "32/255",
                                     "thresholds": {"transfer_success": {"max": 0.05}}}},
    )
    result = strict["transfer.proxy"]
    assert result.outcome is Outcome.FAILED and result.message.startswith("transfer_success=")
    assert "violates transfer_success <= 0.05" in result.message
    assert result.metrics["transfer_success"] == result.metrics["transfer_success@linf_32/255"]


class _FakeWhitebox:
    """Stands in for the white-box plugin, run before transfer.proxy, with planted results:
    metrics and robust accuracy curves as that plugin reports them."""

    def __init__(self, metrics, curves):
        class PlantedPGD(Check):
            id = "whitebox.pgd"

            def run(self, ctx):
                return Findings(metrics=dict(metrics), curves=list(curves))

        self.check = PlantedPGD

    @auditkit.hookimpl
    def auditkit_collect_checks(self, config):
        return [self.check]

    @auditkit.hookimpl
    def auditkit_modify_checks(self, config, checks):
        checks.sort(key=lambda c: not c.id.startswith("whitebox."))


def _robust_acc(norm, points):
    return Curve(name=f"robust_acc_{norm}", metric="robust_acc", norm=norm, points=tuple(CurvePoint(x, v) for x, v in points))


def test_the_gap_to_white_box_success_when_white_box_results_exist(target_cnn, labelled_by_target):
    # 16 of 20 images attacked; 12 of them fooled at linf 8/255 and at l2 1 (robust accuracy 4/20).
    # The metric named like white-box success is a decoy: the curves are what is read.
    planted = {"clean_acc": 0.8, "n_images": 20.0, "n_attacked": 16.0, "attack_success@linf_8/255": 0.1}
    curves = [_robust_acc("linf", [(4 / 255, 0.5), (8 / 255, 0.2)]), _robust_acc("l2", [(1.0, 0.2)])]
    run = auditkit.audit(
        target_cnn, labelled_by_target, checks=["whitebox.pgd", "transfer.proxy"], settings={"transfer.proxy": FAST},
        plugins=[auditkit_transfer, _FakeWhitebox(planted, curves)], autoload=False,
    )
    result = run["transfer.proxy"]
    m = result.metrics
    assert m["whitebox_gap@pgd_linf_8/255"] == 0.75 - m["transfer_success@pgd_linf_8/255"]
    assert m["whitebox_gap@pgd_l2_1"] == 0.75 - m["transfer_success@pgd_l2_1"]
    assert [k for k in m if k.startswith("whitebox_gap")] == ["whitebox_gap@pgd_linf_8/255", "whitebox_gap@pgd_l2_1"]
    assert result.details["whitebox_sources"] == {
        "whitebox_gap@pgd_linf_8/255": "whitebox.pgd:robust_acc@linf_8/255",
        "whitebox_gap@pgd_l2_1": "whitebox.pgd:robust_acc@l2_1",
    }
    alone = _audit(target_cnn, labelled_by_target)["transfer.proxy"]
    assert not any(k.startswith("whitebox_gap") for k in alone.metrics)
    assert alone.details["whitebox_sources"].startswith("no whitebox.fgsm/whitebox.pgd results for this model yet")


def _result(check, curves, *, model="m", outcome=Outcome.PASSED, n_images=30.0, n_attacked=21.0):
    metrics = {"n_images": n_images, "n_attacked": n_attacked}
    return CheckResult(check=check, model=model, outcome=outcome, metrics=metrics, curves=tuple(curves))


def test_whitebox_gaps_reads_the_curves_of_this_models_decided_results():
    results = [
        # 21 of 30 images attacked: 7 fooled at 4/255, 20 at 8/255; nothing measured at l2 0.5
        _result("whitebox.pgd", [_robust_acc("linf", [(4 / 255, 14 / 30), (8 / 255, 1 / 30)]), _robust_acc("l2", [(0.5, math.nan)])]),
        _result("whitebox.pgd", [_robust_acc("linf", [(4 / 255, 0.0)])], model="other"),
        _result("whitebox.fgsm", [_robust_acc("linf", [(8 / 255, 0.0)])], outcome=Outcome.SKIPPED),
        _result("whitebox.fgsm", [_robust_acc("linf", [(8 / 255, 0.0)])], n_attacked=0.0),
        # a curve of another attack, named by its variant
        _result("whitebox.momentum", [Curve(name="mi", metric="robust_acc", norm="linf", variant="mifgsm", points=(CurvePoint(8 / 255, 0.3),))]),
    ]
    transfer = {
        AttackConfig("pgd", "linf", 4 / 255): 0.25,
        AttackConfig("pgd", "linf", 8 / 255): 0.5,
        AttackConfig("pgd", "linf", 0.0314): 0.1,  # within 1% of 8/255, but another budget
        AttackConfig("pgd", "l2", 0.5): 0.2,
        AttackConfig("fgsm", "linf", 8 / 255): 0.0,
        AttackConfig("mifgsm", "linf", 8 / 255): 0.125,
    }
    gaps, sources = whitebox_gaps(results, "m", transfer)
    # exactly the white-box check's own attack_success (fooled / attacked), not 1 - acc / clean_acc
    assert gaps == {
        "whitebox_gap@pgd_linf_4/255": 7 / 21 - 0.25,
        "whitebox_gap@pgd_linf_8/255": 20 / 21 - 0.5,
        "whitebox_gap@mifgsm_linf_8/255": 12 / 21 - 0.125,
    }
    assert list(gaps) == list(sources)
    assert sources["whitebox_gap@pgd_linf_8/255"] == "whitebox.pgd:robust_acc@linf_8/255"
    assert sources["whitebox_gap@mifgsm_linf_8/255"] == "whitebox.momentum:robust_acc@linf_8/255"
    assert whitebox_gaps(results, "nobody", transfer) == ({}, {})


def test_without_a_train_split_a_share_is_held_out_and_said_so(target_cnn, labelled_by_target):
    eval_only = AuditData("eval-only", labelled_by_target.eval, num_classes=4)
    run = _audit(target_cnn, eval_only)
    held_out = [w for w in run.report["warnings"] if "held out" in w]
    assert len(held_out) == 1 and "for the transfer proxy's queries" in held_out[0], run.report["warnings"]
    assert "6 of 32 images" in held_out[0]  # 20%, rounded
    assert run["transfer.proxy"].outcome is not Outcome.SKIPPED
    assert len(eval_only.eval) == 32 and eval_only.train is None  # the caller's data is left as it was


def test_without_a_right_answer_the_check_skips(target_cnn, labelled_by_target):
    wrong = AuditData(
        "wrong", TensorSplit(labelled_by_target.eval.images, (labelled_by_target.eval.labels + 1) % 4), labelled_by_target.train, num_classes=4,
    )
    result = _audit(target_cnn, wrong)["transfer.proxy"]
    assert result.outcome is Outcome.SKIPPED and "classifies none of the 32 evaluation images correctly" in result.message


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"gate_epsilon": "16/255"}, "gate_epsilon=linf_16/255 is not among linf_epsilons ['linf_8/255']"),
        ({"attacks": ["cw"]}, "attacks=['cw']; expected a non-empty list of fgsm, pgd, mifgsm"),
        ({"linf_epsilons": ["eight"]}, "linf_epsilons: 'eight' is not a number or a fraction like '8/255'"),
        ({"query_budget": 0}, "query_budget must be >= 1, got 0"),
        ({"modes": ["sideways"]}, "modes=['sideways']; expected a non-empty list of untargeted, targeted"),
    ],
)
def test_bad_settings_are_usage_errors(settings, message, target_cnn, labelled_by_target):
    with pytest.raises(UsageError) as info:
        _audit(target_cnn, labelled_by_target, **settings)
    assert message in str(info.value)


def test_the_users_model_is_queried_only(target_cnn, labelled_by_target):
    before = {k: v.clone() for k, v in target_cnn.state_dict().items()}
    calls = []
    handle = target_cnn.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        run = _audit(target_cnn, labelled_by_target)
    finally:
        handle.remove()
    m = run["transfer.proxy"].metrics
    assert all(torch.equal(before[k], v) for k, v in target_cnn.state_dict().items())
    assert not target_cnn.training and all(p.grad is None for p in target_cnn.parameters())
    # every forward pass is a probe, the clean pass or a query of this check
    assert sum(calls) == 2 + len(labelled_by_target.eval) + m["queries"] + m["attack_queries"]
    assert not math.isnan(m["proxy_agreement"])


def test_a_binding_time_cap_is_reported_in_the_result(target_cnn, labelled_by_target):
    # A cap of a nanosecond binds before the first step on any machine: deterministic.
    run = _audit(target_cnn, labelled_by_target, max_train_seconds=1e-9)
    result = run["transfer.proxy"]
    assert result.details["training"]["time_cap_bound"] is True
    assert any("transfer.proxy on target: proxy training stopped at its safety cap" in w for w in run.report["warnings"])
    assert "time" in result.details["training"]["stopped"]
    assert "safety cap max_train_seconds=1e-09" in result.message and "depend on machine speed" in result.message
    uncapped = _audit(target_cnn, labelled_by_target)["transfer.proxy"]
    assert uncapped.details["training"]["time_cap_bound"] is False and "safety cap" not in uncapped.message
