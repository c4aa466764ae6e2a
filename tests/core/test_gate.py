"""The CI gate: --compare against an earlier report, the Markdown summary, and the pytest plugin."""
from __future__ import annotations

import json
import textwrap

import pytest

from auditkit.cli import main
from auditkit.compare import find_regressions, load_report
from auditkit.errors import UsageError

FACTORY = "auditkit.testing.models:tiny_factory"
DATA = "synthetic:shapes?n=8&size=32"


def _report(**metrics):
    return {
        "schema": "auditkit.report/1",
        "results": [
            {"check": "x.y", "model": "target", "role": "target", "outcome": "passed", "metrics": metrics,
             "headline": list(metrics), "directions": {"acc": "higher", "err": "lower"}},
            {"check": "x.y", "model": "resnet18", "role": "baseline", "outcome": "passed",
             "metrics": {"acc": 0.0}, "headline": ["acc"], "directions": {"acc": "higher"}},
        ],
    }


def test_regressions_respect_direction_and_tolerance():
    before = _report(acc=0.80, err=0.10, other=1.0)
    assert find_regressions(_report(acc=0.79, err=0.11, other=0.0), before) == []  # within tolerance; no direction
    regs = find_regressions(_report(acc=0.70, err=0.20, other=1.0), before)
    assert [(r.metric, r.previous, r.current) for r in regs] == [("acc", 0.80, 0.70), ("err", 0.10, 0.20)]
    assert regs[0].describe() == "x.y acc fell from 0.8 to 0.7 (higher is better)"
    assert find_regressions(_report(acc=0.95, err=0.0, other=1.0), before) == []  # improvements are fine


def test_bad_previous_reports_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="not an auditkit report"):
        load_report(tmp_path / "x.json")


def test_compare_fails_the_run_and_md_lists_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the untrained model is held to no accuracy rule here: only the comparison decides
    (tmp_path / "auditkit.toml").write_text('[tool.auditkit.checks."accuracy.clean"]\nthresholds = { p_above_chance = false }\n')
    base = ["run", "--baselines", "none", "--checks", "accuracy.clean", "--model", FACTORY, "--data", DATA, "-q"]
    assert main([*base, "--json", "before.json"]) == 0
    before = json.loads((tmp_path / "before.json").read_text())
    top1 = before["results"][0]["metrics"]["top1"]
    assert before["results"][0]["directions"]["top1"] == "higher"
    assert main([*base, "--json", "same.json", "--compare", "before.json"]) == 0
    before["results"][0]["metrics"]["top1"] = top1 + 0.5  # pretend it used to be much better
    (tmp_path / "better.json").write_text(json.dumps(before))
    code = main([*base, "--json", "after.json", "--compare", "better.json", "--md", "summary.md"])
    assert code == 1
    out = capsys.readouterr().out
    assert "REGRESSED accuracy.clean top1 fell" in out
    after = json.loads((tmp_path / "after.json").read_text())
    assert after["comparison"]["regressions"][0]["metric"] == "top1"
    assert after["summary"]["exit_code"] == 1
    md = (tmp_path / "summary.md").read_text()
    assert "audit failed" in md and "regression: accuracy.clean top1 fell" in md
    assert "| ✅ `accuracy.clean` | top1 |" in md


def test_pytest_plugin_fixture_audits_once_per_session(pytester):
    pytester.makepyfile(textwrap.dedent(f"""
        import torch
        from auditkit.testing.models import TinyGAPNet

        MODEL = TinyGAPNet(num_classes=4)
        CALLS = []

        def test_first(auditkit_audit):
            run = auditkit_audit(MODEL, "{DATA}", checks=["accuracy.clean"])
            CALLS.append(run)
            assert 0.0 <= run["accuracy.clean"].metrics["top1"] <= 1.0

        def test_second_reuses_the_run(auditkit_audit):
            run = auditkit_audit(MODEL, "{DATA}", checks=["accuracy.clean"])
            assert run is CALLS[0]
            assert run["accuracy.clean"].metrics["n_images"] == 8
    """))
    out = pytester.path / "cards"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--auditkit-scorecard", str(out))
    result.assert_outcomes(passed=2)
    assert (out / "audit-1.json").is_file()
