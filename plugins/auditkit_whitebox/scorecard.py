"""The white-box attacks section of the HTML scorecard: robust accuracy against epsilon, one line
per model with its 95% band, per attack and norm; adversarial examples with the perturbation
amplified; the gradient-masking flags of every model. Built from the results alone; renders
whatever subset of metrics and artifacts exists."""
from __future__ import annotations

import math
from typing import Any

import auditkit
from auditkit.toolkit import svg

ATTACKS = {"whitebox.fgsm": "FGSM", "whitebox.pgd": "PGD"}
MASKING = "whitebox.masking"
ORDER = 40
EXAMPLES_PER_MODEL = 3
NORM_TITLES = {"linf": "L\u221e", "l2": "L2"}


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    mine = [r for r in results if r.check in ATTACKS or r.check == MASKING]
    if not mine:
        return []
    models = svg.model_order(results)
    styles = svg.model_styles(models)
    parts = [_attack(check, [r for r in mine if r.check == check], models, styles) for check in ATTACKS]
    parts.append(_masking([r for r in mine if r.check == MASKING], models))
    return [{
        "id": "whitebox",
        "title": "White-box attacks: robust accuracy against epsilon",
        "html": "".join(p for p in parts if p),
        "order": ORDER,
        "checks": sorted({r.check for r in mine}),
    }]


def _curves(r: Any) -> dict[str, dict[str, list]]:
    """Robust accuracy per norm, {norm: {"x", "y", "lo", "hi"}}, from the result's curves."""
    curves: dict[str, dict[str, list]] = {}
    for norm in NORM_TITLES:
        curve = r.curve("robust_acc", norm) if hasattr(r, "curve") else None
        if curve is not None and curve.points:
            points = sorted(curve.points, key=lambda p: p.x)
            curves[norm] = {
                "x": [p.x for p in points],
                "y": [None if math.isnan(p.value) else p.value for p in points],
                "lo": [p.lo for p in points],
                "hi": [p.hi for p in points],
            }
    return curves


def _attack(check: str, results: list[Any], models: list[str], styles: dict[str, dict[str, str]]) -> str:
    if not results:
        return ""
    name = ATTACKS[check]
    ordered = svg.by_model(results, models)
    ran = [r for r in ordered if svg.ran(r)]
    out = [f"<h3>{name} <code>{svg.esc(check)}</code></h3>"]
    per_model = {r.model: _curves(r) for r in ran}
    norms = [n for n in NORM_TITLES if any(n in c for c in per_model.values())]
    charts = []
    for norm in norms:
        series = []
        for r in ran:
            curve = per_model[r.model].get(norm)
            if not curve:
                continue
            scale = 255.0 if norm == "linf" else 1.0
            x = [None if v is None else float(v) * scale for v in curve["x"]]
            y, lo, hi = list(curve["y"]), list(curve["lo"]), list(curve["hi"])
            clean = r.metrics.get("clean_acc")
            if clean is not None and not math.isnan(clean):  # epsilon 0 is the clean accuracy
                x, y, lo, hi = [0.0, *x], [clean, *y], [None, *lo], [None, *hi]
            series.append({"label": r.model, "x": x, "y": y, "lo": lo, "hi": hi, **styles.get(r.model, {})})
        if series:
            x_label = "epsilon (L\u221e, in 1/255 of the pixel range)" if norm == "linf" else "epsilon (L2, pixel range [0,1])"
            ticks = sorted({round(v, 6) for s in series for v in s["x"] if v is not None})
            chart = svg.line_chart(series, x_label, "robust accuracy", title=f"{name}, {NORM_TITLES[norm]}",
                                   y_range=(0.0, 1.0), x_ticks=ticks if len(ticks) <= 8 else None)
            charts.append(svg.figure(chart, f"{name} robust accuracy against the {NORM_TITLES[norm]} budget, one line per "
                                     "model; bands: 95% Wilson intervals; epsilon 0: clean accuracy", css_class="chart-figure"))
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    examples = []
    for r in ran:
        shown = [a for a in r.artifacts if a.kind == "image/png" and a.name.startswith("example")][:EXAMPLES_PER_MODEL]
        examples += [svg.figure(svg.image_tag(a.data, a.caption or a.name), f"{r.model}: {a.caption}") for a in shown]
    if examples:
        out.append(
            '<h4>Adversarial examples</h4><p class="legend">Each strip: the original, the adversarial image at the '
            "smallest budget that fooled the model, and the perturbation amplified (grey is no change).</p>"
        )
        out.append(svg.gallery(examples))
    out.append(svg.not_run_note(ordered))
    return "".join(out)


def _masking(results: list[Any], models: list[str]) -> str:
    if not results:
        return ""
    ordered = svg.by_model(results, models)
    ran = [r for r in ordered if svg.ran(r)]
    out = [f"<h3>Gradient masking <code>{MASKING}</code></h3>"]
    if ran:
        out.append(
            '<p class="legend">Signs that the attacks above underestimate the attacker (Carlini et al. 2019; '
            "Croce &amp; Hein 2020). A raised flag means the robust accuracy curves of that model should not be "
            "trusted as they are.</p>"
        )
        flags: dict[str, str] = {}
        evidence: dict[tuple[str, str], str] = {}
        raised: dict[tuple[str, str], bool] = {}
        for r in ran:
            detail = r.details.get("flags") if isinstance(r.details, dict) else None
            if isinstance(detail, dict):
                for flag, info in detail.items():
                    info = info if isinstance(info, dict) else {}
                    flags.setdefault(str(flag), str(info.get("meaning", "")))
                    raised[(flag, r.model)] = bool(info.get("raised", r.metrics.get(flag, 0)))
                    evidence[(flag, r.model)] = str(info.get("evidence", ""))
        if flags:
            head = "".join(f'<th scope="col">{svg.esc(r.model)}</th>' for r in ran)
            rows = []
            for flag, meaning in flags.items():
                cells = []
                for r in ran:
                    if (flag, r.model) not in raised:
                        cells.append('<td class="muted">\u2013</td>')
                        continue
                    word = "raised" if raised[(flag, r.model)] else "ok"
                    cls = "failed" if word == "raised" else "passed"
                    cells.append(f'<td title="{svg.esc(evidence[(flag, r.model)])}"><span class="badge {cls}">{word}</span> '
                                 f'<span class="message">{svg.esc(evidence[(flag, r.model)])}</span></td>')
                rows.append(f"<tr><td><code>{svg.esc(flag)}</code><br><span class=\"muted\">{svg.esc(meaning)}</span></td>{''.join(cells)}</tr>")
            out.append(f'<div class="table-wrap"><table><thead><tr><th scope="col">flag</th>{head}</tr></thead>'
                       f"<tbody>{''.join(rows)}</tbody></table></div>")
        else:
            out.append(svg.table(["model", "flags raised"], [[r.model, r.metrics.get("flags")] for r in ran]))
    out.append(svg.not_run_note(ordered))
    return "".join(out)
