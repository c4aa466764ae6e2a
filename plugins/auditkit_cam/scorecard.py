"""The CAM section of the HTML scorecard: the identities that make CAM exact for a global-average-
pooling head, per model, and each model's class activation maps beside its Grad-CAM maps. Built
from the results alone; renders whatever subset of metrics and artifacts exists."""
from __future__ import annotations

from typing import Any

import auditkit
from auditkit.toolkit import svg

CONSISTENCY = "cam.consistency"
GRADCAM_LOCALIZATION = "gradcam.localization"  # read from the results only, for the side-by-side
ORDER = 30
IMAGES_PER_MODEL = 4


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    models, ordered, ran = svg.check_results(results, CONSISTENCY)
    if not ordered:
        return []
    gradcam = {r.model: r for r in results if r.check == GRADCAM_LOCALIZATION}
    out = [
        '<p class="legend">With global average pooling and one linear layer, CAM<sub>c</sub>(i,j) = '
        "&sum;<sub>k</sub> w<sub>kc</sub> f<sub>k</sub>(i,j) and logit<sub>c</sub> = mean<sub>ij</sub> "
        "CAM<sub>c</sub> + b<sub>c</sub> exactly, and Grad-CAM at that layer equals CAM up to a positive "
        "factor (Zhou et al. 2016). The errors below should be at rounding level and the CAM / Grad-CAM "
        "correlation 1; a model without such a head (a fully connected head, as AlexNet's) has no CAM.</p>"
    ]
    if ran:
        rows = []
        for r in ran:
            m = r.metrics
            head = r.details.get("gap_head") if isinstance(r.details, dict) else None
            where = f"{head.get('pool', '?')} \u2192 {head.get('linear', '?')}" if isinstance(head, dict) else ""
            rows.append([
                r.model, where, m.get("logit_max_abs_err"), m.get("gradcam_max_abs_err"), m.get("cam_gradcam_corr"),
                m.get("flip_corr"), m.get("pointing_game"), m.get("energy_in_box"), m.get("n_images"),
            ])
        out.append(svg.table(
            ["model", "GAP head", "logit identity error", "Grad-CAM identity error", "CAM / Grad-CAM corr.",
             "flip corr.", "pointing game", "energy in box", "images"],
            rows,
        ))
        out.append(
            '<h3>CAM beside Grad-CAM</h3><p class="legend">Left: each model\'s class activation maps (the image, '
            "then the map over it; white: the object box). Right: Grad-CAM of the same model from "
            f"<code>{GRADCAM_LOCALIZATION}</code> (its worst-localized images, so the images may differ "
            "unless the check keeps Grad-CAM overlays of the same images).</p>"
        )
        for r in ran:
            cams = [a for a in r.artifacts if a.kind == "image/png" and a.name.startswith("cam_overlay")][:IMAGES_PER_MODEL]
            same_images = [a for a in r.artifacts if a.kind == "image/png" and a.name.startswith("gradcam_overlay")]
            other = gradcam.get(r.model)
            grads = same_images or ([a for a in other.artifacts if a.kind == "image/png"] if other is not None else [])
            grads = grads[:IMAGES_PER_MODEL]
            out.append(f"<h4>{svg.esc(r.model)} {svg.outcome_badge(r.outcome)}</h4>")
            if r.outcome == "failed":
                out.append(f'<p class="message">{svg.esc(r.message)}</p>')
            left = svg.gallery(svg.artifact_html(a) for a in cams) or '<p class="muted">no CAM overlays kept</p>'
            right = svg.gallery(svg.artifact_html(a) for a in grads) or (
                f'<p class="muted">no Grad-CAM overlays for {svg.esc(r.model)} in this audit</p>'
            )
            out.append(f'<div class="grid2"><div><h5>CAM</h5>{left}</div><div><h5>Grad-CAM</h5>{right}</div></div>')
    out.append(svg.not_run_note(ordered))
    return [{
        "id": "cam",
        "title": "CAM consistency for global-average-pooling models",
        "html": "".join(out),
        "order": ORDER,
        "checks": [CONSISTENCY],
    }]
