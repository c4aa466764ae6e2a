"""The Grad-CAM scorecard section (auditkit_gradcam/scorecard.py), rendered from hand-built results
shaped like the checks' own: overlays, randomization and deletion/insertion curves per model,
whatever subset of them exists."""
from __future__ import annotations

import re

from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.html import render_scorecard
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import only_section, png as solid_png, result as r
from auditkit_gradcam import scorecard

EVIL = 'evil"<script>alert(1)</script>'


def png(colour=(0, 120, 200)) -> bytes:
    return solid_png(16, 16, colour)


def curve(name, x, y, **extra) -> Artifact:
    return Artifact(name, "curve", {"x": x, "y": y, **extra}, name)


def results() -> list[CheckResult]:
    x = [i / 4 for i in range(5)]
    return [
        r("gradcam.localization", "target", metrics={"pointing_game": 0.8, "pointing_game_ci_low": 0.6, "pointing_game_ci_high": 0.9,
                                                     "center_baseline": 0.5, "energy_in_box": 0.4, "box_area_share": 0.2},
          artifacts=[Artifact(f"worst_localized_{i}", "image/png", png(), f"image {i}: pointing miss") for i in (1, 2)]),
        r("gradcam.randomization", "target", metrics={"max_rank_corr": 0.3},
          thresholds={"max_rank_corr": {"op": "max", "value": 0.5}},
          artifacts=[curve("rank_correlation_by_block", [0, 1, 2, 3], [1.0, 0.3, 0.2, 0.1], x_labels=["original", "fc", "layer4", "layer3"]),
                     curve("ssim_by_block", [0, 1, 2, 3], [1.0, 0.5, 0.4, 0.3], x_labels=["original", "fc", "layer4", "layer3"]),
                     Artifact("maps_by_block", "image/png", png((200, 0, 0)), "first image: original map, then ...")]),
        r("gradcam.faithfulness", "target", metrics={"deletion_auc": 0.3, "insertion_auc": 0.7},
          artifacts=[curve("deletion_curve", x, [1, 0.5, 0.3, 0.2, 0.1]), curve("deletion_random_curve", x, [1, 0.8, 0.6, 0.4, 0.1]),
                     curve("insertion_curve", x, [0.1, 0.6, 0.8, 0.9, 1]), curve("insertion_random_curve", x, [0.1, 0.3, 0.5, 0.7, 1])]),
        # a baseline with less: one overlay, the randomization only in its details, no random-order curves
        r("gradcam.localization", EVIL, "failed", metrics={"pointing_game": 0.4},
          artifacts=[Artifact("worst_localized_1", "image/png", png(), f"image 1 of {EVIL}")], message="missed"),
        r("gradcam.randomization", EVIL, "failed", metrics={"max_rank_corr": 0.9},
          details={"rank_corr_by_block": {"classifier": 0.9, "features.10": 0.8}}),
        r("gradcam.faithfulness", EVIL, metrics={"deletion_auc": 0.5}, artifacts=[curve("deletion_curve", x, [1, 0.9, 0.8, 0.7, 0.6])]),
        # a black-box baseline: skipped everywhere
        *[r(c, "blackbox", "skipped", message="the model is a black box (no gradients)") for c in scorecard.CHECKS],
        r("accuracy.clean", "target", metrics={"top1": 1.0}),
    ]


def section(rs=None) -> dict:
    return only_section(scorecard, results() if rs is None else rs)


def test_section_covers_the_gradcam_checks_and_is_well_formed():
    s = section()
    assert (s["id"], s["order"]) == ("gradcam", scorecard.ORDER)
    assert s["checks"] == sorted(scorecard.CHECKS)
    assert lint_html(s["html"], fragment=True) == []
    for title in ("Localization", "Cascading randomization", "Faithfulness"):
        assert title in s["html"]


def test_overlays_of_every_model_and_the_randomization_strip_are_embedded():
    html = section()["html"]
    assert html.count("data:image/png;base64,") == 2 + 1 + 1
    assert "image 1: pointing miss" in html and "0.800 [0.600, 0.900]" in html


def test_randomization_curves_one_line_per_model_with_the_threshold():
    html = section()["html"]
    charts = re.findall(r"<svg.*?</svg>", html, re.S)
    rank = next(c for c in charts if "Spearman" in c)
    assert rank.count("<polyline") == 2  # target from its artifact, the baseline from its details
    assert ">target</text>" in rank and "threshold 0.5" in rank
    assert "layer4" in rank and "features.10" in rank  # block names in the point tooltips
    ssim = next(c for c in charts if "SSIM with" in c)
    assert ssim.count("<polyline") == 1  # the baseline kept no SSIM


def test_deletion_and_insertion_curves_with_random_orders_dashed():
    charts = re.findall(r"<svg.*?</svg>", section()["html"], re.S)
    deletion = next(c for c in charts if "<title>Deletion</title>" in c)
    assert deletion.count("<polyline") == 3
    assert "target (AUC 0.300)" in deletion and "target, random order" in deletion
    assert 'stroke-dasharray="4 3"' in deletion
    insertion = next(c for c in charts if "<title>Insertion</title>" in c)
    assert insertion.count("<polyline") == 2


def test_skips_and_hostile_names():
    html = section()["html"]
    assert "the model is a black box (no gradients)" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_renders_whatever_subset_exists():
    assert scorecard.auditkit_scorecard_sections(results=[r("accuracy.clean", "target")], config=Config()) == []
    bare = section([r(c, "target") for c in scorecard.CHECKS] + [r("gradcam.localization", "b", "error", message="boom")])
    assert lint_html(bare["html"], fragment=True) == []
    assert "<svg" not in bare["html"] and "boom" in bare["html"]


def test_in_the_scorecard_it_replaces_the_generic_sections():
    pm = get_plugin_manager(autoload=False, extra=[scorecard])
    page = render_scorecard(results(), Config(model="m", invocation=["auditkit", "run"]), pm=pm)
    assert lint_html(page) == []
    assert re.findall(r'<section class="plugin[^"]*" id="([^"]+)"', page) == ["section-gradcam", "section-accuracy-clean"]
