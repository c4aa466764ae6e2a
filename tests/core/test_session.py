"""The session: guarded checks, outcomes, thresholds, the shared clean pass, interruption."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import auditkit
from auditkit import Check, Findings, Outcome, Threshold
from auditkit.session import ExitCode
from auditkit.context import CleanPass
from auditkit.errors import TargetError
from auditkit.testing.models import NaNNet, TinyGAPNet
from auditkit.testing.plugins import CheckPlugin


class Crashing(Check):
    id = "test.crashing"

    def run(self, ctx):
        raise ZeroDivisionError("planted crash")


class Constant(Check):
    id = "test.constant"
    headline = ("value",)
    thresholds = (Threshold("value", "min", 0.5),)

    @dataclass
    class Settings:
        value: float = 1.0

    def run(self, ctx):
        return Findings(metrics={"value": self.settings.value})


class Skipping(Check):
    id = "test.skipping"

    def run(self, ctx):
        auditkit.skip("nothing to do here")


class XFailing(Check):
    id = "test.xfailing"

    def run(self, ctx):
        auditkit.xfail("known limitation")


class NeedsBoxes(Check):
    id = "test.needs_boxes"
    requires = ("localization",)

    def run(self, ctx):  # pragma: no cover - must be skipped
        raise AssertionError("ran without boxes")


def _audit(model, data, *classes, **kw):
    return auditkit.audit(model, data, plugins=[CheckPlugin(*classes)], autoload=False, **kw)


def test_clean_accuracy_matches_a_manual_forward_pass(tiny_data, tiny_model):
    run = auditkit.audit(tiny_model, tiny_data, checks=["accuracy.clean"])
    with torch.no_grad():
        tiny_model.eval()
        preds = tiny_model(tiny_data.eval.images).argmax(1)
    expected = (preds == tiny_data.eval.labels).float().mean().item()
    assert run["accuracy.clean"].metrics["top1"] == pytest.approx(expected)
    assert run["accuracy.clean"].metrics["n_images"] == len(tiny_data.eval)
    # the verdict is the default rule: significantly above the best constant answer
    assert (run.exit_code == ExitCode.OK) == (run["accuracy.clean"].metrics["p_above_chance"] <= 0.05)


def test_a_crashing_check_becomes_an_error_and_the_audit_goes_on(tiny_data, tiny_model):
    run = _audit(tiny_model, tiny_data, Crashing, Constant)
    crashed = run["test.crashing"]
    assert crashed.outcome is Outcome.ERROR
    assert "ZeroDivisionError: planted crash" in crashed.message
    assert "Traceback" in crashed.traceback and "planted crash" in crashed.traceback
    assert run["test.constant"].outcome is Outcome.PASSED
    assert run.exit_code == ExitCode.CHECKS_FAILED


def test_skip_xfail_and_missing_requirements(tiny_data, tiny_model):
    run = _audit(tiny_model, tiny_data, Skipping, XFailing, NeedsBoxes)
    assert run["test.skipping"].outcome is Outcome.SKIPPED
    # the untrained tiny model predicts one class for every image: each result notes it
    assert run["test.skipping"].message.split("; note: ")[0] == "nothing to do here"
    assert run["test.xfailing"].outcome is Outcome.XFAILED
    assert run["test.needs_boxes"].outcome is Outcome.SKIPPED
    assert "no boxes or masks" in run["test.needs_boxes"].message
    assert run.exit_code == ExitCode.OK


def test_thresholds_from_defaults_and_settings(tiny_data, tiny_model):
    run = _audit(tiny_model, tiny_data, Constant, settings={"test.constant": {"value": 0.25}})
    result = run["test.constant"]
    assert result.outcome is Outcome.FAILED
    assert result.message.split("; note: ")[0] == "value=0.25 violates value >= 0.5"
    assert result.thresholds == {"value": {"op": "min", "value": 0.5}}
    assert run.exit_code == ExitCode.CHECKS_FAILED
    relaxed = _audit(
        tiny_model, tiny_data, Constant,
        settings={"test.constant": {"value": 0.25, "thresholds": {"value": {"min": 0.2}}}},
    )
    assert relaxed["test.constant"].outcome is Outcome.PASSED


def test_nan_logits_are_an_error_naming_the_images(tiny_data):
    run = auditkit.audit(NaNNet(num_classes=4), tiny_data, checks=["accuracy.clean"])
    result = run["accuracy.clean"]
    assert result.outcome is Outcome.ERROR
    assert "non-finite scores" in result.message and f"{len(tiny_data.eval)} of {len(tiny_data.eval)}" in result.message


def test_the_clean_pass_is_computed_once_and_shared(tiny_data, tiny_model):
    calls = []

    class UsesClean(Check):
        id = "test.uses_clean"

        def run(self, ctx):
            calls.append(id(ctx.clean))
            return Findings(metrics={"n": len(ctx.clean)})

    class UsesCleanToo(UsesClean):
        id = "test.uses_clean_too"

    counter = {"n": 0}
    handle = tiny_model.register_forward_hook(lambda *a: counter.__setitem__("n", counter["n"] + 1))
    try:
        _audit(tiny_model, tiny_data, UsesClean, UsesCleanToo, batch_size=8)
    finally:
        handle.remove()
    assert len(set(calls)) == 1
    # one probe forward + ceil(24 / 8) clean batches, whatever the number of checks
    assert counter["n"] == 1 + 3


def test_ctrl_c_writes_results_so_far_and_exits_2(tiny_data, tiny_model, tmp_path):
    class Interrupt(Check):
        id = "test.zz_interrupt"

        def run(self, ctx):
            raise KeyboardInterrupt

    out = tmp_path / "r.json"
    run = _audit(tiny_model, tiny_data, Constant, Interrupt, json=str(out))
    assert run.exit_code == ExitCode.INTERRUPTED
    report = json.loads(out.read_text())
    assert report["summary"]["interrupted"] is True
    assert [r["check"] for r in report["results"]] == ["test.constant"]


def test_no_checks_collected_exits_5(tiny_data, tiny_model):
    run = auditkit.audit(tiny_model, tiny_data, keyword="no_check_has_this_name")
    assert run.exit_code == ExitCode.NO_CHECKS_COLLECTED
    assert any("no check id contains 'no_check_has_this_name'" in w for w in run.report["warnings"])


def test_a_check_returning_the_wrong_type_is_an_error(tiny_data, tiny_model):
    class ReturnsDict(Check):
        id = "test.returns_dict"

        def run(self, ctx):
            return {"value": 1.0}

    run = _audit(tiny_model, tiny_data, ReturnsDict)
    assert run["test.returns_dict"].outcome is Outcome.ERROR
    assert "expected auditkit.Findings" in run["test.returns_dict"].message


def test_to_dataframe_has_one_row_per_metric(tiny_data, tiny_model):
    df = auditkit.audit(tiny_model, tiny_data, checks=["accuracy.clean"]).to_dataframe()
    assert list(df.columns) == ["check", "model", "role", "outcome", "metric", "value"]
    assert sorted(df["metric"]) == ["chance", "n_images", "p_above_chance", "top1", "top1_ci_high", "top1_ci_low"]


def test_black_box_callable_target(tiny_data, tiny_model):
    tiny_model.eval()

    def predict(images):
        with torch.no_grad():
            return torch.softmax(tiny_model(images), 1)

    run = auditkit.audit(predict, tiny_data, checks=["accuracy.clean"])
    white = auditkit.audit(tiny_model, tiny_data, checks=["accuracy.clean"])
    assert run["accuracy.clean"].metrics["top1"] == white["accuracy.clean"].metrics["top1"]
    assert run.models[0]["white_box"] is False


def test_seeds_differ_per_check_and_model_but_repeat_across_runs(tiny_data, tiny_model):
    seen = []

    class Draw(Check):
        id = "test.draw"

        def run(self, ctx):
            value = float(torch.rand(1, generator=ctx.generator)) + float(torch.rand(1))
            seen.append(value)
            return Findings(metrics={"draw": value})

    _audit(tiny_model, tiny_data, Draw, seed=3)
    _audit(tiny_model, tiny_data, Draw, seed=3)
    _audit(tiny_model, tiny_data, Draw, seed=4)
    assert seen[0] == seen[1] != seen[2]


def test_audit_leaves_the_callers_random_generators_as_it_found_them(tiny_model, tiny_data):
    import random

    import numpy as np

    def draws():
        return random.random(), float(np.random.rand()), torch.rand(2).tolist()

    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    expected = draws()
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    auditkit.audit(tiny_model, tiny_data, checks=["accuracy.clean", "whitebox.fgsm"], seed=3)
    assert draws() == expected  # a training loop that audits after each epoch keeps its own shuffles


def test_warnings_reach_the_report_not_stderr(tiny_data, capsys):
    import warnings

    torch.manual_seed(0)
    wider = TinyGAPNet(num_classes=6)  # more outputs than the data's 4 classes: auditkit warns
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        run = auditkit.audit(wider, tiny_data, checks=["accuracy.clean"], verbose=0)
    assert not escaped, [str(w.message) for w in escaped]
    assert any("outputs 6 classes; the data uses the first 4" in w for w in run.report["warnings"]), run.report["warnings"]
    captured = capsys.readouterr()
    assert "warning: target outputs 6 classes" in captured.out and "UserWarning" not in captured.err


class SwallowingSkip(Check):
    """A check whose broad ``except Exception`` would have swallowed an Exception-based skip."""

    id = "test.swallowing_skip"

    def run(self, ctx):
        try:
            auditkit.skip("skipped through a broad except")
        except Exception:  # noqa: BLE001 - the point of the test
            pass
        return Findings(metrics={"value": 1.0})


def test_a_broad_except_in_a_check_cannot_swallow_skip_or_xfail(tiny_data, tiny_model):
    assert issubclass(auditkit.Skipped, BaseException) and not issubclass(auditkit.Skipped, Exception)
    assert issubclass(auditkit.XFailed, BaseException) and not issubclass(auditkit.XFailed, Exception)
    run = _audit(tiny_model, tiny_data, SwallowingSkip)
    assert run["test.swallowing_skip"].outcome is Outcome.SKIPPED
    assert run["test.swallowing_skip"].message.startswith("skipped through a broad except")


def test_exit_codes_are_an_int_enum_written_as_numbers(tiny_data, tiny_model, tmp_path):
    import enum

    assert issubclass(ExitCode, enum.IntEnum)
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]
    run = _audit(tiny_model, tiny_data, Crashing, json=str(tmp_path / "r.json"))
    assert run.exit_code is ExitCode.CHECKS_FAILED and run.exit_code == 1
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["exit_code"] == 1


def test_the_device_is_resolved_once_and_handed_on_as_a_torch_device(tiny_data, monkeypatch):
    import auditkit.main
    from auditkit.device import resolve_device as real

    calls, seen = [], []
    monkeypatch.setattr(auditkit.main, "resolve_device", lambda d: calls.append(d) or real(d))

    class Probe(auditkit.Check):
        id = "test.device"

        def run(self, ctx):
            seen.append((ctx.device, ctx.target.device, ctx.session.device))
            return Findings(metrics={"value": 1.0})

    class Loader:
        @auditkit.hookimpl(tryfirst=True)
        def auditkit_load_model(self, spec, options, config):
            seen.append(options.device)
            from auditkit.testing.models import TinyGAPNet

            return auditkit.Target(TinyGAPNet(num_classes=options.num_classes), spec=spec, device=options.device)

    run = auditkit.audit("probe:model", tiny_data, plugins=[CheckPlugin(Probe), Loader()], autoload=False, device="cpu")
    assert run["test.device"].outcome is Outcome.PASSED
    cpu = torch.device("cpu")
    assert calls == ["cpu"] and seen == [cpu, (cpu, cpu, cpu)]
    assert all(isinstance(d, torch.device) for d in [seen[0], *seen[1]])


def test_the_python_api_takes_the_options_by_name_and_refuses_unknown_ones(tiny_data, tiny_model):
    import inspect

    from auditkit.main import audit

    assert {"max_images", "baseline_steps", "compare_abs_tolerance", "device"} <= set(inspect.signature(audit).parameters)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_image'; did you mean 'max_images'"):
        _audit(tiny_model, tiny_data, Constant, max_image=3)
    assert _audit(tiny_model, tiny_data, Constant, max_images=3)["test.constant"].metrics == {"value": 1.0}


def test_names_moved_out_of_the_session_module_still_import_from_it():
    from auditkit import context, device, environment, progress, results, seeding, session

    assert session.AuditContext is context.AuditContext and session.CleanPass is context.CleanPass
    assert session.AuditRun is results.AuditRun and session.environment is environment.environment
    assert session.resolve_device is device.resolve_device and session.describe_device is device.describe_device
    assert session.progress_bar is progress.progress_bar
    assert session.seed_everything is seeding.seed_everything and session.check_seed is seeding.check_seed
    assert session.preserved_random_state is seeding.preserved_random_state


def test_clean_pass_names_its_scores_and_never_hands_out_probabilities_as_logits():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    white = CleanPass(logits, logits.argmax(1), None, score_kind="logits")
    black = CleanPass(torch.softmax(logits, 1), logits.argmax(1), None, score_kind="probabilities")
    labels_only = CleanPass(None, logits.argmax(1), None, score_kind=None)
    assert torch.equal(white.logits, logits)
    with pytest.raises(TargetError, match="probabilities, not logits"):
        black.logits
    with pytest.raises(TargetError, match="labels only"):
        labels_only.probs
    assert torch.allclose(white.probs, black.probs)
    # log_probs are logits up to a constant per image: temperature scaling agrees for both kinds
    assert torch.allclose(torch.softmax(white.log_probs / 2, 1), torch.softmax(black.log_probs / 2, 1), atol=1e-6)
    assert torch.allclose(torch.softmax(white.log_probs / 2, 1), torch.softmax(logits / 2, 1), atol=1e-6)
    with pytest.raises(ValueError):
        CleanPass(logits, logits.argmax(1), None, score_kind="softmax")


def test_a_check_can_announce_a_line_before_its_result(tiny_model, tiny_data, capsys):
    class Loud(Check):
        id = "test.loud"

        def run(self, ctx):
            ctx.announce("about 12 queries")
            return Findings(metrics={"value": 1.0})

    auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Loud)], autoload=False, verbose=0)
    out = capsys.readouterr().out
    assert "target :: test.loud: about 12 queries" in out
    assert out.index("test.loud: about 12 queries") < out.index("target :: test.loud ..")
    auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Loud)], autoload=False, verbose=-1)
    assert "about 12 queries" not in capsys.readouterr().out


class Costly(Check):
    """Runs as many forward passes of the evaluation images as its estimate says."""

    id = "test.costly"

    @dataclass
    class Settings:
        repeats: int = 3

    def estimate(self, ctx):
        return auditkit.Cost(forward=self.settings.repeats * ctx.n_images, gradient=0)

    @torch.no_grad()
    def run(self, ctx):
        for _ in range(self.settings.repeats):
            for batch in ctx.batches():
                ctx.forward(batch.images)
        return Findings(metrics={"value": 1.0})


def test_a_long_check_announces_its_estimated_cost_before_it_runs(tiny_model, tiny_data, capsys, monkeypatch):
    from auditkit.testing.passes import PassCounter

    monkeypatch.setattr(auditkit.session, "ANNOUNCE_COST_AFTER_S", 0.0)  # announce any cost
    with PassCounter(tiny_model) as counter:
        run = auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Costly), counter], autoload=False, verbose=0)
    (result,) = run.results
    n = len(tiny_data.eval)
    # the estimate is in the details (counts, no clock) and equals the passes the check made
    assert result.details["estimated_cost"] == {"forward": 3 * n, "gradient": 0}
    assert counter.forward["test.costly"] == 3 * n and counter.gradient["test.costly"] == 0
    assert counter.forward[None] == n  # the clean pass, outside any check, once
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "test.costly: about" in line)
    assert f"about {3 * n:,} forward image passes; ~" in line and "clean-pass rate" in line
    assert out.index("test.costly: about") < out.index("target :: test.costly ..")

    # a count that is the most the run may make says so
    monkeypatch.setattr(Costly, "estimate", lambda self, ctx: auditkit.Cost(forward=3 * ctx.n_images, maximum=True))
    auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Costly)], autoload=False, verbose=0)
    line = next(line for line in capsys.readouterr().out.splitlines() if "test.costly: at most" in line)
    assert f"at most {3 * n:,} forward image passes; up to ~" in line


def test_a_short_check_is_not_announced_and_a_failing_estimate_changes_nothing(tiny_model, tiny_data, capsys, monkeypatch):
    auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Costly)], autoload=False, verbose=0)
    assert "test.costly: about" not in capsys.readouterr().out  # a few ms: below ANNOUNCE_COST_AFTER_S

    def broken(self, ctx):
        raise RuntimeError("no estimate")

    monkeypatch.setattr(Costly, "estimate", broken)
    run = auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Costly)], autoload=False, verbose=0)
    (result,) = run.results
    assert result.outcome == Outcome.PASSED and "estimated_cost" not in result.details
    # the plugin's author is told, in a warning line and in the report
    assert any("test.costly on target: its cost estimate (Check.estimate) failed, RuntimeError: no estimate" in w
               for w in run.report["warnings"])
    assert "warning: test.costly on target: its cost estimate" in capsys.readouterr().out

    monkeypatch.setattr(Costly, "estimate", lambda self, ctx: 12)
    run = auditkit.audit(tiny_model, tiny_data, plugins=[CheckPlugin(Costly)], autoload=False, verbose=0)
    assert run.results[0].outcome == Outcome.PASSED
    assert any("Check.estimate returned int, expected auditkit.Cost or None" in w for w in run.report["warnings"])


def test_cost_arithmetic_and_words():
    cost = auditkit.Cost(forward=2496, gradient=5600) + auditkit.Cost(forward=4, note="proxy training")
    assert (cost.forward, cost.gradient, cost.note) == (2500, 5600, "proxy training")
    assert cost.forward_equivalents == 2500 + 3 * 5600
    assert cost.describe() == "2,500 forward and 5,600 forward+backward image passes; proxy training"
    assert auditkit.Cost().describe() == "no image passes"
    bound = auditkit.Cost(gradient=10, maximum=True)
    assert (cost + bound).maximum and not cost.maximum and bound.times(3) == auditkit.Cost(gradient=30, maximum=True)
    assert bound.to_json() == {"forward": 0, "gradient": 10, "maximum": True}
    with pytest.raises(ValueError):
        auditkit.Cost(forward=-1)
