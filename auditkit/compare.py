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
    """An auditkit JSON report read from ``path`` and validated against the shipped JSON
    Schema (``auditkit/schema/report.schema.json``) before anything uses it: a report is
    data from elsewhere (another CI job, a download) and may have been edited.

    :param what: the option or command that named the file, for the messages.
    :raises UsageError: no such file, not JSON, not an auditkit report, or a field that does
        not match the schema (the message names the field, e.g. ``results[0].metrics.top1``).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file; expected an earlier auditkit JSON report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: not JSON ({exc}); expected an earlier auditkit JSON report") from exc
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith("auditkit.report/"):
        raise UsageError(f"{what} {path}: not an auditkit report (no 'schema': 'auditkit.report/1')")
    problem = schema_problem(report)
    if problem:
        raise UsageError(f"{what} {path}: not a valid auditkit report: {problem}")
    return report


def schema_problem(report: Any) -> str | None:
    """The most relevant way ``report`` breaks the report schema, in one line naming the
    field (``summary.exit_code: 'one' is not of type 'integer'``), or None when it is valid."""
    import jsonschema

    from auditkit.reporters.json_report import load_schema

    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))
    if error is None:
        return None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{field or 'the top level'}: {message}"


def comparable(previous: dict[str, Any], config: Any, data: Any, target: Any, path: str) -> list[str]:
    """Whether the audit about to run can be compared with ``previous`` (``--compare``).

    Metrics measured on other images are not comparable: a different number of classes,
    other class names or another count of evaluation images is a ``UsageError``, raised
    before anything trains. A different model spec is the point of most comparisons, and a
    different data spec may be the same data at another path: those are compared, and the
    returned notes (for the report's warnings) say so and why.
    """
    before = previous.get("data")
    if not isinstance(before, dict):
        raise UsageError(f"--compare {path}: the report has no 'data' section, so it cannot show that it audited the "
                         "same images; expected a report written by auditkit run")
    n_eval = len(data.eval) if config.max_images is None else min(config.max_images, len(data.eval))
    now = {"num_classes": data.num_classes, "n_eval": n_eval, "class_names": list(data.class_names or [])}
    differences = []
    if before.get("num_classes") != now["num_classes"]:
        differences.append(f"{before.get('num_classes')} classes then, {now['num_classes']} now")
    elif before.get("class_names") and now["class_names"] and list(before["class_names"]) != now["class_names"]:
        differences.append(f"class names {_few(before['class_names'])} then, {_few(now['class_names'])} now")
    if before.get("n_eval") != n_eval:
        differences.append(f"{before.get('n_eval')} evaluation images then, {n_eval} now")
    if differences:
        raise UsageError(
            f"--compare {path}: that audit ran on other data ({'; '.join(differences)}; data {before.get('spec')!r} "
            f"then, {data.spec!r} now); a regression check needs the same images"
        )
    notes = []
    if before.get("spec") != data.spec:
        notes.append(
            f"--compare {path}: the data spec differs ({before.get('spec')!r} then, {data.spec!r} now); compared "
            f"because the classes and the {n_eval} evaluation images' count match"
        )
    then_size = (before.get("preprocessing") or {}).get("output_size")
    now_size = (getattr(data, "preprocessing", None) or {}).get("output_size")
    if then_size and now_size and list(then_size) != list(now_size):
        notes.append(f"--compare {path}: the images were audited at {then_size[0]}x{then_size[1]} then and at "
                     f"{now_size[0]}x{now_size[1]} now; metrics may differ for that reason alone")
    then_model = next((m.get("spec") for m in previous.get("models", []) if m.get("role") == "target"), None)
    if then_model is not None and then_model != target.spec:
        notes.append(f"--compare {path}: comparing model {target.spec!r} with the earlier report's {then_model!r}")
    if (previous.get("summary") or {}).get("interrupted"):
        notes.append(f"--compare {path}: that audit was interrupted; checks it did not finish are not compared")
    return notes


def _few(names: list[Any], k: int = 4) -> str:
    shown = ", ".join(str(n) for n in names[:k])
    return f"[{shown}{', ...' if len(names) > k else ''}]"


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
