"""The Markdown summary (auditkit/reporters/markdown.py), from hand-built results: only what a
rule decided gets a mark, reference values none; "What failed" shows the rule's numbers
(thresholds, p-values, intervals); insufficient evidence is listed as such."""
from __future__ import annotations

from types import SimpleNamespace

from auditkit.check import Outcome
from auditkit.reporters.markdown import build_markdown
from auditkit.testing.scorecard import result


def session(results, baselines=("alexnet",), weak=(), exitstatus=None, regressions=()):
    counts = {o.value: sum(1 for r in results if r.role == "target" and r.outcome is o) for o in Outcome}
    if exitstatus is None:
        exitstatus = 1 if counts["failed"] or counts["error"] else 0
    models = [SimpleNamespace(name=n, info={"quality": {"val_acc": 0.25, "constant": True, "majority_fraction": 0.97}})
              for n in baselines]
    return SimpleNamespace(
        results=list(results), counts=lambda: counts, exitstatus=exitstatus, duration_s=2.5,
        target=SimpleNamespace(name="target", spec="torchvision:resnet18"), data=SimpleNamespace(spec="synthetic:shapes"),
        baselines=models, weak_baselines=lambda: [m for m in models if m.name in weak], regressions=list(regressions),
    )


def localization(model, p_value, gain_low, outcome):
    return result(
        "gradcam.localization", model, outcome,
        metrics={"pointing_game": 0.55, "pointing_game_ci_low": 0.4, "pointing_game_ci_high": 0.7, "center_baseline": 0.5,
                 "energy_in_box": 0.3, "energy_gain": 0.08, "energy_gain_ci_low": gain_low, "energy_gain_ci_high": 0.12,
                 "pointing_p_value": p_value, "n_images": 40},
        thresholds={"pointing_p_value": {"op": "max", "value": 0.05}, "energy_gain_ci_low": {"op": "min", "value": 0.05}},
        headline=("pointing_game", "center_baseline", "energy_in_box"),
        message=(f"pointing_p_value={p_value} violates pointing_p_value <= 0.05 (pointing_game 0.550 vs center 0.500)"
                 if outcome == "failed" else "ok"),
    )


def rows(text: str) -> dict[tuple[str, str], list[str]]:
    """Table rows by (check, metric name without its mark); the check cell is carried down."""
    out, check = {}, ""
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith(("| check", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        check = cells[0].split("`")[1] if "`" in cells[0] else check
        out[(check, cells[1].replace("❌ ", "").replace("✅ ", ""))] = cells
    return out


def test_only_the_metric_that_broke_its_rule_gets_a_cross():
    text = build_markdown(session([localization("target", 0.21, 0.07, "failed"), localization("alexnet", 0.01, 0.07, "passed")]))
    table = rows(text)
    assert table[("gradcam.localization", "pointing_p_value")][1] == "❌ pointing_p_value"
    assert table[("gradcam.localization", "pointing_p_value")][2] == "≤ 0.05"
    assert table[("gradcam.localization", "energy_gain_ci_low")][1] == "✅ energy_gain_ci_low"
    for reference in ("pointing_game", "center_baseline", "energy_in_box"):
        cells = table[("gradcam.localization", reference)]
        assert "❌" not in " ".join(cells) and "✅" not in " ".join(cells), cells
    # the verdict, the failed check and its broken rule in "What failed", and that rule's row
    assert text.count("❌") == 4


def test_what_failed_shows_the_rules_numbers():
    text = build_markdown(session([localization("target", 0.21, 0.02, "failed")], baselines=()))
    failed = text[text.index("**What failed**"):text.index("| check")]
    assert "- ❌ `gradcam.localization`: pointing_p_value=0.21 violates" in failed
    assert "  - ❌ `pointing_p_value` = 0.210, rule ≤ 0.05" in failed
    assert "  - ❌ `energy_gain_ci_low` = 0.020, rule ≥ 0.05" in failed
    # the interval of the estimate whose lower bound broke the rule
    assert "  - `energy_gain` = 0.080 [0.020, 0.120]" in failed
    assert "center_baseline" not in failed


def test_p_values_without_a_threshold_are_shown_as_deciding_statistics():
    r = result("gradcam.faithfulness", "target", "failed",
               metrics={"deletion_auc": 0.4, "insertion_auc": 0.5, "deletion_p_value": 0.3, "insertion_p_value": 0.002,
                        "deletion_gain": 0.01, "deletion_gain_ci_low": -0.02, "deletion_gain_ci_high": 0.04},
               thresholds={"deletion_gain_ci_low": {"op": "min", "value": 0.0}}, headline=("deletion_auc", "insertion_auc"),
               message="deletion_gain_ci_low=-0.02 violates deletion_gain_ci_low >= 0")
    text = build_markdown(session([r], baselines=()))
    assert "  - `deletion_p_value` = 0.300" in text and "  - `insertion_p_value` = 0.002" in text
    assert "  - `deletion_gain` = 0.010 [-0.020, 0.040]" in text


def test_a_check_failing_on_its_own_rule_marks_the_metric_it_names():
    r = result("whitebox.masking", "target", "failed", metrics={"flags": 1, "queries": 500, "transfer_gap": 0.3},
               headline=("flags", "queries", "transfer_gap"), message="transfer_gap=0.3 > 0.1: black-box beats white-box")
    table = rows(build_markdown(session([r], baselines=())))
    assert table[("whitebox.masking", "transfer_gap")][1] == "❌ transfer_gap"
    assert table[("whitebox.masking", "queries")][1] == "queries" and table[("whitebox.masking", "flags")][1] == "flags"
    # a failure that names no metric marks the check itself
    r = result("cam.consistency", "target", "failed", metrics={"logit_max_abs_err": 0.5, "n_images": 8},
               headline=("logit_max_abs_err",), message="logit identity broken: max abs error 0.5")
    table = rows(build_markdown(session([r], baselines=())))
    assert table[("cam.consistency", "logit_max_abs_err")][0] == "❌ `cam.consistency`"


def test_relative_thresholds_show_the_bound_they_were_held_against():
    r = result("accuracy.clean", "target", "failed", metrics={"top1": 0.5},
               thresholds={"top1@alexnet": {"op": "min", "value": 0.9, "baseline": "alexnet", "reference": 0.8}},
               headline=("top1",), message="top1=0.5 violates top1 >= 0.9 x alexnet")
    text = build_markdown(session([r, result("accuracy.clean", "alexnet", metrics={"top1": 0.8}, headline=("top1",))]))
    assert "  - ❌ `top1` = 0.500, rule ≥ 0.9 × alexnet (= 0.720)" in text
    assert rows(text)[("accuracy.clean", "top1")][1:] == ["❌ top1", "≥ 0.9 × alexnet", "0.500", "0.800"]


def test_a_passing_check_keeps_its_tick_and_header_layout():
    text = build_markdown(session([result("accuracy.clean", "target", metrics={"top1": 0.9, "n_images": 8}, headline=("top1",)),
                                   result("accuracy.clean", "alexnet", metrics={"top1": 0.3, "n_images": 8}, headline=("top1",))],
                                  weak=("alexnet",)))
    lines = text.splitlines()
    assert "| alexnet ⚠️ weak |" in lines[4] and lines[4].startswith("| check | metric | rule |")
    assert "| ✅ `accuracy.clean` | top1 |  | 0.900 | 0.300 |" in text
    assert "audit passed" in text and "What failed" not in text


def test_insufficient_evidence_is_listed_as_such():
    results = [
        result("accuracy.clean", "target", metrics={"top1": 0.9}, headline=("top1",)),
        result("gradcam.localization", "target", "skipped", message="insufficient evidence: 3 images, the rule needs 20"),
        result("cam.consistency", "target", "skipped", message="the model has no GAP head"),
    ]
    text = build_markdown(session(results, baselines=()))
    assert "❔ **Insufficient evidence**" in text
    unsure = text[text.index("**Insufficient evidence**"):text.index("<details>")]
    assert "- `gradcam.localization`: insufficient evidence: 3 images, the rule needs 20" in unsure
    assert "cam.consistency" not in unsure
    assert "- `cam.consistency`: the model has no GAP head" in text[text.index("<details>"):]


def test_errors_and_regressions_are_listed():
    reg = SimpleNamespace(describe=lambda: "accuracy.clean top1 fell from 0.9 to 0.5")
    results = [result("whitebox.pgd", "target", "error", message="RuntimeError: exploded\nmore")]
    text = build_markdown(session(results, baselines=(), regressions=[reg]))
    assert "- 💥 `whitebox.pgd`: RuntimeError: exploded" in text and "more" not in text
    assert "- 📉 regression: accuracy.clean top1 fell from 0.9 to 0.5" in text


def test_a_rule_quoted_in_the_message_is_no_failure_and_held_rules_share_a_line():
    r = result("gradcam.faithfulness", "target", "failed", metrics={"deletion_p_value": 0.03, "insertion_p_value": 0.6},
               thresholds={"deletion_p_value": {"op": "max", "value": 0.05}, "insertion_p_value": {"op": "max", "value": 0.05}},
               headline=("deletion_p_value",),
               message="insertion_p_value=0.6 violates insertion_p_value <= 0.05 (rule: deletion_p_value <= 0.05; "
                       "insertion_p_value <= 0.05)")
    text = build_markdown(session([r], baselines=()))
    assert rows(text)[("gradcam.faithfulness", "deletion_p_value")][1] == "✅ deletion_p_value"
    assert rows(text)[("gradcam.faithfulness", "insertion_p_value")][1] == "❌ insertion_p_value"
    assert "  - ✅ held: `deletion_p_value` = 0.030 ≤ 0.05" in text


def test_a_result_without_a_verdict_marks_nothing():
    r = result("transfer.proxy", "target", "skipped", metrics={"transfer_success": 0.0, "queries": 32},
               thresholds={"transfer_success": {"op": "max", "value": 0.5}}, headline=("transfer_success", "queries"),
               message="insufficient evidence: 4 correctly answered images")
    table = rows(build_markdown(session([r], baselines=())))
    assert table[("transfer.proxy", "transfer_success")][:2] == ["❔ `transfer.proxy`", "transfer_success"]


def test_a_skipped_result_shows_no_numbers_in_the_table():
    """A result skipped for insufficient evidence keeps its numbers in its own section, but a
    comparison table shows "–" for it: they decided nothing."""
    skipped = result("cam.consistency", "alexnet", "skipped", metrics={"flip_corr": 0.123456},
                     headline=("flip_corr",), message="insufficient evidence: flip_corr could not be computed (nan)")
    judged = result("cam.consistency", "target", "passed", metrics={"flip_corr": 0.9}, headline=("flip_corr",))
    text = build_markdown(session([judged, skipped]))
    (line,) = [ln for ln in text.splitlines() if "flip_corr" in ln and ln.startswith("|")]
    assert "0.9" in line and "0.1235" not in line and "–" in line
