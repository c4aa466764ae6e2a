"""The HTML scorecard (auditkit/reporters/html.py) and its section helpers (svg.py): rendered
from hand-built results, checked as HTML, for self-containment, escaping, the comparison table,
section order, skips and errors, size and determinism; the charts' legibility (equal lines,
bands, steps) and the sections' wording; one real audit writes a scorecard; where Chromium is
installed (.ci/run installs it), a demo-like scorecard and a report with every check render in
it without errors, with every section drawn and every image decoded."""
from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

import auditkit
from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import DEFAULT_PLUGINS, get_plugin_manager
from auditkit.reporters import svg
from auditkit.reporters.comparison import comparison_groups
from auditkit.reporters.html import render_scorecard
from auditkit.reporters.reproduce import reproduce_command
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import budget_curve, result
from auditkit.testing.scorecard import png as solid_png

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
QUOTES = "\" onmouseover=\"alert(2)\" x='"
UNICODE = "café ✓ Δε 猫"
REPORT = {
    "schema": "auditkit.report/1",
    "auditkit_version": "0.1.0",
    "created": "2026-01-01T00:00:00+00:00",
    "environment": {"python": "3.11", "torch": "2.x", "device": "cpu"},
    "config": {"model": "torchvision:resnet18", "data": "synthetic:shapes"},
    "data": {"spec": "synthetic:shapes", "n_eval": 8, "num_classes": 4, "class_names": ["a", "b", "c", "d"]},
    "models": [
        {"name": "target", "role": "target", "spec": "torchvision:resnet18", "params": 11_000_000, "white_box": True,
         "gap_head": True, "input_size": [3, 32, 32], "num_classes": 4},
        {"name": "alexnet", "role": "baseline", "spec": "baseline:alexnet", "params": 57_000_000, "white_box": True,
         "gap_head": False, "input_size": [3, 32, 32], "num_classes": 4},
        {"name": "resnet18", "role": "baseline", "spec": "baseline:resnet18", "params": 11_000_000, "white_box": True,
         "gap_head": True, "input_size": [3, 32, 32], "num_classes": 4},
    ],
    "summary": {"passed": 1, "failed": 1, "skipped": 1, "xfailed": 1, "error": 1, "duration_s": 3.0, "exit_code": 1},
}


def png(width: int = 24, height: int = 16, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return solid_png(width, height, colour)


def every_kind_of_result() -> list[CheckResult]:
    """Results that exercise every part of the page: passes, a failure with a threshold,
    baselines, a third-party check with artifacts, a skip, an xfail and an error."""
    out = []
    for model, top1, corr in (("target", 0.5, 0.6), ("alexnet", 0.7, 0.2), ("resnet18", 0.9, 0.4)):
        out.append(result("accuracy.clean", model, metrics={"top1": top1, "n_images": 8}, headline=("top1",), message="fine",
                          directions={"top1": "higher"}))
        out.append(result(
            "gradcam.randomization", model, "failed" if corr > 0.5 else "passed",
            metrics={"max_rank_corr": corr, "final_rank_corr": corr / 2},
            thresholds={"max_rank_corr": {"op": "max", "value": 0.5}}, headline=("max_rank_corr",),
            directions={"max_rank_corr": "lower", "final_rank_corr": "lower"},
            message=f"max_rank_corr={corr} violates max_rank_corr <= 0.5" if corr > 0.5 else "ok",
        ))
    out.append(result(
        "thirdparty.widget", "target", metrics={"mystery": 1.5, "quality": 0.25},
        thresholds={"quality": {"op": "min", "value": 0.1}}, headline=("mystery", "quality"),
        message="widget ok",
        artifacts=(
            Artifact("picture", "image/png", png(), "a picture"),
            Artifact("trend", "curve", {"x": [1, 2, 3], "y": [0.2, 0.4, 0.3], "lo": [0.1, 0.3, 0.2], "hi": [0.3, 0.5, 0.4],
                                        "label": "trend", "x_label": "step", "y_label": "value"}, "a trend"),
            Artifact("numbers", "table", [{"k": "a", "v": 1.0}, {"k": "b", "v": 2.0}], "a table"),
            Artifact("note", "text", "plain text", "a note"),
        ),
    ))
    out.append(result("gradcam.localization", "target", "skipped", message="the data has no boxes or masks"))
    out.append(result("whitebox.fgsm", "target", "xfailed", message="known to be slow"))
    out.append(result(
        "whitebox.pgd", "target", "error", message="RuntimeError: exploded",
        traceback="Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: exploded in layer 7",
    ))
    return out


def config(**kwargs) -> Config:
    base = dict(model="torchvision:resnet18", data="synthetic:shapes", invocation=["auditkit", "run", "--model", "torchvision:resnet18"])
    base.update(kwargs)
    return Config(**base)


def render(results=None, pm=None, report=REPORT, **config_kwargs) -> str:
    return render_scorecard(every_kind_of_result() if results is None else results, config(**config_kwargs),
                            pm=pm if pm is not None else get_plugin_manager(autoload=False), report=report)


class Cells(HTMLParser):
    """Collects every element's attributes and the text of the comparison table's cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cells: dict[tuple[str, str, str], dict[str, str]] = {}
        self._cell: tuple[str, str, str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attrs))
        if tag == "td" and "data-metric" in attrs:
            self._cell = (attrs["data-check"], attrs["data-metric"], attrs["data-model"])
            self.cells[self._cell] = {"class": attrs.get("class", ""), "text": "", "title": attrs.get("title", "")}

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell]["text"] += data


def section_order(text: str) -> list[str]:
    return re.findall(r'<section class="plugin[^"]*" id="([^"]+)"', text)


# -------------------------------------------------------------------------------------------
# the page as a whole
# -------------------------------------------------------------------------------------------


def test_page_is_valid_self_contained_html():
    text = render()
    assert lint_html(text) == []
    assert text.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in text  # the browser itself refuses any request
    parsed = Cells(text)
    tags = {tag for tag, _ in parsed.elements}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    for tag, attrs in parsed.elements:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("data:image/png;base64,", "#")), (tag, attrs[name][:40])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text)


def test_lint_html_finds_what_breaks_a_scorecard():
    problems = lint_html('<p><b>x</p><script src="https://cdn.example/x.js"></script><a href="#nowhere" onclick="x">y</a>'
                         '<img src="https://example.org/a.png"><style>@import "x.css";</style>')
    text = "\n".join(problems)
    for expected in ("does not close", "<script> is not allowed", "refers outside the file", "event handler",
                     "#nowhere", "@import"):
        assert expected in text
    assert lint_html('<div id="a"><span>ok</span></div>', fragment=True) == []
    assert "repeats id" in "\n".join(lint_html('<p id="a"></p><p id="a"></p>', fragment=True))


def test_every_check_and_every_model_is_in_the_comparison_table():
    text = render()
    for check in ("accuracy.clean", "gradcam.randomization", "thirdparty.widget", "gradcam.localization",
                  "whitebox.fgsm", "whitebox.pgd"):
        assert f"<code>{check}</code>" in text
        assert f'id="check-{check.replace(".", "-")}"' in text
    for model in ("target", "alexnet", "resnet18"):
        assert f'class="colhead" data-model="{model}"' in text
    heads = re.findall(r'class="colhead" data-model="([^"]+)"', text)
    assert heads == ["target", "alexnet", "resnet18"]  # the target first, then the baselines


def test_without_baselines_there_is_one_model_column():
    only_target = [r for r in every_kind_of_result() if r.role == "target"]
    text = render(only_target, report={**REPORT, "models": REPORT["models"][:1]})
    assert re.findall(r'class="colhead" data-model="([^"]+)"', text) == ["target"]
    assert lint_html(text) == []


def test_better_value_is_marked_by_direction():
    cells = Cells(render()).cells
    top1 = {m: cells[("accuracy.clean", "top1", m)] for m in ("target", "alexnet", "resnet18")}
    assert "best" in top1["resnet18"]["class"] and top1["resnet18"]["text"] == "0.900"
    assert "best" not in top1["target"]["class"] and "best" not in top1["alexnet"]["class"]
    corr = {m: cells[("gradcam.randomization", "max_rank_corr", m)]["class"] for m in ("target", "alexnet", "resnet18")}
    assert "best" in corr["alexnet"] and "best" not in corr["target"] and "best" not in corr["resnet18"]
    # the threshold is shown, and the value that breaks it is marked
    assert "violates" in corr["target"] and "violates" not in corr["alexnet"]
    assert "≤ 0.5" in render()


def test_unknown_direction_ties_and_lone_values_are_not_marked():
    results = [
        result("x.check", "target", metrics={"mystery": 1.0, "top1": 0.5, "score": 0.1}, headline=("mystery", "top1", "score")),
        result("x.check", "b1", metrics={"mystery": 3.0, "top1": 0.5, "score": math.nan}),
        result("y.check", "target", metrics={"top1": 0.5}, headline=("top1",)),
    ]
    cells = Cells(render(results, report=None)).cells
    assert not any("best" in c["class"] for c in cells.values())
    assert cells[("x.check", "score", "b1")]["text"] == "nan"


def test_only_declared_directions_mark_the_best_value():
    results = [
        result("x.check", "target", metrics={"weird": 1.0, "gated": 0.2}, headline=("weird", "gated"),
               directions={"weird": "lower"}, thresholds={"gated": {"op": "min", "value": 0.5}}),
        result("x.check", "b1", metrics={"weird": 2.0, "gated": 0.7}, directions={"weird": "lower"}),
    ]
    cells = Cells(render(results, report=None)).cells
    assert "best" in cells[("x.check", "weird", "target")]["class"]
    # a threshold says what passes, not which model is better: undeclared, the metric is unmarked
    assert not any("best" in cells[("x.check", "gated", m)]["class"] for m in ("target", "b1"))
    assert "violates" in cells[("x.check", "gated", "target")]["class"]


def test_gated_metrics_get_a_row_only_when_some_model_breaks_them():
    thresholds = {"p_value": {"op": "max", "value": 0.05}, "flag": {"op": "max", "value": 0}}
    results = [
        result("x.check", "target", "failed", metrics={"score": 1.0, "p_value": 0.2, "flag": 0.0}, headline=("score",),
               thresholds=thresholds, directions={"p_value": "lower"}),
        result("x.check", "b1", metrics={"score": 2.0, "p_value": 0.01, "flag": 0.0}, headline=("score",),
               thresholds=thresholds, directions={"p_value": "lower"}),
    ]
    cells = Cells(render(results, report=None)).cells
    assert {metric for _, metric, _ in cells} == {"score", "p_value"}
    assert "violates" in cells[("x.check", "p_value", "target")]["class"]
    assert "best" in cells[("x.check", "p_value", "b1")]["class"]


def test_relative_thresholds_are_shown_against_their_baseline():
    relative = {"top1@resnet18": {"op": "min", "value": 0.9, "baseline": "resnet18", "reference": 0.8}}
    results = [
        result("accuracy.clean", "target", "failed", metrics={"top1": 0.5}, headline=("top1",), thresholds=relative,
               directions={"top1": "higher"}),
        result("accuracy.clean", "resnet18", metrics={"top1": 0.8}, headline=("top1",), directions={"top1": "higher"}),
    ]
    text = render(results, report=None)
    assert "\u2265 0.9 \u00d7 resnet18" in text
    cells = Cells(text).cells
    assert "violates" in cells[("accuracy.clean", "top1", "target")]["class"]  # 0.5 < 0.9 x 0.8
    assert "best" in cells[("accuracy.clean", "top1", "resnet18")]["class"]


def test_long_failure_messages_are_shortened_in_the_verdict():
    long = "score=0.1 violates score >= 0.5 (" + "details " * 60 + "the end)"
    text = render([result("x.check", "target", "failed", metrics={"score": 0.1}, message=long)], report=None)
    verdict = text[text.index('<section id="verdict"'):text.index("</section>", text.index('<section id="verdict"'))]
    assert "score=0.1 violates score &gt;= 0.5" in verdict and "\u2026" in verdict
    assert "<summary>full message</summary>" in verdict and "the end)" in verdict


def _registered_checks() -> list[type]:
    from auditkit.main import registered_checks

    return [cls for cls, _ in registered_checks(Config(), get_plugin_manager(confdir=None))]


def _example_name(pattern: str) -> str:
    """A metric name a pattern from ``Check.metrics`` stands for (``robust_acc@*`` -> ``robust_acc@linf_8/255``)."""
    return pattern.replace("@*", "@linf_8/255").replace("*.", "layer1.")


def test_every_built_in_check_declares_a_direction_or_none_for_every_metric():
    undeclared = [(cls.id, m) for cls in _registered_checks() for m in map(_example_name, cls.metrics) if not cls.declares(m)]
    assert undeclared == []


def test_scorecard_marks_exactly_what_the_checks_declare():
    """The table marks the better model by the direction the check declares, and nothing for a
    metric declared as a reference value (the core names no metric)."""
    for cls in _registered_checks():
        for metric in map(_example_name, cls.metrics):
            declared = cls.direction(metric)
            directions = {metric: declared} if declared is not None else {}  # as the runner records them
            results = [result(cls.id, model, metrics={metric: value}, headline=(metric,), directions=directions)
                       for model, value in (("target", 0.2), ("b1", 0.8))]
            (row,) = comparison_groups(results, ["target", "b1"])[0]["rows"]
            best = [c["model"] for c in row["cells"] if "best" in c["classes"]]
            expected = {"higher": ["b1"], "lower": ["target"], None: []}[declared]
            assert (row["direction"] or None, best) == (declared, expected), (cls.id, metric)


def test_verdict_lists_what_failed_and_why():
    text = render()
    verdict = text[text.index('<section id="verdict"'):text.index("</section>", text.index('<section id="verdict"'))]
    assert 'class="verdict failed"' in verdict and "FAILED" in verdict
    assert "gradcam.randomization" in verdict and "violates max_rank_corr" in verdict
    assert "whitebox.pgd" in verdict and "RuntimeError: exploded" in verdict
    assert "1 error" in verdict and "1 skipped" in verdict and "1 xfailed" in verdict
    assert "accuracy.clean" not in verdict  # passed checks stay out of the verdict


def test_verdict_passes_when_the_target_passes_even_if_a_baseline_fails():
    results = [
        result("accuracy.clean", "target", metrics={"top1": 0.9}),
        result("accuracy.clean", "alexnet", "failed", metrics={"top1": 0.1}, message="too low"),
    ]
    text = render(results, report=None)
    assert 'class="verdict passed"' in text and "PASSED" in text
    assert "Baselines, not gating: 1 result failed or errored (alexnet accuracy.clean)" in text


def test_regressions_from_compare_are_in_the_verdict():
    report = {**REPORT, "comparison": {"previous": "old.json", "regressions": [
        {"check": "accuracy.clean", "metric": "top1", "previous": 0.9, "current": 0.5, "direction": "higher"}]}}
    text = render(report=report)
    assert "Regressions against <code>old.json</code>" in text and "0.900 &rarr; 0.500" in text


def test_skipped_reasons_and_folded_tracebacks():
    text = render()
    skipped = text[text.index('<section id="skipped">'):]
    assert "the data has no boxes or masks" in skipped and "known to be slow" in skipped
    errors = text[text.index('<section id="errors">'):]
    folded = re.search(r"<details class=\"error\">\s*<summary>(.*?)</summary>\s*<pre>(.*?)</pre>\s*</details>", errors, re.S)
    assert folded is not None
    assert "whitebox.pgd" in folded.group(1) and "RuntimeError: exploded in layer 7" in folded.group(2)


def test_environment_config_and_reproduce_command():
    text = render()
    assert "<dt>torch</dt><dd>2.x</dd>" in text
    assert '&#34;model&#34;: &#34;torchvision:resnet18&#34;' in text or "&quot;model&quot;" in text
    assert "<code>auditkit run --model torchvision:resnet18</code>" in text


def test_reproduce_command_quotes_arguments_and_rebuilds_python_api_runs():
    command, note = reproduce_command(config(invocation=["auditkit", "run", "--data", "synthetic:shapes?n=4&size=32"]))
    assert command == "auditkit run --data 'synthetic:shapes?n=4&size=32'" and note == ""
    command, note = reproduce_command(Config(model=None, data="synthetic:shapes?n=4", select=["cam.*"], max_images=4, html="x.html"))
    assert command.startswith("auditkit run --model '<your model spec>' --data 'synthetic:shapes?n=4' --checks 'cam.*'")
    assert "--max-images 4" in command and "--html x.html" in command and "--baselines none" in command
    assert "Python API" in note and "placeholder" in note


def test_hostile_strings_are_escaped_everywhere():
    evil_model = f"evil{QUOTES}{HOSTILE}"
    results = [
        result("accuracy.clean", "target", metrics={"top1": 0.5, HOSTILE: 1.0}, headline=("top1", HOSTILE),
               message=f"{HOSTILE} {QUOTES} {UNICODE}",
               artifacts=(Artifact(HOSTILE, "image/png", png(), f"class {HOSTILE} {QUOTES}"),
                          Artifact("curve", "curve", {"x": [0, 1], "y": [0, 1], "label": HOSTILE, "x_label": QUOTES,
                                                      "x_labels": [HOSTILE, UNICODE]}, HOSTILE))),
        result("accuracy.clean", evil_model, "failed", metrics={"top1": 0.4, HOSTILE: 2.0}, message=HOSTILE),
        result(f"check.{HOSTILE}", "target", "skipped", message=f"{HOSTILE} {UNICODE}"),
        result("boom.check", "target", "error", message=HOSTILE, traceback=f"Traceback\n{HOSTILE}\n{QUOTES}"),
    ]
    report = {**REPORT, "models": [{"name": "target", "role": "target", "spec": HOSTILE},
                                   {"name": evil_model, "role": "baseline", "spec": QUOTES}],
              "data": {"spec": HOSTILE, "class_names": [HOSTILE, UNICODE]}, "environment": {HOSTILE: QUOTES}}
    text = render(results, report=report, data=HOSTILE, invocation=["auditkit", "run", "--data", HOSTILE])
    assert HOSTILE not in text
    assert "alert(1)</script>" not in text
    assert ESCAPED in text
    assert UNICODE in text
    assert lint_html(text) == []
    parsed = Cells(text)
    for tag, attrs in parsed.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert tag != "script"
    # the hostile model name survives as text, in its own column
    assert any(attrs.get("data-model") == evil_model for _, attrs in parsed.elements)


# -------------------------------------------------------------------------------------------
# sections
# -------------------------------------------------------------------------------------------


class TwoSections:
    """A plugin contributing two sections out of order, one covering thirdparty.widget."""

    @auditkit.hookimpl
    def auditkit_scorecard_sections(self, results, config):
        return [
            {"id": "late", "title": "Late section", "html": "<p>late</p>", "order": 70},
            {"id": "early", "title": "Early section", "html": f"<p>{svg.esc(HOSTILE)}</p>", "order": 10,
             "checks": ["thirdparty.widget"]},
        ]


class GradcamSection:
    """A section named after a family covers that family's checks without listing them."""

    @auditkit.hookimpl
    def auditkit_scorecard_sections(self, results, config):
        return [{"id": "gradcam", "title": "Grad-CAM family", "html": "<p>gradcam</p>", "order": 20}]


class Broken:
    @auditkit.hookimpl
    def auditkit_scorecard_sections(self, results, config):
        raise RuntimeError("section exploded")


class NotASection:
    @auditkit.hookimpl
    def auditkit_scorecard_sections(self, results, config):
        return ["just a string"]


def test_sections_are_sorted_by_order_and_cover_their_checks():
    pm = get_plugin_manager(autoload=False, extra=[TwoSections(), GradcamSection()])
    text = render(pm=pm)
    order = section_order(text)
    assert order == ["section-early", "section-gradcam", "section-late", "section-accuracy-clean"]
    assert "section-thirdparty-widget" not in order  # covered by "early"
    assert "section-gradcam-randomization" not in order  # covered by the family section
    toc = re.findall(r'<li><a href="#(section-[^"]+)">', text)
    assert toc == order
    assert lint_html(text) == []


def test_a_check_without_a_section_gets_a_generic_one_with_its_artifacts():
    text = render()
    assert section_order(text) == ["section-accuracy-clean", "section-gradcam-randomization", "section-thirdparty-widget"]
    generic = text[text.index('id="section-thirdparty-widget"'):]
    generic = generic[:generic.index("</section>")]
    assert "<td>mystery</td>" in generic and "1.500" in generic
    assert generic.count("data:image/png;base64,") == 1
    assert generic.count("<svg") == 1 and "<polygon" in generic  # the curve, with its band
    assert "<td>a</td>" in generic and "plain text" in generic


def test_a_raising_or_malformed_section_plugin_does_not_take_the_page_down():
    pm = get_plugin_manager(autoload=False, extra=[Broken(), NotASection(), TwoSections()])
    text = render(pm=pm)
    assert text.count("failed</h2>") == 2
    assert "RuntimeError: section exploded" in text and "not a dict" in text
    assert "section-early" in text and "section-late" in text
    assert "section-thirdparty-widget" not in text
    assert lint_html(text) == []


def test_the_reporter_is_a_default_plugin():
    assert "auditkit.reporters.html" in DEFAULT_PLUGINS


# -------------------------------------------------------------------------------------------
# size and determinism
# -------------------------------------------------------------------------------------------


def test_size_stays_close_to_the_embedded_images():
    image = png(160, 160, (10, 120, 200))
    results = []
    for model in ("target", "alexnet", "googlenet", "resnet18"):
        results.append(result("thirdparty.widget", model, metrics={"quality": 0.5},
                              artifacts=tuple(Artifact(f"image_{i}", "image/png", image, "img") for i in range(12))
                              + tuple(Artifact(f"curve_{i}", "curve", {"x": list(range(20)), "y": [0.1] * 20}, "c")
                                      for i in range(4))))
    text = render(results)
    images = 48 * len(svg.image_tag(image, "img"))
    assert len(text.encode()) < images + 400_000
    assert len(text.encode()) < 3_000_000


def test_rendering_is_deterministic():
    pm = get_plugin_manager(autoload=False, extra=[TwoSections()])
    assert render(pm=pm) == render(pm=pm)


# -------------------------------------------------------------------------------------------
# the section helpers
# -------------------------------------------------------------------------------------------


def chart(**kwargs) -> str:
    series = [
        {"label": "target", "x": [1, 2, 4, 8], "y": [0.9, None, 0.5, 0.2], "lo": [0.8, None, 0.4, 0.1], "hi": [1.0, None, 0.6, 0.3]},
        {"label": "resnet18", "x": [1, 2, 4, 8], "y": [0.95, 0.9, 0.8, 0.6]},
    ]
    return svg.line_chart(series, "epsilon", "robust accuracy", title="PGD", **kwargs)


def test_line_chart_is_deterministic_and_well_formed():
    a, b = chart(), chart()
    assert a == b
    assert a.startswith("<svg") and a.endswith("</svg>")
    assert lint_html(a, fragment=True) == []
    assert "<title>PGD</title>" in a and 'aria-label="PGD"' in a
    assert ">target</text>" in a and ">resnet18</text>" in a  # the legend
    assert ">epsilon</text>" in a and ">robust accuracy</text>" in a  # axis titles


def test_line_chart_draws_gaps_bands_ticks_and_reference_lines():
    text = chart(reference_lines=[{"y": 0.5, "label": "threshold"}])
    # the gap at x=2 splits the target's line into a lone point and a segment
    assert text.count("<polyline") == 2
    assert text.count("<polygon") == 1  # the band over x = 4..8; the lone interval at x = 1 is an error bar
    assert 'stroke-opacity="0.5" stroke-width="3"' in text
    assert "threshold</text>" in text and 'stroke-dasharray="1 3"' in text
    assert ">0.0</text>" in text or ">0.2</text>" in text


def test_line_chart_log_axis_and_categories():
    text = svg.line_chart([{"label": "s", "x": [0.001, 0.01, 0.1, 0, -1], "y": [1, 2, 3, 4, 5]}], "x", "y", log_x=True)
    assert ">0.001</text>" in text and ">0.1</text>" in text
    assert len(re.findall(r"<circle[^>]*><title>", text)) == 3  # non-positive x is left out on a log axis
    text = svg.line_chart([{"label": "s", "x": [0, 1, 2], "y": [1, 0.5, 0.2]}], "block", "corr",
                          x_tick_labels=["original", "layer4", "layer3.1.conv2.weight"])
    assert ">original</text>" in text and "rotate(-40" in text


def test_line_chart_explicit_x_ticks():
    text = svg.line_chart([{"label": "s", "x": [1, 2, 4, 8, 16], "y": [1, 0.8, 0.5, 0.2, 0]}], "eps", "acc", x_ticks=[0, 4, 8, 16])
    assert re.findall(r'text-anchor="middle">([^<]*)</text>', text)[:4] == ["0", "4", "8", "16"]


def test_line_chart_without_data_says_so():
    text = svg.line_chart([{"label": "s", "x": [], "y": []}], "x", "y", title="empty")
    assert "no data" in text and lint_html(text, fragment=True) == []
    text = svg.line_chart([{"label": "s", "x": [1, 2], "y": [math.nan, None]}], "x", "y")
    assert "no data" in text


def test_line_chart_escapes_labels():
    text = svg.line_chart([{"label": HOSTILE, "x": [1, 2], "y": [1, 2], "names": [QUOTES, UNICODE]}], QUOTES, HOSTILE,
                          title=HOSTILE, x_tick_labels=None)
    assert HOSTILE not in text and ESCAPED in text and UNICODE in text
    assert lint_html(text, fragment=True) == []
    assert all(not name.startswith("on") for _, attrs in Cells(text).elements for name in attrs)


def test_image_tag_embeds_the_png_with_its_size():
    tag = svg.image_tag(png(30, 20), f"alt {HOSTILE}")
    assert tag.startswith('<img src="data:image/png;base64,iVBORw0KGgo')
    assert 'width="30" height="20"' in tag and ESCAPED in tag
    with pytest.raises(TypeError):
        svg.image_tag("not bytes", "x")


@pytest.mark.parametrize(
    "artifact, expected",
    [
        (Artifact("img", "image/png", png(), "cap"), "data:image/png;base64,"),
        (Artifact("c", "curve", {"x": [1, 2], "y": [3, 4]}, "cap"), "<svg"),
        (Artifact("t", "table", [{"a": 1, "b": "x"}], "cap"), "<td>x</td>"),
        (Artifact("t", "table", {"a": [1, 2], "b": [3, 4]}, "cap"), '<td class="num">4</td>'),
        (Artifact("t", "table", [[1, "y"]], "cap"), "<td>y</td>"),
        (Artifact("n", "text", "hello <b>", "cap"), "<pre>hello &lt;b&gt;</pre>"),
        (Artifact("v", "video/mp4", b"...", "cap"), "no renderer for this kind"),
        (Artifact("bad", "image/png", "not bytes", "cap"), "could not be rendered"),
        (Artifact("bad", "curve", [1, 2, 3], "cap"), "could not be rendered"),
    ],
)
def test_artifact_html_renders_every_kind_and_never_raises(artifact, expected):
    text = svg.artifact_html(artifact)
    assert expected in text
    assert text.startswith("<figure") and "<figcaption>cap</figcaption>" in text
    assert lint_html(text, fragment=True) == []


@pytest.mark.parametrize(
    "value, text",
    [(None, "\u2013"), (3.0, "3"), (0.81234, "0.812"), (23.456, "23.46"), (456.7, "456.7"), (12345.6, "12346"),
     (3e-5, "3.00e-05"), (math.nan, "nan"), (math.inf, "\u221e"), (True, "yes"), ("x", "x")],
)
def test_format_number(value, text):
    assert svg.format_number(value) == text


def test_model_order_and_colours():
    results = [result("a", "alexnet"), result("a", "target"), result("b", "resnet18")]
    assert svg.model_order(results) == ["target", "alexnet", "resnet18"]
    colours = svg.model_colors(["target", "alexnet"])
    assert colours["target"][0] != colours["alexnet"][0]


def test_every_model_differs_from_the_others_in_colour_dash_and_marker():
    styles = svg.model_styles(["target", "alexnet", "googlenet", "resnet18"])
    for key in ("color", "dash", "marker"):
        assert len({s[key] for s in styles.values()}) == 4, key
    assert styles["target"]["dash"] == "" and styles["target"]["marker"] == "circle"  # the user's model: solid


def identical_chart() -> str:
    styles = svg.model_styles(["target", "alexnet", "googlenet"])
    series = [{"label": m, "x": [0, 4, 8], "y": [0.9, 0.5, 0.2], "lo": [0.8, 0.4, 0.1], "hi": [1.0, 0.6, 0.3], **styles[m]}
              for m in ("target", "alexnet", "googlenet")]
    series[0]["y"] = [0.95, 0.7, 0.6]  # the target differs; alexnet and googlenet are equal
    return svg.line_chart(series, "epsilon", "robust accuracy", title="equal")


def test_lines_with_equal_values_stay_visible_and_say_so():
    text = identical_chart()
    lines = re.findall(r'<polyline points="([^"]+)" fill="none" stroke="([^"]+)" stroke-width="([^"]+)"'
                       r'(?: stroke-dasharray="([^"]+)")?', text)
    assert len(lines) == 3
    # drawn last-listed first, so the user's model lies on top ...
    styles = svg.model_styles(["target", "alexnet", "googlenet"])
    assert [colour for _, colour, _, _ in lines] == [styles[m]["color"] for m in ("googlenet", "alexnet", "target")]
    googlenet, alexnet, _ = lines
    assert googlenet[0] == alexnet[0]  # the same points ...
    assert googlenet[3] != alexnet[3] and float(googlenet[2]) > float(alexnet[2])  # ... in another dash, wider beneath
    assert ">googlenet (identical to alexnet)</text>" in text and ">alexnet</text>" in text
    assert "identical" not in text.split(">alexnet</text>")[0].rsplit("<text", 1)[-1]
    # hollow, larger markers for the hidden one, of its own shape
    assert '<g fill="#fff" fill-opacity="0" stroke="' + styles["googlenet"]["color"] in text
    assert lint_html(text, fragment=True) == []


def test_confidence_bands_are_light_fills_with_their_own_edges():
    text = identical_chart()
    fills = re.findall(r'<polygon points="[^"]+" fill="([^"]+)" fill-opacity="([^"]+)" stroke="none"/>', text)
    assert len(fills) == 3 and all(float(opacity) <= 0.1 for _, opacity in fills)
    assert len({colour for colour, _ in fills}) == 3
    edges = re.findall(r'<path d="M[^"]+" fill="none" stroke="([^"]+)" stroke-width="1"', text)
    assert sorted(edges) == sorted(colour for colour, _ in fills for _ in range(2))  # upper and lower edge each


def test_step_series_hold_each_value_until_the_next_point():
    text = svg.line_chart([{"label": "one block", "x": [0, 1], "y": [1.0, 0.1], "step": True, "markers": False}],
                          "share randomized", "rank correlation")
    (points,) = re.findall(r'<polyline points="([^"]+)"', text)
    (_, y0), corner, (x1, _) = [tuple(map(float, p.split(","))) for p in points.split()]
    assert corner == (x1, y0)  # flat until the block is randomized, then the drop: no slope
    assert len(re.findall(r"<circle[^>]*><title>", text)) == 2  # a step series always shows its points


def test_randomization_of_a_one_block_model_is_drawn_as_a_step():
    from auditkit_gradcam import scorecard as gradcam

    from auditkit.testing.scorecard import charts, only_section

    one_block = result("gradcam.randomization", "target", metrics={"max_rank_corr": 0.1},
                       details={"rank_corr_by_block": {"fc": 0.1}})
    rank = charts(only_section(gradcam, [one_block])["html"])["Spearman rank correlation with the original map"]
    (points,) = re.findall(r'<polyline points="([^"]+)"', rank)
    assert len(points.split()) == 3  # (0, 1) -> (1, 1) -> (1, 0.1)
    assert len(re.findall(r"<circle[^>]*><title>", rank)) == 2


def test_the_transfer_table_reads_like_prose():
    from auditkit_transfer import scorecard as transfer

    from auditkit.testing.scorecard import only_section

    def proxy(model, eps, epochs):
        return result("transfer.proxy", model, metrics={"queries": 256.0, "transfer_success": 0.25},
                      details={"gate": {"norm": "linf", "epsilon": eps, "attack": "fgsm"},
                               "training": {"proxy": "resnet", "trained_on": "labels", "epochs": epochs}})

    html = only_section(transfer, [proxy("target", 8 / 255, [4, 0]), proxy("alexnet", 0.0123456, 1),
                                   proxy("resnet18", 0.03137254901960784, [3])])["html"]
    assert "<td>fgsm linf 8/255</td>" in html and "0.03137" not in html
    assert "<td>fgsm linf 0.01235</td>" in html
    assert "<td>4 epochs in 2 rounds (4, 0)</td>" in html and "[4, 0]" not in html
    assert "<td>1 epoch</td>" in html and "<td>3 epochs</td>" in html
    assert "proxy training" in html


@pytest.mark.parametrize("count, text", [(1, "1 epoch"), (2, "2 epochs"), (0, "0 epochs"), (1.0, "1 epoch")])
def test_plural(count, text):
    assert svg.plural(count, "epoch") == text


def test_counts_in_the_model_table_agree_with_their_nouns():
    training = {"steps": 1, "steps_budget": 1, "val_acc": 0.5, "epochs": 1}
    report = {**REPORT, "models": [REPORT["models"][0], {**REPORT["models"][1], "info": {"source": "trained", "training": training}}],
              "data": {**REPORT["data"], "n_eval": 1}}
    text = render(report=report)
    assert "trained, 1 step of 1 (1 epoch)" in text and "1 steps" not in text and "1 epochs" not in text
    assert "1 evaluation image," in text


# -------------------------------------------------------------------------------------------
# a real audit
# -------------------------------------------------------------------------------------------


def test_audit_writes_a_scorecard(tmp_path, capsys):
    import auditkit_accuracy
    import auditkit_cam
    import torch

    from auditkit.testing.models import TinyGAPNet

    torch.manual_seed(0)
    path = tmp_path / "reports" / "scorecard.html"
    run = auditkit.audit(
        TinyGAPNet(num_classes=4), "synthetic:shapes?n=4&train=8&size=32", checks=["accuracy.clean", "cam.*"],
        max_images=4, html=str(path), plugins=[auditkit_accuracy, auditkit_cam],
        autoload=False, verbose=0,
    )
    assert f"HTML scorecard: {path}" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    assert lint_html(text) == []
    assert len(text.encode()) < 1_000_000
    for check in ("accuracy.clean", "cam.consistency"):
        assert f"<code>{check}</code>" in text
    assert section_order(text) == ["section-cam", "section-accuracy-clean"]
    cam = text[text.index('id="section-cam"'):]
    assert cam.count("data:image/png;base64,") == 4  # the CAM overlays of the four images
    assert "PASSED" in text if run.exit_code == 0 else "FAILED" in text
    assert "auditkit run --model" in text and "Python API" in text  # rebuilt: the model was an object


def test_a_failing_scorecard_does_not_cost_the_other_reports(tmp_path, capsys, monkeypatch):
    import auditkit_accuracy
    import torch

    import auditkit.reporters.html as reporter
    from auditkit.testing.models import TinyGAPNet

    def explode(*args, **kwargs):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(reporter, "render_scorecard", explode)
    torch.manual_seed(0)
    run = auditkit.audit(TinyGAPNet(num_classes=4), "synthetic:shapes?n=4&train=8&size=32", checks=["accuracy.clean"],
                         max_images=4, plugins=[auditkit_accuracy], autoload=False, verbose=0,
                         html=str(tmp_path / "s.html"), json=str(tmp_path / "r.json"))
    out = capsys.readouterr().out
    assert f"HTML scorecard {tmp_path / 's.html'} NOT written: RuntimeError: template exploded" in out
    assert run.not_written and run.exit_code == 3  # a writer crashed: an internal error, never a silent 0
    assert (tmp_path / "r.json").is_file() and not (tmp_path / "s.html").exists()


def test_audit_without_html_writes_no_scorecard(tmp_path, capsys):
    import auditkit_accuracy
    import torch

    from auditkit.testing.models import TinyGAPNet

    torch.manual_seed(0)
    auditkit.audit(TinyGAPNet(num_classes=4), "synthetic:shapes?n=4&train=8&size=32", checks=["accuracy.clean"],
                   max_images=4, plugins=[auditkit_accuracy], autoload=False, verbose=0)
    assert "HTML scorecard" not in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------------------------
# a real browser, where CI has one (.ci/run installs Debian's chromium)
# -------------------------------------------------------------------------------------------

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's)")
ALL_CHECKS = ("accuracy.clean", "cam.consistency", "gradcam.faithfulness", "gradcam.localization", "gradcam.randomization",
              "inversion.fidelity", "transfer.proxy", "whitebox.fgsm", "whitebox.masking", "whitebox.pgd")
FAMILY_MODELS = ("target", "alexnet", "googlenet", "resnet18")
COLOURS = ((200, 30, 30), (30, 140, 60), (40, 80, 200), (220, 160, 20))


def every_family_results() -> list[CheckResult]:
    """Results of every check of every built-in plugin on four models, shaped as the checks
    report them (metrics, curves, pictures, details), as the demo's: AlexNet's robustness
    curve equal to GoogLeNet's, a one-block randomization curve, overlapping bands."""
    from auditkit.budgets import budget_label

    out = []
    for i, model in enumerate(FAMILY_MODELS):
        picture = png(48, 48, COLOURS[i])
        shift = 0.05 * i
        out.append(result("accuracy.clean", model, metrics={"top1": 0.9 - shift, "n_images": 24}, headline=("top1",),
                          directions={"top1": "higher"}))
        failed = model == "target"
        out.append(result(
            "gradcam.localization", model, "failed" if failed else "passed",
            metrics={"pointing_game": 0.4 + shift, "pointing_game_ci_low": 0.25, "pointing_game_ci_high": 0.6,
                     "center_baseline": 0.5, "center_baseline_ci_low": 0.3, "center_baseline_ci_high": 0.7,
                     "energy_in_box": 0.3, "energy_in_box_ci_low": 0.2, "energy_in_box_ci_high": 0.4,
                     "energy_gain": 0.02, "energy_gain_ci_low": -0.01 if failed else 0.06, "energy_gain_ci_high": 0.05,
                     "pointing_p_value": 0.3 if failed else 0.01, "box_area_share": 0.2, "loc_acc_iou50": 0.3, "n_images": 24},
            thresholds={"pointing_p_value": {"op": "max", "value": 0.05}, "energy_gain_ci_low": {"op": "min", "value": 0.05}},
            headline=("pointing_game", "center_baseline", "energy_in_box"),
            message="pointing_p_value=0.3 violates pointing_p_value <= 0.05" if failed else "ok",
            artifacts=[Artifact(f"worst_localized_{k}", "image/png", picture, f"image {k}: a miss") for k in range(2)],
        ))
        blocks = {"alexnet": ["classifier"]}.get(model, ["fc", "layer4", "layer3", "layer2", "layer1"])
        corr = [max(0.9 - 0.3 * k - shift, -0.2) for k in range(len(blocks))]
        out.append(result(
            "gradcam.randomization", model, metrics={"max_rank_corr": max(corr), "final_rank_corr": corr[-1]},
            thresholds={"max_rank_corr": {"op": "max", "value": 0.95}}, headline=("max_rank_corr",),
            details={"rank_corr_by_block": dict(zip(blocks, corr)), "ssim_by_block": dict(zip(blocks, corr))},
            artifacts=[Artifact("maps_by_block", "image/png", png(160, 32, COLOURS[i]), "original, then each block")],
        ))
        x = [k / 10 for k in range(11)]
        out.append(result(
            "gradcam.faithfulness", model, metrics={"deletion_auc": 0.3 + shift, "insertion_auc": 0.6 - shift,
                                                    "deletion_p_value": 0.01, "insertion_p_value": 0.02},
            thresholds={"deletion_p_value": {"op": "max", "value": 0.05}}, headline=("deletion_auc", "insertion_auc"),
            artifacts=[Artifact("deletion_curve", "curve", {"x": x, "y": [1 - v ** 0.5 for v in x]}),
                       Artifact("deletion_random_curve", "curve", {"x": x, "y": [1 - v for v in x]}),
                       Artifact("insertion_curve", "curve", {"x": x, "y": [v ** 0.5 for v in x]}),
                       Artifact("insertion_random_curve", "curve", {"x": x, "y": x})],
        ))
        if model != "alexnet":  # no GAP head
            out.append(result(
                "cam.consistency", model, metrics={"logit_max_abs_err": 1e-7, "gradcam_max_abs_err": 1e-8,
                                                   "cam_gradcam_corr": 1.0, "flip_corr": 0.4, "n_images": 8},
                headline=("logit_max_abs_err", "cam_gradcam_corr"), details={"gap_head": {"pool": "avgpool", "linear": "fc"}},
                artifacts=[Artifact(f"cam_overlay_{k}", "image/png", picture, f"CAM {k}") for k in range(2)],
            ))
        # AlexNet's robust accuracy equals GoogLeNet's: both lines must stay visible
        level = 0.1 if model in ("alexnet", "googlenet") else 0.2 * i
        eps = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
        acc = [max(0.85 - level - 0.1 * k, 0.0) for k in range(4)]
        for check in ("whitebox.fgsm", "whitebox.pgd"):
            metrics = {"clean_acc": 0.9}
            for e, a in zip(eps, acc):
                label = budget_label("linf", e)
                metrics |= {f"robust_acc@{label}": a, f"robust_acc_lo@{label}": a - 0.15, f"robust_acc_hi@{label}": a + 0.15}
            out.append(result(check, model, metrics=metrics, headline=("clean_acc", "robust_acc@linf_8/255"),
                              curves=(budget_curve("robust_acc", "linf", eps, acc, [a - 0.15 for a in acc], [a + 0.15 for a in acc]),),
                              artifacts=[Artifact("example_0", "image/png", png(96, 32, COLOURS[i]), "original, adversarial, x10")]))
        out.append(result(
            "whitebox.masking", model, metrics={"flags": 0.0, "zero_gradients": 0.0},
            details={"flags": {"zero_gradients": {"raised": False, "meaning": "gradients vanish", "evidence": "none zero"}}},
        ))
        metrics = {"queries": 96.0, "attack_queries": 32.0, "proxy_agreement": 0.8, "proxy_agreement_lo": 0.7,
                   "proxy_agreement_hi": 0.9, "transfer_success": 0.3, "transfer_success_lo": 0.2, "transfer_success_hi": 0.4}
        for e, a in zip(eps, acc):
            label = budget_label("linf", e)
            metrics |= {f"transfer_success@{label}": 1 - a, f"transfer_success_lo@{label}": 0.85 - a,
                        f"transfer_success_hi@{label}": 1.15 - a, f"noise_success@{label}": 0.02}
        out.append(result(
            "transfer.proxy", model, metrics=metrics, headline=("transfer_success", "proxy_agreement", "queries"),
            curves=(budget_curve("transfer_success", "linf", eps, [1 - a for a in acc], [0.85 - a for a in acc],
                                 [1.15 - a for a in acc]),
                    budget_curve("noise_success", "linf", eps, [0.02] * len(eps))),
            details={"training": {"proxy": "resnet", "trained_on": "scores", "epochs": [4, 0]},
                     "gate": {"norm": "linf", "epsilon": 8 / 255, "attack": "pgd"}},
            artifacts=[Artifact("proxy_validation_agreement", "curve", {"x": [1, 2, 3, 4], "y": [0.5, 0.6, 0.75, 0.8]})],
        ))
        out.append(result(
            "inversion.fidelity", model, metrics={"faithful_depth": 0.25, "leaking_layers": 1.0},
            details={"layers": [{"name": n, "depth": d, "ssim": 0.9 - d + 0.01 * i, "psnr": 30 - 20 * d, "feature_rel_err": 0.1}
                                for n, d in (("conv1", 0.1), ("layer2", 0.5), ("layer4", 0.9))],
                     "settings": {"leak_ssim": 0.5}},
            artifacts=[Artifact("reconstructions", "image/png", png(128, 48, COLOURS[i]), "the original, then each layer")],
        ))
    return out


def every_outcome_results() -> list[CheckResult]:
    """Every check, and besides them every kind of outcome: a generic section with every kind
    of artifact, a skip, an insufficient-evidence skip, an xfail and an error."""
    target_only = [r for r in every_family_results() if r.model in ("target", "resnet18")]
    extra = [r for r in every_kind_of_result() if r.check in ("thirdparty.widget", "whitebox.pgd", "whitebox.fgsm")
             and r.model == "target"]
    target_only = [r for r in target_only if not (r.model == "target" and r.check in ("whitebox.pgd", "whitebox.fgsm"))]
    return target_only + extra + [
        result("gradcam.localization", "alexnet", "skipped", message="insufficient evidence: 3 images, the rule needs 20"),
    ]


@functools.lru_cache(maxsize=1)
def family_pm():
    import auditkit_accuracy
    import auditkit_cam
    import auditkit_gradcam
    import auditkit_inversion
    import auditkit_transfer
    import auditkit_whitebox

    return get_plugin_manager(autoload=False, extra=[auditkit_accuracy, auditkit_gradcam, auditkit_cam, auditkit_whitebox,
                                                     auditkit_transfer, auditkit_inversion])


def demo_like_report() -> dict:
    training = {"steps": 120, "steps_budget": 120, "val_acc": 0.85, "majority_fraction": 0.55}
    models = [dict(REPORT["models"][0], name="target")]
    for name in FAMILY_MODELS[1:]:
        models.append({"name": name, "role": "baseline", "spec": f"baseline:{name}", "params": 6_000_000, "white_box": True,
                       "gap_head": name != "alexnet", "input_size": [3, 32, 32], "num_classes": 2,
                       "info": {"source": "trained", "training": training}})
    return {**REPORT, "models": models}


# Injected into the test copy of a page only (the scorecard itself has no script): records what
# the browser made of the page into the DOM, which --dump-dom then prints.
PROBE = """
var auditkitErrors = [];
addEventListener("error", function (e) { auditkitErrors.push(String(e.message || (e.target && e.target.tagName))); }, true);
addEventListener("load", function () {
  var out = {errors: auditkitErrors, images: [], sections: [], height: document.documentElement.scrollHeight};
  for (var img of document.images) out.images.push([img.alt, img.complete && img.naturalWidth > 0]);
  for (var s of document.querySelectorAll("section")) {
    var box = s.getBoundingClientRect();
    out.sections.push([s.id, Math.round(box.top + scrollY), Math.round(box.bottom + scrollY)]);
  }
  var pre = document.createElement("pre");
  pre.id = "auditkit-probe";
  pre.hidden = true;
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def browse(page, tmp_path, name: str) -> tuple[dict, Image.Image]:
    """Open ``page`` (the scorecard's HTML) in headless Chromium, offline: what the probe saw
    (errors, images, section boxes) in a copy that carries it, and a screenshot of the whole
    page as it is. Fails on any console message of either load."""
    import base64
    import hashlib
    import html as html_module
    import json

    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--hide-scrollbars", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    # the copy allows exactly the probe (by its hash) and nothing else the page does not
    digest = base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    assert "default-src 'none'" in page
    probed = page.replace("default-src 'none';", f"default-src 'none'; script-src 'sha256-{digest}';", 1)
    probed = probed.replace("</head>", f"<script>{PROBE}</script></head>", 1)
    (tmp_path / f"{name}-probed.html").write_text(probed, encoding="utf-8")
    (tmp_path / f"{name}.html").write_text(page, encoding="utf-8")
    done = subprocess.run([*flags, "--window-size=1280,8000", "--dump-dom", (tmp_path / f"{name}-probed.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="auditkit-probe" hidden="">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    probe = json.loads(html_module.unescape(found.group(1)))
    height = min(max(probe["height"], 600), 16000)
    shot = tmp_path / f"{name}.png"
    shown = subprocess.run([*flags, f"--window-size=1280,{height}", f"--screenshot={shot}", (tmp_path / f"{name}.html").as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert shot.is_file(), shown.stderr[-2000:]
    # the page has no script, so any console message is an error (a refused request included);
    # a favicon lookup is the browser's own doing, not the page's
    console = [line for line in (done.stderr + shown.stderr).splitlines()
               if ("CONSOLE" in line or "Refused to" in line or "Uncaught" in line) and "favicon" not in line]
    assert console == [], "\n".join(console)[-2000:]
    with Image.open(shot) as picture:
        return probe, picture.convert("RGB")


def assert_rendered(probe: dict, picture: Image.Image, sections: list[str]) -> None:
    """No error, every image decoded, every section there and none of them blank, and no tall
    band of the page empty."""
    import numpy as np

    assert probe["errors"] == [], probe["errors"]
    assert probe["images"], "no images in the page"
    assert [alt for alt, ok in probe["images"] if not ok] == [], "images that did not decode"
    boxes = {sid: (top, bottom) for sid, top, bottom in probe["sections"]}
    assert [s for s in sections if s not in boxes] == []
    pixels = np.asarray(picture).astype(np.int32)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    background = np.bincount(packed.ravel()).argmax()  # the page's own colour: the commonest
    ink = packed != background
    for sid in sections:
        top, bottom = boxes[sid]
        assert bottom - top > 30, (sid, top, bottom)
        region = ink[top:min(bottom, ink.shape[0])]
        assert region.size and region.mean() > 0.01, f"section {sid} is blank in the screenshot"
    rows = np.flatnonzero(ink.any(axis=1))
    blank_run = np.diff(rows).max(initial=0)
    assert blank_run < 300, f"a band of {blank_run} px with nothing on it"


PAGE_SECTIONS = ["verdict", "comparison", "all-results", "environment", "configuration", "reproduce"]


@needs_chromium
def test_chromium_renders_the_demo_like_scorecard(tmp_path):
    page = render_scorecard(every_family_results(), config(), pm=family_pm(), report=demo_like_report())
    assert lint_html(page) == []
    probe, picture = browse(page, tmp_path, "demo")
    sections = PAGE_SECTIONS + ["section-gradcam", "section-cam", "section-whitebox", "section-transfer", "section-inversion",
                                "section-accuracy-clean"]
    assert_rendered(probe, picture, sections)
    assert len(probe["images"]) >= 4 * 6  # every model's overlays, strips, examples and reconstructions


@needs_chromium
def test_chromium_renders_the_scorecard_without_errors_or_requests(tmp_path):
    """A report with every check and every outcome, rebuilt from its JSON as ``auditkit report``
    does: generic sections with every kind of artifact, skips, an xfail and an error."""
    import json

    from auditkit.reporters.html import scorecard_from_report

    results = every_outcome_results()
    report = json.loads(json.dumps({**REPORT, "results": [r.to_json() for r in results]}))
    page = scorecard_from_report(report, pm=family_pm())
    assert lint_html(page) == []
    probe, picture = browse(page, tmp_path, "report")
    sections = PAGE_SECTIONS + ["skipped", "errors", "section-gradcam", "section-cam", "section-whitebox", "section-transfer",
                                "section-inversion", "section-accuracy-clean", "section-thirdparty-widget"]
    assert_rendered(probe, picture, sections)
    for check in ALL_CHECKS:
        assert f"<code>{check}</code>" in page
    top = picture.crop((0, 0, picture.width, 300))
    colours = top.getcolors(1 << 16)
    assert colours is None or len(colours) > 8  # the verdict banner and its text, not a blank page


# -- rebuilding the scorecard from the JSON report alone ------------------------------------


def test_results_round_trip_through_json_with_artifacts_and_non_finite_metrics():
    import json

    original = result(
        "thirdparty.widget", "target", "failed", metrics={"a": 0.25, "up": math.inf, "down": -math.inf, "none": math.nan},
        thresholds={"a": {"op": "min", "value": 0.5}}, headline=("a", "up"), directions={"a": "higher"},
        message="m", details={"k": [1, 2]}, traceback="tb", duration_s=1.5,
        artifacts=(Artifact("picture", "image/png", png(), "a picture"), Artifact("trend", "curve", {"x": [1], "y": [2.0]})),
        curves=(budget_curve("robust_acc", "linf", [1 / 255, 8 / 255], [0.5, math.nan], [0.4, 0.0], [0.6, 0.1]),
                budget_curve("transfer_success", "l2", [0.5], [0.25], variant="pgd")),
    )
    data = json.loads(json.dumps(original.to_json(), allow_nan=False))
    assert data["curves"][0]["points"][1] == {"x": 8 / 255, "value": None, "lo": 0.0, "hi": 0.1}
    assert data["metrics"]["up"] is None and data["nonfinite"] == {"up": "inf", "down": "-inf", "none": "nan"}
    back = CheckResult.from_json(data)
    assert back.artifacts == original.artifacts and back.artifacts[0].data == png()
    assert back.curves[1] == original.curves[1] and back.curve("transfer_success", "l2", "pgd") == original.curves[1]
    assert math.isnan(back.curves[0].points[1].value) and back.curves[0].points[0] == original.curves[0].points[0]
    assert back.metrics["up"] == math.inf and back.metrics["down"] == -math.inf and math.isnan(back.metrics["none"])
    assert (back.check, back.model, back.outcome, back.metrics["a"], back.thresholds, back.headline, back.directions,
            back.message, dict(back.details), back.traceback, back.duration_s) == (
        original.check, original.model, original.outcome, 0.25, original.thresholds, original.headline,
        original.directions, "m", {"k": [1, 2]}, "tb", 1.5)


def test_a_duration_on_a_rounding_edge_reads_the_same_from_the_json():
    """The scorecard shows the duration the JSON keeps (4 decimals), so a page rebuilt from the
    JSON is the same page: 0.084999 s is kept as 0.085 and shown 0.09 both ways (the live page
    once showed 0.08, the rebuilt one 0.09)."""
    import dataclasses
    import json

    from auditkit.reporters.html import scorecard_from_report

    timed = dataclasses.replace(every_kind_of_result()[0], duration_s=0.084999)
    live = render([timed])
    report = json.loads(json.dumps({**REPORT, "results": [timed.to_json()]}))
    rebuilt = scorecard_from_report(report, pm=get_plugin_manager(autoload=False))

    def durations(page: str) -> list[str]:
        return re.findall(r'<td class="num">([0-9.]+)</td><td class="message">', page)

    assert durations(live) == durations(rebuilt) == ["0.09"]


def test_auditkit_report_rebuilds_the_same_scorecard_from_the_json(tmp_path, monkeypatch):
    from auditkit.cli import main
    from auditkit.testing.models import TinyGAPNet

    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    run = auditkit.audit(
        TinyGAPNet(num_classes=4), "synthetic:shapes?n=8&train=24&size=32&background=plain",
        ["accuracy.clean", "gradcam.localization", "whitebox.fgsm"], device="cpu",
        settings={"whitebox.fgsm": {"linf_eps": [8 / 255], "l2_eps": []}}, baselines=["resnet18"], baseline_epochs=1,
        json=str(tmp_path / "r.json"), html=str(tmp_path / "run.html"),
    )
    assert run.exit_code in (0, 1)
    assert main(["report", str(tmp_path / "r.json"), "--html", str(tmp_path / "rebuilt.html")]) == 0
    page = (tmp_path / "run.html").read_bytes()
    assert b"data:image/png;base64," in page  # the artifacts' pictures made it through the JSON
    assert (tmp_path / "rebuilt.html").read_bytes() == page
    assert main(["report", str(tmp_path / "missing.json")]) == 4


def test_a_baseline_loaded_from_a_checkpoint_renders_its_source(tmp_path, monkeypatch):
    import torch

    from auditkit.baselines import BaselineSpec, build
    from auditkit.testing.models import TinyGAPNet

    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    torch.save(build(BaselineSpec("resnet18", 4, 32)).state_dict(), tmp_path / "r18.pt")
    auditkit.audit(
        TinyGAPNet(num_classes=4), "synthetic:shapes?n=8&train=24&size=32&background=plain", ["accuracy.clean"],
        device="cpu", baselines=["resnet18"], baseline_weights={"resnet18": str(tmp_path / "r18.pt")},
        html=str(tmp_path / "s.html"),
    )
    assert f"checkpoint {tmp_path / 'r18.pt'}" in (tmp_path / "s.html").read_text()


def test_auditkit_report_renders_without_the_plugins_it_names(tmp_path, capsys):
    import json

    from auditkit.cli import main

    report = dict(REPORT, config={**REPORT["config"], "plugins": ["no_such_plugin_here", "no_such.pkg"]},
                  results=[r.to_json() for r in every_kind_of_result()])
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out  # a report never loads code: it says which -p would add sections
    assert "plugin(s) no_such_plugin_here, no_such.pkg" in out and "-p no_such_plugin_here -p no_such.pkg" in out
    page = (tmp_path / "r.html").read_text()
    assert lint_html(page) == [] and "thirdparty.widget" in page
