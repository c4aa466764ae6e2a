"""The example plugin's section of the HTML scorecard: confidence and overconfidence per model."""
from __future__ import annotations

from typing import Any

import auditkit
from auditkit.toolkit import svg


@auditkit.hookimpl
def auditkit_scorecard_sections(results: list[Any], config: Any) -> list[dict[str, Any]]:
    mine = [r for r in results if r.check == "example.confidence" and r.metrics]
    if not mine:
        return []
    rows = [[r.model, r.metrics.get("mean_confidence"), r.metrics.get("overconfidence")] for r in mine]
    html = svg.table(["model", "mean confidence", "overconfidence"], rows,
                     caption="Overconfidence is mean top-1 confidence minus accuracy; near 0 is calibrated.")
    return [{"id": "example", "title": "Confidence (example plugin)", "html": html, "order": 90}]
