"""The white-box scorecard section (auditkit_whitebox/scorecard.py), from hand-built results shaped
like whitebox.fgsm/pgd/masking's: robust accuracy against epsilon, one line per model with its
band, adversarial examples, and the masking flags, whatever subset of them exists."""
from __future__ import annotations

import re

from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.html import render_scorecard
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import budget_curve, charts, only_section, png as solid_png, result as r
from auditkit_whitebox import scorecard

EVIL = "<script>alert(1)</script>"
LINF = [1 / 255, 2 / 255, 4 / 255, 8 / 255]


def png() -> bytes:
    return solid_png(40, 12, (90, 90, 90))


def curve(norm, eps, acc):
    return budget_curve("robust_acc", norm, eps, acc, [max(0.0, a - 0.1) for a in acc], [min(1.0, a + 0.1) for a in acc])


def flags(raised: set[str]) -> dict:
    names = {"eps_insensitive": "robust accuracy does not fall", "zero_gradients": "many zero gradients"}
    return {"flags": {f: {"raised": f in raised, "meaning": m, "evidence": f"evidence for {f}"} for f, m in names.items()}}


def results() -> list[CheckResult]:
    return [
        r("whitebox.pgd", "target", metrics={"clean_acc": 1.0},
          curves=(curve("linf", LINF, [0.8, 0.6, 0.3, 0.1]), curve("l2", [0.25, 0.5, 1.0], [0.7, 0.4, 0.1])),
          artifacts=[Artifact(f"example_{i}_linf_2/255", "image/png", png(), f"{EVIL} -> 'cat'") for i in range(1, 6)]),
        r("whitebox.pgd", "resnet18", metrics={"clean_acc": 0.9},
          curves=(curve("linf", LINF, [0.85, 0.7, 0.5, 0.2]), curve("l2", [0.5], [0.5]))),
        r("whitebox.pgd", "alexnet", "skipped", message="the model is a black box (no gradients)"),
        r("whitebox.fgsm", "target", metrics={"clean_acc": 1.0}, curves=(curve("linf", LINF, [0.9, 0.8, 0.6, 0.4]),)),
        r("whitebox.masking", "target", "failed", metrics={"flags": 1.0, "eps_insensitive": 1.0}, details=flags({"eps_insensitive"})),
        r("whitebox.masking", "resnet18", metrics={"flags": 0.0}, details=flags(set())),
    ]


def section(rs=None) -> dict:
    return only_section(scorecard, results() if rs is None else rs)


def test_section_is_well_formed_and_covers_the_whitebox_checks():
    s = section()
    assert (s["id"], s["order"]) == ("whitebox", scorecard.ORDER)
    assert s["checks"] == ["whitebox.fgsm", "whitebox.masking", "whitebox.pgd"]
    assert lint_html(s["html"], fragment=True) == []


def test_robust_accuracy_one_line_per_model_with_bands_from_the_curves():
    found = charts(section()["html"])
    linf = found["PGD, L\u221e"]
    assert linf.count("<polyline") == 2 and linf.count("<polygon") == 2
    assert ">target</text>" in linf and ">resnet18</text>" in linf
    assert ">8</text>" in linf  # epsilon in 1/255 units on the axis
    assert "robust accuracy 1" in linf  # epsilon 0 is the clean accuracy
    assert found["PGD, L2"].count("<polyline") == 2  # resnet18: its one L2 budget, after the clean point
    assert found["FGSM, L\u221e"].count("<polyline") == 1


def test_examples_are_capped_and_escaped():
    html = section()["html"]
    assert html.count("data:image/png;base64,") == scorecard.EXAMPLES_PER_MODEL
    assert EVIL not in html and "&lt;script&gt;" in html and "amplified" in html


def test_masking_flags_per_model():
    html = section()["html"]
    masking = html[html.index("Gradient masking"):]
    assert masking.count(">raised</span>") == 1 and masking.count(">ok</span>") == 3
    assert "evidence for eps_insensitive" in masking and "robust accuracy does not fall" in masking


def test_skipped_model_is_named_with_its_reason():
    assert "the model is a black box (no gradients)" in section()["html"]


def test_renders_whatever_subset_exists():
    assert scorecard.auditkit_scorecard_sections(results=[r("accuracy.clean", "target")], config=Config()) == []
    bare = section([r("whitebox.pgd", "target"), r("whitebox.masking", "target", metrics={"flags": 2.0})])
    assert lint_html(bare["html"], fragment=True) == []
    assert "<svg" not in bare["html"] and "flags raised" in bare["html"]


def test_in_the_scorecard():
    pm = get_plugin_manager(autoload=False, extra=[scorecard])
    page = render_scorecard(results(), Config(model="m", invocation=["auditkit", "run"]), pm=pm)
    assert lint_html(page) == []
    assert re.findall(r'<section class="plugin[^"]*" id="([^"]+)"', page) == ["section-whitebox"]
