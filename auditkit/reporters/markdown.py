"""``--md PATH``: a short Markdown summary of the audit, sized for a pull-request comment."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from auditkit.check import CheckResult, Outcome
from auditkit.markers import hookimpl
from auditkit.reporters.comparison import (
    describe_threshold,
    threshold_violated,
    thresholds_by_metric,
)
from auditkit.reporters.terminal import format_metric

_ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "➖"}
INSUFFICIENT = "insufficient evidence"
_INSUFFICIENT_ICON = "❔"
# Suffixes of a metric's confidence bounds, as the checks name them (``pointing_game_ci_low``,
# ``transfer_success_lo@linf_8/255``).
_BOUNDS = (("_ci_low", "_ci_high"), ("_lo", "_hi"))


def _cell(value: Any) -> str:
    return "–" if value is None else format_metric("", value)[1:]


def _number(value: Any) -> str:
    return "–" if value is None else format_metric("", float(value))[1:]


def insufficient(result: CheckResult) -> bool:
    """Whether ``result`` was skipped for want of evidence (too few samples for the rule to
    mean anything): neither a pass nor a fail, and worth more attention than other skips."""
    return result.outcome is Outcome.SKIPPED and result.message.lower().startswith(INSUFFICIENT)


def _marks(result: CheckResult) -> dict[str, str]:
    """A mark per metric of ``result`` that a rule decided on: ❌ for a threshold it broke or
    for a metric without a threshold that the check's own failure message states
    (``metric=value``), ✅ for a threshold that held. Reference values get no mark, and nothing
    is marked on a result without a verdict (skipped, xfailed, error)."""
    if result.outcome not in (Outcome.PASSED, Outcome.FAILED):
        return {}
    marks: dict[str, str] = {}
    gated = thresholds_by_metric(result)
    for metric, entry in gated.items():
        if metric not in result.metrics or entry.get("refused"):
            continue
        marks[metric] = "❌" if threshold_violated(entry, result.metrics[metric]) else "✅"
    if result.outcome is Outcome.FAILED:
        for metric in result.metrics:
            if metric not in gated and re.search(rf"(?<![\w.@/]){re.escape(metric)}=", result.message):
                marks[metric] = "❌"
    return marks


def _bounds(metrics: Any, metric: str) -> tuple[Any, Any] | None:
    """The confidence bounds the result reports for ``metric``, if any."""
    base, at, label = metric.partition("@")
    for low, high in _BOUNDS:
        lo, hi = metrics.get(f"{base}{low}{at}{label}"), metrics.get(f"{base}{high}{at}{label}")
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _estimate_of(metric: str) -> str | None:
    """``energy_gain`` for the bound ``energy_gain_ci_low`` (a rule on a bound is decided by the
    estimate's interval); None for a metric that is not a bound."""
    base, at, label = metric.partition("@")
    for pair in _BOUNDS:
        for suffix in pair:
            if base.endswith(suffix):
                return f"{base[: -len(suffix)]}{at}{label}"
    return None


def _with_interval(metrics: Any, metric: str) -> str:
    text = f"`{metric}` = {_number(metrics[metric])}"
    bounds = _bounds(metrics, metric)
    if bounds is not None:
        text += f" [{_number(bounds[0])}, {_number(bounds[1])}]"
    return text


def rule_numbers(result: CheckResult) -> list[str]:
    """The numbers behind ``result``'s verdict, one line each: every threshold with the value it
    was held against (marked), then the deciding statistics the check reports: its p-values and
    the confidence interval of each failing metric."""
    lines, held = [], []
    marks = _marks(result)
    metrics = result.metrics
    for metric, entry in thresholds_by_metric(result).items():
        rule = describe_threshold(entry)
        if entry.get("refused"):
            lines.append(f"`{metric}` {rule}: not evaluated ({entry.get('baseline')} is a weak baseline)")
        elif metric not in metrics:
            lines.append(f"❌ `{metric}` {rule}: not reported")
        elif marks.get(metric) == "✅":
            held.append(f"`{metric}` = {_number(metrics[metric])} {rule}")
        else:
            reference = entry.get("reference")
            against = f" (= {_number(float(entry['value']) * float(reference))})" if entry.get("baseline") and reference is not None else ""
            lines.append(f"❌ `{metric}` = {_number(metrics[metric])}, rule {rule}{against}")
    if held:
        lines.append("✅ held: " + "; ".join(held))
    deciding = [f"`{metric}` = {_number(value)}" for metric, value in metrics.items()
                if "p_value" in metric and metric not in marks]
    listed: set[str] = set()
    for metric, mark in marks.items():
        estimate = _estimate_of(metric)
        shown = estimate if estimate in metrics else metric
        if mark == "❌" and shown not in listed and _bounds(metrics, shown) is not None:
            deciding.append(_with_interval(metrics, shown))
            listed.add(shown)
    return lines + deciding


def _rows(results: Iterable[CheckResult]) -> list[tuple[str, str, CheckResult | None, dict[str, Any]]]:
    """(check, metric, the target's result, values by model) per table row: each check's
    headline metrics, then those a rule of the target's result decided on."""
    by_check: dict[str, dict[str, CheckResult]] = {}
    for r in results:
        by_check.setdefault(r.check, {})[r.model] = r
    rows = []
    for check, per_model in by_check.items():
        target = next((r for r in per_model.values() if r.role == "target"), None)
        names: list[str] = []
        for r in per_model.values():
            names += [m for m in r.headline_metrics() if m not in names]
        if target is not None:
            names += [m for m in _marks(target) if m not in names]
        for metric in names:
            values = {model: r.metrics.get(metric) if r.is_verdict else None for model, r in per_model.items()}
            rows.append((check, metric, target, values))
    return rows


def _check_cell(check: str, target: CheckResult | None, marked: bool) -> str:
    if target is None:
        return f"`{check}`"
    if insufficient(target):
        return f"{_INSUFFICIENT_ICON} `{check}`"
    if target.outcome is Outcome.FAILED and marked:
        return f"`{check}`"  # its failing metric carries the cross
    return f"{_ICONS[target.outcome.value]} `{check}`"


def build_markdown(session: Any) -> str:
    counts = session.counts()
    verdict = "❌ **audit failed**" if session.exitstatus == 1 else (
        "✅ **audit passed**" if session.exitstatus == 0 else f"⚠️ **audit ended with exit code {session.exitstatus}**")
    parts = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    lines = [f"### auditkit: {session.target.spec} on {session.data.spec}", "", f"{verdict}: {parts} in {session.duration_s:.1f}s", ""]
    regressions = getattr(session, "regressions", [])
    problems = [r for r in session.results if r.role == "target" and r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    if problems or regressions:
        lines.append("**What failed**")
        lines.append("")
        for r in problems:
            lines.append(f"- {_ICONS[r.outcome.value]} `{r.check}`: {r.message.splitlines()[0] if r.message else r.outcome.value}")
            if r.outcome is Outcome.FAILED:
                lines += [f"  - {line}" for line in rule_numbers(r)]
        for reg in regressions:
            lines.append(f"- 📉 regression: {reg.describe()}")
        lines.append("")
    names = [session.target.name] + [b.name for b in session.baselines]
    weak = session.weak_baselines()
    weak_names = {b.name for b in weak}
    lines.append("| check | metric | rule | " + " | ".join(f"{n} ⚠️ weak" if n in weak_names else n for n in names) + " |")
    lines.append("|---|---|---|" + "---|" * len(names))
    rows = _rows(session.results)
    first: set[str] = set()
    for check, metric, target, values in rows:
        marks = _marks(target) if target is not None else {}
        if check in first:
            check_cell = ""
        else:
            first.add(check)
            check_cell = _check_cell(check, target, "❌" in marks.values())
        mark = marks.get(metric)
        rule = thresholds_by_metric(target).get(metric) if target is not None else None
        rule_text = describe_threshold(rule) if rule else ""
        metric_cell = f"{mark} {metric}" if mark else metric
        lines.append(f"| {check_cell} | {metric_cell} | {rule_text} | " + " | ".join(_cell(values.get(n)) for n in names) + " |")
    if weak:
        lines += ["", "⚠️ Weak baselines (validation accuracy not above chance, or one class predicted for nearly "
                  "every image; comparisons against them say little, and no threshold is evaluated against them): "
                  + ", ".join(f"{b.name} ({_weak_reason(b.info['quality'])})" for b in weak)]
    skipped = [r for r in session.results if r.role == "target" and r.outcome is Outcome.SKIPPED]
    unsure = [r for r in skipped if insufficient(r)]
    if unsure:
        lines += ["", f"{_INSUFFICIENT_ICON} **Insufficient evidence** (no verdict: too few samples for the rule to decide)", ""]
        lines += [f"- `{r.check}`: {r.message}" for r in unsure]
    others = [r for r in skipped if not insufficient(r)]
    if others:
        lines += ["", "<details><summary>skipped</summary>", ""]
        lines += [f"- `{r.check}`: {r.message}" for r in others]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _weak_reason(quality: dict[str, Any]) -> str:
    text = f"validation accuracy {quality['val_acc']:.2f}"
    if quality.get("constant"):
        text += f", {quality['majority_fraction']:.0%} one class"
    return text


@hookimpl
def auditkit_session_finish(session: Any, exitstatus: int) -> None:
    path = getattr(session.config, "md", None)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(build_markdown(session), encoding="utf-8")
        session.written.append(("Markdown summary", str(path)))
