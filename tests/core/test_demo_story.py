"""The demo's closing lines: where the demo model stands out from the baselines that learned
the task, by each metric's better side, largest relative gaps first, weak baselines left out."""
from __future__ import annotations

from types import SimpleNamespace

from auditkit import CheckResult, Outcome
from auditkit.demo import _contrasts, _story
from auditkit.errors import ExitCode


def _result(check, model, role, metrics, outcome=Outcome.PASSED, directions=None):
    return CheckResult(
        check=check, model=model, outcome=outcome, metrics=metrics, role=role,
        headline=tuple(metrics), directions=directions or {m: "higher" for m in metrics},
    )


def _session(results, weak=()):
    return SimpleNamespace(
        results=results, exitstatus=ExitCode.CHECKS_FAILED, weak_baselines=lambda: [SimpleNamespace(name=w) for w in weak]
    )


def test_contrasts_name_what_is_worse_than_every_learned_baseline():
    results = [
        _result("whitebox.pgd", "target", "target", {"clean_acc": 0.71, "robust_acc@linf_8/255": 0.0}),
        _result("whitebox.pgd", "alexnet", "baseline", {"clean_acc": 0.75, "robust_acc@linf_8/255": 0.29}),
        _result("whitebox.pgd", "resnet18", "baseline", {"clean_acc": 0.70, "robust_acc@linf_8/255": 0.62}),
        _result("whitebox.pgd", "weakling", "baseline", {"clean_acc": 0.5, "robust_acc@linf_8/255": 0.0}),
        _result("transfer.proxy", "target", "target", {"transfer_success": 0.29}, directions={"transfer_success": "lower"}),
        _result("transfer.proxy", "alexnet", "baseline", {"transfer_success": 0.0}, directions={"transfer_success": "lower"}),
        _result("whitebox.fgsm", "target", "target", {"clean_acc": 0.71}),
        _result("whitebox.fgsm", "alexnet", "baseline", {"clean_acc": 0.7}),
    ]
    found = _contrasts(_session(results), weak={"weakling"})
    # clean_acc is not worse than resnet18's 0.70 (pgd) nor alexnet's 0.70 (fgsm)
    assert found == [
        "robust_acc@linf_8/255 0.00 vs 0.29-0.62 (whitebox.pgd)",
        "transfer_success 0.29 vs 0.00 (transfer.proxy)",
    ]
    story = _story(_session(results + [_result("gradcam.localization", "target", "target", {"pointing_game": 0.08}, Outcome.FAILED)], weak=("weakling",)))
    lines = story.splitlines()
    assert lines[0] == "the audit found problems in the demo model: 1 check(s) failed (gradcam.localization)."
    assert "robust_acc@linf_8/255 0.00 vs 0.29-0.62" in lines[1] and "corner marker" in lines[2]
    assert "  - gradcam.localization failed: pointing_game 0.08." in lines
    assert "weakling without the task learned" in story


def test_the_demo_model_is_the_same_whatever_the_global_generator_held(tmp_path, monkeypatch):
    """PyTorch seeds its default generator afresh in every process: the demo model's training
    seeds it before building the model, so two trainings (one epoch here) give the same weights."""
    import torch

    import auditkit.demo as demo

    monkeypatch.setattr(demo, "DEMO_MODEL_EPOCHS", 1)
    weights = []
    for run in (1, 2):
        monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / f"cache{run}"))
        torch.manual_seed(1000 + run)  # what an earlier import or the process's start left there
        model, source = demo.train_demo_model(torch.device("cpu"), lambda iterable, **_: iterable)
        assert source == "trained"
        weights.append(model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
