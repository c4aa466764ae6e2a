"""The Grad-CAM section of the HTML scorecard: the worst-localized overlays of every model, the
cascading-randomization curves and the deletion/insertion curves, one line per model. Built from
the results alone (metrics and artifacts), so it renders whatever subset of them exists."""
from __future__ import annotations

import math
from typing import Any

import auditkit
from auditkit.toolkit import svg

LOCALIZATION = "gradcam.localization"
RANDOMIZATION = "gradcam.randomization"
FAITHFULNESS = "gradcam.faithfulness"
CHECKS = (LOCALIZATION, RANDOMIZATION, FAITHFULNESS)
ORDER = 20


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    mine = [r for r in results if r.check in CHECKS]
    if not mine:
        return []
    models = svg.model_order(results)
    styles = svg.model_styles(models)
    parts = [
        _localization([r for r in mine if r.check == LOCALIZATION], models),
        _randomization([r for r in mine if r.check == RANDOMIZATION], models, styles),
        _faithfulness([r for r in mine if r.check == FAITHFULNESS], models, styles),
    ]
    return [{
        "id": "gradcam",
        "title": "Grad-CAM: localization, randomization, faithfulness",
        "html": "".join(p for p in parts if p),
        "order": ORDER,
        "checks": sorted({r.check for r in mine}),
    }]


def _localization(results: list[Any], models: list[str]) -> str:
    if not results:
        return ""
    ran = [r for r in svg.by_model(results, models) if svg.ran(r)]
    out = [f"<h3>Localization <code>{LOCALIZATION}</code></h3>"]
    if ran:
        out.append(
            '<p class="legend">Does the evidence lie on the object? Pointing game: the map\'s maximum falls on the '
            "object box, against a map that always points at the image center; energy in box: the share of the "
            "map's mass inside the box, against the box's share of the image. Brackets: 95% intervals.</p>"
        )
        rows = [
            [
                r.model,
                svg.with_interval(r.metrics, "pointing_game", "_ci_low", "_ci_high"),
                svg.with_interval(r.metrics, "center_baseline", "_ci_low", "_ci_high"),
                svg.with_interval(r.metrics, "energy_in_box", "_ci_low", "_ci_high"),
                r.metrics.get("box_area_share"),
                r.metrics.get("loc_acc_iou50"),
                r.metrics.get("n_images"),
            ]
            for r in ran
        ]
        out.append(svg.table(
            ["model", "pointing game", "center baseline", "energy in box", "box area share", "IoU \u2265 0.5", "images"], rows
        ))
        out.append(
            '<p class="legend">The worst-localized images of each model (misses first, then the least energy in '
            "the box): Grad-CAM over the image; green: the object box; white: the box of the map's largest region; "
            "red cross: the map's maximum.</p>"
        )
        for r in ran:
            overlays = [a for a in r.artifacts if a.kind == "image/png" and a.name.startswith("worst_localized")]
            if overlays:
                out.append(f'<h4>{svg.esc(r.model)} {svg.outcome_badge(r.outcome)}</h4>')
                out.append(svg.gallery(svg.artifact_html(a) for a in overlays))
    out.append(svg.not_run_note(results))
    return "".join(out)


def _curve(r: Any, name: str) -> dict[str, Any] | None:
    for a in r.artifacts:
        if a.name == name and a.kind == "curve" and isinstance(a.data, dict) and a.data.get("x") and a.data.get("y"):
            return a.data
    return None


def _randomization(results: list[Any], models: list[str], styles: dict[str, dict[str, str]]) -> str:
    if not results:
        return ""
    ran = [r for r in svg.by_model(results, models) if svg.ran(r)]
    out = [f"<h3>Cascading randomization <code>{RANDOMIZATION}</code></h3>"]
    if ran:
        out.append(
            '<p class="legend">The model\'s blocks are re-drawn at random one after another, from the logits '
            "down; after each step the Grad-CAM maps are compared with the original ones. An explanation of the "
            "model must lose its resemblance once the weights are gone: a curve that stays high is explaining the "
            "input, not the model (Adebayo et al. 2018). x: the share of the model's blocks randomized, so "
            "models of different depth line up; hover a point for the block.</p>"
        )
        threshold = None
        for r in ran:
            t = r.thresholds.get("max_rank_corr")
            if t and t.get("op") == "max" and r.role == "target":
                threshold = t.get("value")
        charts = []
        for name, label in (("rank_correlation_by_block", "Spearman rank correlation"), ("ssim_by_block", "SSIM")):
            series = []
            for r in ran:
                data = _curve(r, name)
                if data is None:
                    data = _curve_from_details(r, "rank_corr_by_block" if name.startswith("rank") else "ssim_by_block")
                if data is None:
                    continue
                steps = max(len(data["x"]) - 1, 1)
                names = list(data.get("x_labels") or [])
                series.append({
                    "label": r.model,
                    "x": [i / steps for i in range(len(data["y"]))],
                    "y": data["y"],
                    "names": names,
                    "step": True,  # blocks are randomized whole: a value holds until the next block
                    **styles.get(r.model, {}),
                })
            if series:
                refs = [{"y": threshold, "label": f"threshold {threshold:g}"}] if name.startswith("rank") and threshold is not None else []
                chart = svg.line_chart(
                    series, "share of blocks randomized (logits first)", label,
                    title=f"{label} with the original map", reference_lines=refs,
                )
                charts.append(svg.figure(chart, f"mean {label} of the Grad-CAM maps after each randomization step, one line per model",
                                         css_class="chart-figure"))
        if charts:
            out.append('<div class="charts">' + "".join(charts) + "</div>")
        strips = []
        for r in ran:
            for a in r.artifacts:
                if a.kind == "image/png" and a.name == "maps_by_block":
                    strips.append(svg.figure(svg.image_tag(a.data, a.caption or a.name), f"{r.model}: {a.caption}"))
        if strips:
            out.append(svg.gallery(strips))
    out.append(svg.not_run_note(results))
    return "".join(out)


def _curve_from_details(r: Any, key: str) -> dict[str, Any] | None:
    by_block = r.details.get(key) if isinstance(r.details, dict) else None
    if not isinstance(by_block, dict) or not by_block:
        return None
    names = list(by_block)
    return {"x": list(range(len(names) + 1)), "y": [1.0, *by_block.values()], "x_labels": ["original", *names]}


def _faithfulness(results: list[Any], models: list[str], styles: dict[str, dict[str, str]]) -> str:
    if not results:
        return ""
    ran = [r for r in svg.by_model(results, models) if svg.ran(r)]
    out = [f"<h3>Faithfulness <code>{FAITHFULNESS}</code></h3>"]
    if ran:
        out.append(
            '<p class="legend">Pixels are deleted (or inserted) in the order of the Grad-CAM map, most salient '
            "first, and the probability of the explained class is followed. A faithful map makes the deletion "
            "curve fall faster and the insertion curve rise faster than a random order (dashed). Area under the "
            "curve: deletion lower is better, insertion higher is better.</p>"
        )
        charts = []
        for kind, verb in (("deletion", "deleted"), ("insertion", "inserted")):
            series = []
            for r in ran:
                style = styles.get(r.model, {})
                ordered = _curve(r, f"{kind}_curve")
                if ordered is not None:
                    auc = r.metrics.get(f"{kind}_auc")
                    suffix = f" (AUC {svg.format_number(auc)})" if auc is not None and not math.isnan(auc) else ""
                    series.append({"label": f"{r.model}{suffix}", "x": ordered["x"], "y": ordered["y"], **style})
                random = _curve(r, f"{kind}_random_curve")
                if random is not None:
                    series.append({"label": f"{r.model}, random order", "x": random["x"], "y": random["y"],
                                   "color": style.get("color"), "dash": "4 3", "markers": False, "width": 1.25})
            if series:
                chart = svg.line_chart(series, f"fraction of pixels {verb}", "probability of the explained class",
                                       title=kind.capitalize(), y_range=(0.0, 1.0))
                charts.append(svg.figure(chart, f"{kind} curves, Grad-CAM order (solid) and random order (dashed)",
                                         css_class="chart-figure"))
        if charts:
            out.append('<div class="charts">' + "".join(charts) + "</div>")
    out.append(svg.not_run_note(results))
    return "".join(out)
