"""The feature-inversion section of the HTML scorecard: fidelity (SSIM, PSNR) of the
reconstructions against the depth of the inverted layer, one line per model, each model's
reconstructions per layer, and each layer's PSNR drop below the calibration anchor. Built from
the results alone; renders whatever subset of metrics and artifacts exists."""
from __future__ import annotations

from typing import Any

import auditkit
from auditkit.toolkit import svg

CHECK = "inversion.fidelity"
ORDER = 60


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    models, ordered, ran = svg.check_results(results, CHECK)
    if not ordered:
        return []
    styles = svg.model_styles(models)
    out = [
        '<p class="legend">Each layer\'s output is inverted back to an image (Mahendran &amp; Vedaldi 2015): '
        "how much of the input survives at each depth? Depth is the fraction of the network's layers run, "
        "so models of different size line up. The first point is the anchor, the first convolution's output, "
        "where the input is still all there: what the reconstruction reaches there is the optimizer's limit, "
        "and each deeper layer's drop below it is what that layer loses. High fidelity deep in the network "
        "means features released there (an embedding API, split inference) give the input away.</p>"
    ]
    if ran:
        layers = {r.model: _layers(r) for r in ran}
        leak = next((_leak_ssim(r) for r in ran if _leak_ssim(r) is not None), None)
        charts = []
        for key, label, refs in (
            ("ssim", "SSIM", [{"y": leak, "label": f"faithful from SSIM {leak:g}"}] if leak is not None else []),
            ("psnr", "PSNR (dB)", []),
        ):
            series = []
            for r in ran:
                pts = [p for p in layers[r.model] if p.get(key) is not None and p.get("depth") is not None]
                if not pts:
                    continue
                series.append({"label": r.model, "x": [p["depth"] for p in pts], "y": [p[key] for p in pts],
                               "names": [p.get("name", "") for p in pts], **styles.get(r.model, {})})
            if series:
                chart = svg.line_chart(series, "depth (fraction of layers run)", label, title=f"{label} against depth",
                                       reference_lines=refs, y_range=(0.0, 1.0) if key == "ssim" else None)
                charts.append(svg.figure(chart, f"mean {label} of the reconstructions from each inverted layer, one line "
                                         "per model; hover a point for the layer", css_class="chart-figure"))
        if charts:
            out.append("<h3>Fidelity against depth</h3>")
            out.append('<div class="charts">' + "".join(charts) + "</div>")
        grids = []
        for r in ran:
            for a in r.artifacts:
                if a.kind == "image/png" and a.name.startswith("reconstruction"):
                    grids.append(f"<h4>{svg.esc(r.model)} {svg.outcome_badge(r.outcome)}</h4>"
                                 + svg.figure(svg.image_tag(a.data, a.caption or a.name), a.caption))
        if grids:
            out.append("<h3>Reconstructions per layer</h3>" + "".join(grids))
        tables = []
        for r in ran:
            if layers[r.model]:
                tables.append(svg.table(
                    ["layer", "depth", "feature rel. error", "PSNR (dB)", "PSNR drop below the anchor (dB)", "SSIM"],
                    [[f"{p.get('name', '')}" + (" (anchor)" if p.get("anchor") is True else ""), p.get("depth"),
                      p.get("feature_rel_err"), p.get("psnr"), p.get("psnr_drop"), p.get("ssim")]
                     for p in layers[r.model]],
                    caption=r.model,
                ))
        if tables:
            out.append("<details><summary>Per-layer numbers</summary>" + "".join(tables) + "</details>")
    out.append(svg.not_run_note(ordered))
    return [{
        "id": "inversion",
        "title": "Feature inversion: fidelity per layer",
        "html": "".join(out),
        "order": ORDER,
        "checks": [CHECK],
    }]


def _layers(r: Any) -> list[dict[str, Any]]:
    """Per-layer numbers in call order: from ``details["layers"]``, else from the
    ``ssim_vs_depth``/``psnr_vs_depth`` curves, else from the ``<layer>.<metric>`` metrics
    (no depth then: the tables still show them, the charts cannot)."""
    details = r.details if isinstance(r.details, dict) else {}
    listed = details.get("layers")
    if isinstance(listed, list) and listed and all(isinstance(p, dict) for p in listed):
        return [dict(p) for p in listed]
    curves = {a.name: a.data for a in r.artifacts if a.kind == "curve" and isinstance(a.data, dict)}
    ssim, psnr = curves.get("ssim_vs_depth"), curves.get("psnr_vs_depth")
    base = ssim or psnr
    if base and base.get("x"):
        names = list(base.get("names") or [])
        out = []
        for i, depth in enumerate(base["x"]):
            name = names[i] if i < len(names) else f"layer {i + 1}"
            out.append({
                "name": name,
                "depth": depth,
                "ssim": _at(ssim, i),
                "psnr": _at(psnr, i),
                "feature_rel_err": r.metrics.get(f"{name}.feature_rel_err"),
                "psnr_drop": r.metrics.get(f"{name}.psnr_drop"),
            })
        return out
    layer_names: list[str] = []
    for metric in r.metrics:
        if "." in metric:
            layer = metric.rsplit(".", 1)[0]
            if layer not in layer_names:
                layer_names.append(layer)
    return [{"name": n, "depth": None, "ssim": r.metrics.get(f"{n}.ssim"), "psnr": r.metrics.get(f"{n}.psnr"),
             "feature_rel_err": r.metrics.get(f"{n}.feature_rel_err"), "psnr_drop": r.metrics.get(f"{n}.psnr_drop")}
            for n in layer_names]


def _at(curve: dict[str, Any] | None, i: int) -> Any:
    ys = (curve or {}).get("y") or []
    return ys[i] if i < len(ys) else None


def _leak_ssim(r: Any) -> float | None:
    details = r.details if isinstance(r.details, dict) else {}
    settings = details.get("settings")
    value = settings.get("leak_ssim") if isinstance(settings, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
