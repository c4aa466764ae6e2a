"""Configuration typos: a threshold on a metric the check does not report is a usage error
naming the metric and the closest one, never a model failure at run time."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from auditkit_whitebox.robustness import PGDRobustness

import auditkit
from auditkit import Check, Findings
from auditkit.config import configure_check
from auditkit.errors import UsageError
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.plugins import CheckPlugin

from .conftest import DATA, FACTORY, assert_usage_error

RUN = ("run", "--model", FACTORY, "--data", DATA, "--baselines", "none", "--checks", "accuracy.clean")
TYPO = 'top_1 = {min = 0.5}\n'


@pytest.mark.parametrize(
    "filename, text",
    [
        ("auditkit.toml", '[checks."accuracy.clean".thresholds]\n' + TYPO),
        ("pyproject.toml", '[project]\nname = "x"\n[tool.auditkit.checks."accuracy.clean".thresholds]\n' + TYPO),
    ],
)
def test_threshold_on_a_misspelled_metric_is_a_usage_error(cli, tmp_path, filename, text):
    (tmp_path / filename).write_text(text)
    result = cli(*RUN)
    assert_usage_error(result, filename, "accuracy.clean", "'top_1'", "did you mean 'top1'", "reports: top1")
    assert "reported no" not in result.out + result.err
    assert "accuracy.clean" not in result.out  # no check ran


def test_threshold_typo_is_reported_before_the_model_is_loaded(cli, tmp_path):
    (tmp_path / "auditkit.toml").write_text('[checks."accuracy.clean".thresholds]\n' + TYPO)
    result = cli("run", "--model", "missing_model.py:factory", *RUN[3:])
    assert_usage_error(result, "'top_1'", "did you mean 'top1'")


def test_threshold_typo_through_the_python_api_is_a_usage_error():
    settings = {"accuracy.clean": {"thresholds": {"top_1": {"min": 0.5}}}}
    with pytest.raises(UsageError, match=r"unknown metric 'top_1'; did you mean 'top1'\?"):
        auditkit.audit(TinyGAPNet(num_classes=4), DATA, checks=["accuracy.clean"], settings=settings, device="cpu")


def test_dynamic_whitebox_metric_names_follow_the_configured_budgets():
    check = configure_check(PGDRobustness, {"thresholds": {"robust_acc@linf_2/255": {"min": 0.3}}}, "auditkit.toml")
    assert any(t.metric == "robust_acc@linf_2/255" for t in check.active_thresholds)
    custom = {"linf_eps": [0.01], "l2_eps": [], "thresholds": {"robust_acc_lo@linf_0.01": {"min": 0.1}}}
    assert any(t.metric == "robust_acc_lo@linf_0.01" for t in configure_check(PGDRobustness, custom, "f").active_thresholds)
    with pytest.raises(UsageError, match=r"unknown metric 'robust_acc@linf_3/255'; did you mean"):
        configure_check(PGDRobustness, {"thresholds": {"robust_acc@linf_3/255": {"min": 0.3}}}, "auditkit.toml")


class Undeclared(Check):
    """A third-party check written before metric declarations existed."""

    id = "thirdparty.undeclared"

    @dataclass
    class Settings:
        pass

    def run(self, ctx):
        return Findings(metrics={"value": 1.0})


def test_a_check_without_a_declaration_accepts_any_threshold():
    run = auditkit.audit(
        TinyGAPNet(num_classes=4), DATA, plugins=[CheckPlugin(Undeclared)], autoload=False, device="cpu",
        settings={"thirdparty.undeclared": {"thresholds": {"value": {"min": 0.5}, "other": {"max": 1}}}},
    )
    result = run["thirdparty.undeclared"]
    assert set(result.thresholds) == {"value", "other"}
    assert "reported no 'other'" in result.message  # still judged at run time, as before
