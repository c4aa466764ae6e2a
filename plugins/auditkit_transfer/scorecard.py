"""The black-box transfer section of the HTML scorecard: transfer success against epsilon, one line
per model with its 95% band (the strongest attack at each budget, random noise dashed), the
queries each proxy cost and how well it imitates its model. Built from the results alone (the
curves for the charts); renders whatever subset of metrics, curves and artifacts exists."""
from __future__ import annotations

from typing import Any

import auditkit
from auditkit.toolkit import svg

CHECK = "transfer.proxy"
ORDER = 50
NORM_TITLES = {"linf": "L\u221e", "l2": "L2"}


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    models, ordered, ran = svg.check_results(results, CHECK)
    if not ordered:
        return []
    styles = svg.model_styles(models)
    out = [
        '<p class="legend">The model is queried as a black box; a proxy trained on its answers is attacked '
        "white-box and the adversarial examples are replayed on the model (Papernot et al. 2017). Transfer "
        "success: the share of correctly answered images that the replayed examples flip (lower is more robust). "
        "Dashed: random noise of the same size, the control.</p>"
    ]
    if ran:
        out.append(_charts(ran, styles))
        out.append("<h3>Queries spent</h3>")
        out.append(_queries(ran))
        agreement = _agreement_chart(ran, styles)
        if agreement:
            out.append(agreement)
    out.append(svg.not_run_note(ordered))
    return [{
        "id": "transfer",
        "title": "Black-box transfer attacks via a proxy",
        "html": "".join(out),
        "order": ORDER,
        "checks": [CHECK],
    }]


def _points(r: Any, metric: str) -> dict[str, list[tuple[float, float, Any, Any]]]:
    """{norm: [(eps, rate, lo, hi)]} from the result's main curves of ``metric`` (for
    ``transfer_success``, the strongest attack at each budget)."""
    out: dict[str, list[tuple[float, float, Any, Any]]] = {}
    for norm in NORM_TITLES:
        curve = r.curve(metric, norm) if hasattr(r, "curve") else None
        if curve is not None and curve.points:
            out[norm] = sorted((p.x, p.value, p.lo, p.hi) for p in curve.points)
    return out


def _charts(ran: list[Any], styles: dict[str, dict[str, str]]) -> str:
    data = {r.model: (_points(r, "transfer_success"), _points(r, "noise_success")) for r in ran}
    charts = []
    for norm, title in NORM_TITLES.items():
        series = []
        scale = 255.0 if norm == "linf" else 1.0
        for r in ran:
            attack, noise = data[r.model]
            style = styles.get(r.model, {})
            pts = attack.get(norm)
            if pts:
                series.append({"label": r.model, "x": [p[0] * scale for p in pts], "y": [p[1] for p in pts],
                               "lo": [p[2] for p in pts], "hi": [p[3] for p in pts], **style})
            pts = noise.get(norm)
            if pts:
                series.append({"label": f"{r.model}, random noise", "x": [p[0] * scale for p in pts], "y": [p[1] for p in pts],
                               "color": style.get("color"), "dash": "4 3", "markers": False, "width": 1.25})
        if series:
            x_label = "epsilon (L\u221e, in 1/255 of the pixel range)" if norm == "linf" else "epsilon (L2, pixel range [0,1])"
            ticks = sorted({round(v, 6) for s in series for v in s["x"] if v is not None})
            chart = svg.line_chart(series, x_label, "transfer success", title=f"Transfer success, {title}",
                                   y_range=(0.0, 1.0), x_ticks=ticks if len(ticks) <= 8 else None)
            charts.append(svg.figure(chart, f"share of correctly answered images flipped by examples crafted on the proxy, "
                                     f"strongest attack at each {title} budget; bands: 95% Wilson intervals",
                                     css_class="chart-figure"))
    return '<div class="charts">' + "".join(charts) + "</div>" if charts else ""


def _queries(ran: list[Any]) -> str:
    rows = []
    for r in ran:
        details = r.details if isinstance(r.details, dict) else {}
        training = details.get("training") if isinstance(details.get("training"), dict) else {}
        gate = details.get("gate") if isinstance(details.get("gate"), dict) else {}
        gate_text = ""
        if gate:
            norm = gate.get("norm")
            gate_text = f"{gate.get('attack') or '?'} {norm or ''} {svg.format_budget(norm, gate.get('epsilon'))}"
            gate_text = " ".join(gate_text.split())
        rows.append([
            r.model,
            r.metrics.get("queries"),
            r.metrics.get("attack_queries"),
            svg.with_interval(r.metrics, "proxy_agreement", "_lo", "_hi"),
            svg.with_interval(r.metrics, "transfer_success", "_lo", "_hi"),
            gate_text,
            f"{training.get('proxy', '')} on {training.get('trained_on', '')}".strip() if training else "",
            _epochs(training.get("epochs")),
        ])
    return svg.table(
        ["model", "training queries", "attack queries", "proxy agreement", "transfer success (gate)", "gate attack",
         "proxy", "proxy training"],
        rows,
    )


def _epochs(epochs: Any) -> str:
    """The proxy's training as read: ``3 epochs``; per augmentation round, ``[4, 0]`` reads
    ``4 epochs in 2 rounds (4, 0)``."""
    if epochs is None or epochs == []:
        return ""
    if isinstance(epochs, (list, tuple)):
        counts = [e for e in epochs if isinstance(e, (int, float)) and not isinstance(e, bool)]
        if len(counts) != len(epochs):
            return ", ".join(str(e) for e in epochs)
        if len(counts) == 1:
            return svg.plural(counts[0], "epoch")
        per_round = ", ".join(svg.format_number(e) for e in counts)
        return f"{svg.plural(sum(counts), 'epoch')} in {len(counts)} rounds ({per_round})"
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool):
        return svg.plural(epochs, "epoch")
    return str(epochs)


def _agreement_chart(ran: list[Any], styles: dict[str, dict[str, str]]) -> str:
    series = []
    for r in ran:
        for a in r.artifacts:
            if a.kind == "curve" and a.name == "proxy_validation_agreement" and isinstance(a.data, dict) and a.data.get("x"):
                series.append({"label": r.model, "x": a.data["x"], "y": a.data.get("y"), **styles.get(r.model, {})})
    if not series:
        return ""
    chart = svg.line_chart(series, "training epoch", "agreement with the model", title="Proxy validation agreement",
                           y_range=(0.0, 1.0))
    return svg.figure(chart, "agreement of each proxy with its model on held-out seed images after each epoch",
                      css_class="chart-figure")
