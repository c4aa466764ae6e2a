"""``--compare PREVIOUS.json``: find the target's headline metrics that got worse than in an
earlier report by more than a tolerance, using each metric's known direction."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.errors import UsageError


@dataclass(frozen=True)
class Regression:
    check: str
    metric: str
    previous: float
    current: float
    direction: str

    def describe(self) -> str:
        word = "fell" if self.direction == "higher" else "rose"
        return (
            f"{self.check} {self.metric} {word} from {self.previous:.4g} to {self.current:.4g} "
            f"({self.direction} is better)"
        )

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "metric": self.metric, "previous": self.previous,
                "current": self.current, "direction": self.direction}


def load_report(path: str | Path, what: str = "--compare") -> dict[str, Any]:
    """An auditkit JSON report read from ``path``; ``what`` names the option in errors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file; expected an earlier auditkit JSON report")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path}: not JSON ({exc}); expected an earlier auditkit JSON report") from exc
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith("auditkit.report/"):
        raise UsageError(f"{what} {path}: not an auditkit report (no 'schema': 'auditkit.report/1')")
    return report


def find_regressions(
    current: dict[str, Any], previous: dict[str, Any], *, abs_tol: float = 0.02, rel_tol: float = 0.05
) -> list[Regression]:
    """Headline metrics of the target that are worse now than in ``previous`` by more than
    max(abs_tol, rel_tol * |previous|). Metrics without a known direction, or missing from
    either report, are not compared."""
    before = _target_results(previous)
    regressions = []
    for key, result in _target_results(current).items():
        old = before.get(key)
        if old is None:
            continue
        directions = {**old.get("directions", {}), **result.get("directions", {})}
        for metric in result.get("headline", []):
            direction = directions.get(metric)
            prev, now = old.get("metrics", {}).get(metric), result.get("metrics", {}).get(metric)
            if direction not in ("higher", "lower") or prev is None or now is None:
                continue
            if math.isnan(prev) or math.isnan(now):
                continue
            worse_by = (prev - now) if direction == "higher" else (now - prev)
            if worse_by > max(abs_tol, rel_tol * abs(prev)):
                regressions.append(Regression(result["check"], metric, float(prev), float(now), direction))
    return regressions


def _target_results(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["check"], r["model"]): r
        for r in report.get("results", [])
        if r.get("role", "target") == "target" and r.get("outcome") in ("passed", "failed")
    }
