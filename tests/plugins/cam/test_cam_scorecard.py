"""The CAM scorecard section (auditkit_cam/scorecard.py), from hand-built results shaped like
cam.consistency's: the identity numbers per model, and each model's CAM overlays beside its
Grad-CAM overlays when the audit has them."""
from __future__ import annotations

import base64
import re

from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.html import render_scorecard
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import only_section, png as solid_png, result as r
from auditkit_cam import scorecard

EVIL = "<script>alert(1)</script>"


def png(colour) -> bytes:
    return solid_png(32, 16, colour)


CAM_PNG, GRADCAM_PNG, SAME_IMAGE_PNG = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))


def results() -> list[CheckResult]:
    return [
        r("cam.consistency", "target", metrics={"logit_max_abs_err": 5e-9, "gradcam_max_abs_err": 0.0, "cam_gradcam_corr": 1.0,
                                                "flip_corr": 0.5, "pointing_game": 0.75, "energy_in_box": 0.3, "n_images": 4},
          artifacts=[Artifact(f"cam_overlay_{i}", "image/png", CAM_PNG, f"image {i}: CAM for {EVIL}") for i in range(6)],
          details={"gap_head": {"pool": "avgpool", "linear": "fc"}}),
        r("gradcam.localization", "target", artifacts=[Artifact("worst_localized_1", "image/png", GRADCAM_PNG, "worst")]),
        # a baseline whose check kept Grad-CAM overlays of the same images: those are paired instead
        r("cam.consistency", "resnet18", "failed", metrics={"logit_max_abs_err": 0.2}, message="logit identity broken",
          artifacts=[Artifact("cam_overlay_0", "image/png", CAM_PNG, "cam"),
                     Artifact("gradcam_overlay_0", "image/png", SAME_IMAGE_PNG, "same image")]),
        r("cam.consistency", "alexnet", "skipped", message="CAM is undefined: a fully connected head"),
    ]


def section(rs=None) -> dict:
    return only_section(scorecard, results() if rs is None else rs)


def test_section_is_well_formed_and_covers_cam_consistency():
    s = section()
    assert (s["id"], s["order"], s["checks"]) == ("cam", scorecard.ORDER, ["cam.consistency"])
    assert lint_html(s["html"], fragment=True) == []
    assert "avgpool \u2192 fc" in s["html"] and "5.00e-09" in s["html"]


def test_cam_beside_gradcam_per_model():
    html = section()["html"]
    blocks = re.findall(r'<div class="grid2">(.*?)</div></div></div>', html, re.S)
    assert len(blocks) == 2  # target and resnet18; alexnet was skipped
    encoded = {name: base64.b64encode(data).decode() for name, data in
               (("cam", CAM_PNG), ("grad", GRADCAM_PNG), ("same", SAME_IMAGE_PNG))}
    target, resnet = blocks
    assert target.count(encoded["cam"]) == scorecard.IMAGES_PER_MODEL and target.count(encoded["grad"]) == 1
    assert resnet.count(encoded["same"]) == 1 and encoded["grad"] not in resnet
    assert "logit identity broken" in html


def test_skipped_models_and_hostile_captions():
    html = section()["html"]
    assert "CAM is undefined: a fully connected head" in html
    assert EVIL not in html and "&lt;script&gt;" in html


def test_renders_whatever_subset_exists():
    assert scorecard.auditkit_scorecard_sections(results=[r("gradcam.localization", "target")], config=Config()) == []
    bare = section([r("cam.consistency", "target")])
    assert lint_html(bare["html"], fragment=True) == []
    assert "no CAM overlays kept" in bare["html"] and "no Grad-CAM overlays" in bare["html"]


def test_in_the_scorecard():
    pm = get_plugin_manager(autoload=False, extra=[scorecard])
    page = render_scorecard(results(), Config(model="m", invocation=["auditkit", "run"]), pm=pm)
    assert lint_html(page) == []
    assert 'id="section-cam"' in page and 'id="section-cam-consistency"' not in page
