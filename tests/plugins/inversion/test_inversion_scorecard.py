"""The inversion scorecard section (auditkit_inversion/scorecard.py), from hand-built results shaped
like inversion.fidelity's: fidelity against depth, one line per model, and the reconstructions
per layer, whatever subset of them exists."""
from __future__ import annotations

import re

from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.html import render_scorecard
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import charts, only_section, png as solid_png, result
from auditkit_inversion import scorecard

EVIL = "<script>alert(1)</script>"


def png() -> bytes:
    return solid_png(66, 34, (128, 64, 0))


def r(model, outcome="passed", metrics=None, artifacts=(), **kw) -> CheckResult:
    return result("inversion.fidelity", model, outcome, metrics, artifacts, **kw)


def layer(name, depth, ssim, psnr, **extra) -> dict:
    return {"name": name, "depth": depth, "ssim": ssim, "psnr": psnr, "feature_rel_err": 0.01, "feature_err_ratio": 0.1, **extra}


def results() -> list[CheckResult]:
    return [
        # the full record: per-layer details, curves and the reconstruction grid
        r("target", metrics={"layer1.ssim": 0.9, "layer2.ssim": 0.5},
          details={"layers": [layer("conv1", 0.05, 0.99, 41.5, anchor=True, psnr_drop=0.0),
                              layer("layer1", 0.25, 0.9, 30.25, anchor=False, psnr_drop=11.25),
                              layer(f"layer2{EVIL}", 0.75, 0.5, 18.0, anchor=False, psnr_drop=23.5)],
                   "settings": {"leak_ssim": 0.7}},
          artifacts=[Artifact("reconstructions", "image/png", png(), "rows: images; columns: the original, then layer1, layer2")]),
        # only the curves
        r("resnet18", artifacts=[
            Artifact("ssim_vs_depth", "curve", {"x": [0.2, 0.5, 0.9], "y": [0.8, 0.4, 0.1], "names": ["conv1", "layer2", "layer4"]}, "s"),
            Artifact("psnr_vs_depth", "curve", {"x": [0.2, 0.5, 0.9], "y": [25.0, 15.0, 9.0], "names": ["conv1", "layer2", "layer4"]}, "p"),
        ]),
        # only the metrics: in the per-layer table, not on the charts (no depth)
        r("googlenet", metrics={"inception3a.ssim": 0.6, "inception3a.psnr": 20.0, "inception3a.feature_rel_err": 0.02,
                                "faithful_depth": 0.0}),
        r("alexnet", "skipped", message="no stage before the classifier head to invert"),
    ]


def section(rs=None) -> dict:
    return only_section(scorecard, results() if rs is None else rs)


def test_section_is_well_formed():
    s = section()
    assert (s["id"], s["order"], s["checks"]) == ("inversion", scorecard.ORDER, ["inversion.fidelity"])
    assert lint_html(s["html"], fragment=True) == []


def test_fidelity_against_depth_one_line_per_model():
    found = charts(section()["html"])
    ssim = found["SSIM against depth"]
    assert ssim.count("<polyline") == 2 and ">target</text>" in ssim and ">resnet18</text>" in ssim
    assert "faithful from SSIM 0.7" in ssim
    assert "layer4" in ssim  # layer names in the point tooltips
    assert found["PSNR (dB) against depth"].count("<polyline") == 2


def test_reconstructions_and_per_layer_numbers():
    html = section()["html"]
    assert html.count("data:image/png;base64,") == 1 and "the original, then layer1" in html
    tables = html[html.index("Per-layer numbers"):]
    for model in ("target", "resnet18", "googlenet"):
        assert f"<caption>{model}</caption>" in tables
    assert "<td>inception3a</td>" in tables and "30.25" in tables
    # the anchor is marked and each layer's PSNR drop below it is a column
    assert "PSNR drop below the anchor (dB)" in tables and "<td>conv1 (anchor)</td>" in tables and "11.25" in tables


def test_skips_and_escaping():
    html = section()["html"]
    assert "no stage before the classifier head to invert" in html
    assert EVIL not in html and "&lt;script&gt;" in html


def test_renders_whatever_subset_exists():
    assert scorecard.auditkit_scorecard_sections(results=[], config=Config()) == []
    bare = section([r("target")])
    assert lint_html(bare["html"], fragment=True) == []
    assert "<svg" not in bare["html"]


def test_in_the_scorecard():
    pm = get_plugin_manager(autoload=False, extra=[scorecard])
    page = render_scorecard(results(), Config(model="m", invocation=["auditkit", "run"]), pm=pm)
    assert lint_html(page) == []
    assert re.findall(r'<section class="plugin[^"]*" id="([^"]+)"', page) == ["section-inversion"]
