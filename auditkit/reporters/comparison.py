"""The comparison model behind the scorecard's table and the Markdown summary: each check's
results side by side, which value is best (by the directions the checks declare), which breaks
its threshold. Data only; the templates and writers format it."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from auditkit.check import CheckResult, Threshold
from auditkit.reporters import svg


def declared_direction(results: Sequence[CheckResult], metric: str) -> str | None:
    """``"higher"`` or ``"lower"`` when the check that reported ``metric`` declares which is
    better (``CheckResult.directions``, the first result that has it); None otherwise."""
    for r in results:
        direction = (r.directions or {}).get(metric)
        if direction in ("higher", "lower"):
            return direction
    return None


def describe_threshold(threshold: Mapping[str, Any] | None) -> str:
    """``>= 0.5``, ``<= 0.1``, ``>= 0.9 x resnet18``; empty when there is none."""
    if not threshold:
        return ""
    op = threshold.get("op")
    sym = "\u2265" if op == "min" else "\u2264" if op == "max" else str(op)
    value = _number(threshold.get("value"))
    text = f"{sym} {value:g}" if value is not None else f"{sym} {threshold.get('value')}"
    if threshold.get("baseline"):
        text += f" \u00d7 {threshold['baseline']}"
    return text


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def slug(text: str) -> str:
    """``text`` as an HTML id: lower case, anything but letters, digits, ``-`` and ``_`` as ``-``."""
    out = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text).lower())
    return out.strip("-") or "section"


def thresholds_by_metric(result: CheckResult) -> dict[str, dict[str, Any]]:
    """A result's thresholds by metric name. The runner files a threshold relative to a
    baseline under ``"<metric>@<baseline>"``, with the baseline's value as ``reference``."""
    out: dict[str, dict[str, Any]] = {}
    for key, entry in result.thresholds.items():
        entry = dict(entry)
        baseline = entry.get("baseline")
        metric = key[: -len(baseline) - 1] if baseline and key.endswith(f"@{baseline}") else key
        out.setdefault(metric, entry)
    return out


def comparison_groups(
    results: Sequence[CheckResult], models: Sequence[str], weak: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The comparison table as data for the template: one group per check (in run order), an
    outcome row, then one row per headline metric, plus one per gated metric that some model
    breaks (it says why the check failed; otherwise the outcome row says enough).

    A cell is marked ``best`` when the check declares the metric's direction (the results'
    ``directions``, from ``Check.directions``; a metric it does not declare is never marked),
    at least two models that
    are not ``weak`` (baselines that did not learn the task: a constant predictor "wins" every
    robustness metric, since no attack changes a constant output) have a value, the values
    differ and this one is the best (ties are all marked); ``violates`` when it breaks the
    threshold of its own result; ``weak-model`` on every cell of a weak baseline."""
    weak = set(weak)
    by_check: dict[str, dict[str, CheckResult]] = {}
    for r in results:
        by_check.setdefault(r.check, {})[r.model] = r
    groups = []
    for check, per_model in by_check.items():
        # the target's result first: its headline order and thresholds lead
        ordered = sorted(per_model.values(), key=lambda r: (r.role != "target", models.index(r.model) if r.model in models else 0))
        gates = {r.model: thresholds_by_metric(r) for r in ordered}
        names: list[str] = []
        for r in ordered:
            names += [m for m in r.headline_metrics() if m not in names]
        for r in ordered:
            for metric, entry in gates[r.model].items():
                if metric not in names and metric in r.metrics and threshold_violated(entry, r.metrics[metric]):
                    names.append(metric)
        rows = []
        for metric in names:
            threshold = next((gates[r.model][metric] for r in ordered if metric in gates[r.model]), None)
            direction = declared_direction(ordered, metric)
            present = {
                m: v for m in models
                if m in per_model and m not in weak and per_model[m].is_verdict
                and (v := _number(per_model[m].metrics.get(metric))) is not None
            }
            best: set[str] = set()
            if direction is not None and len(present) >= 2 and len(set(present.values())) > 1:
                top = max(present.values()) if direction == "higher" else min(present.values())
                best = {m for m, v in present.items() if v == top}
            cells = []
            for model in models:
                r = per_model.get(model)
                raw = None if r is None or not r.is_verdict else r.metrics.get(metric)
                own = None if r is None else gates[model].get(metric)
                violates = own is not None and raw is not None and threshold_violated(own, raw)
                notes = (["best of the models"] if model in best else []) + (
                    [f"violates the threshold {describe_threshold(own)}"] if violates else []) + (
                    ["weak baseline: not ranked"] if model in weak else [])
                flags = (["best"] if model in best else []) + (["violates"] if violates else []) + (
                    ["weak-model"] if model in weak else [])
                cells.append({
                    "model": model,
                    "text": "\u2013" if raw is None else svg.format_number(raw, 3),
                    "classes": " ".join(["value", *flags]),
                    "title": "; ".join(notes) or (f"{metric} = {raw!r}" if raw is not None else "no value"),
                })
            rows.append({
                "metric": metric,
                "direction": direction or "",
                "threshold": describe_threshold(threshold),
                "cells": cells,
            })
        outcomes = [
            {"model": m, "outcome": None, "title": "not run on this model"} if m not in per_model
            else {"model": m, "outcome": per_model[m].outcome.value, "title": per_model[m].message or per_model[m].outcome.value}
            for m in models
        ]
        groups.append({"check": check, "anchor": slug("check-" + check), "outcomes": outcomes, "rows": rows})
    return groups


def threshold_violated(threshold: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` breaks ``threshold`` (a result's entry; a relative threshold carries
    the baseline's value as ``reference``, and without it nothing can be said)."""
    try:
        t = Threshold("", str(threshold["op"]), float(threshold["value"]), threshold.get("baseline"))
        reference = None
        if t.baseline:
            if threshold.get("reference") is None:
                return False
            reference = float(threshold["reference"])
        return t.violated_by(float(value), reference)
    except (KeyError, TypeError, ValueError):
        return False
