"""The built-in way a check runs and becomes a result: call ``run``, then choose the outcome
from the exception, the check's own failures and the thresholds."""
from __future__ import annotations

import math
import traceback
from typing import Any

from auditkit.check import Check, CheckResult, Findings, Outcome, Skipped, XFailed
from auditkit.errors import TargetError
from auditkit.plugin_manager import hookimpl


@hookimpl(trylast=True)
def auditkit_run_check(check: Check, ctx: Any) -> Findings:
    findings = check.run(ctx)
    if findings is None:
        raise TypeError(f"{type(check).__name__}.run() returned None; it must return auditkit.Findings")
    if not isinstance(findings, Findings):
        raise TypeError(f"{type(check).__name__}.run() returned {type(findings).__name__}; expected auditkit.Findings")
    return findings


@hookimpl(trylast=True)
def auditkit_make_result(
    check: Check, ctx: Any, findings: Findings | None, excinfo: BaseException | None, duration_s: float
) -> CheckResult:
    common = dict(check=check.id, model=ctx.target.name, role=ctx.target.role, duration_s=duration_s, headline=check.headline)
    if isinstance(excinfo, Skipped):
        return CheckResult(outcome=Outcome.SKIPPED, message=str(excinfo), **common)
    if isinstance(excinfo, XFailed):
        return CheckResult(outcome=Outcome.XFAILED, message=str(excinfo), **common)
    if excinfo is not None:
        tb = "".join(traceback.format_exception(type(excinfo), excinfo, excinfo.__traceback__))
        msg = str(excinfo) if isinstance(excinfo, TargetError) else f"{type(excinfo).__name__}: {excinfo}"
        return CheckResult(outcome=Outcome.ERROR, message=msg, traceback=tb, **common)
    assert findings is not None
    metrics = {k: float(v) for k, v in findings.metrics.items()}
    failures = list(findings.failures)
    thresholds: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for t in check.active_thresholds:
        reference = None
        key = t.metric if t.baseline is None else f"{t.metric}@{t.baseline}"
        entry = t.to_json()
        if t.baseline is not None:
            base = ctx.baseline_results().get(t.baseline)
            if ctx.target.role == "baseline":
                continue  # relative thresholds gate the target only
            if _is_weak(ctx, t.baseline):
                # a baseline that did not learn the task is no yardstick: the threshold is
                # refused, said in the message, and neither passes nor fails the check
                entry["weak_baseline"] = True
                entry["refused"] = True
                thresholds[key] = entry
                refused.append(
                    f"threshold {t.describe()} not evaluated: {t.baseline} is a weak baseline "
                    "(it did not learn the task; see its validation accuracy)"
                )
                continue
            reference = None if base is None else base.metrics.get(t.metric)
            if reference is None:
                failures.append(f"threshold {t.describe()}: no {t.metric} from baseline {t.baseline!r} to compare with")
                thresholds[key] = entry
                continue
            entry["reference"] = reference
        thresholds[key] = entry
        value = metrics.get(t.metric)
        if value is None:
            failures.append(f"threshold {t.describe()}: the check reported no {t.metric!r}")
        elif t.violated_by(value, reference):
            shown = "nan" if math.isnan(value) else f"{value:.4g}"
            failures.append(f"{t.metric}={shown} violates {t.describe()}")
    message = "; ".join(failures) if failures else findings.message
    if failures and findings.message:
        message = f"{message} ({findings.message})"
    if refused:
        message = "; ".join([message, *dict.fromkeys(refused)]) if message else "; ".join(dict.fromkeys(refused))
    return CheckResult(
        outcome=Outcome.FAILED if failures else Outcome.PASSED,
        metrics=metrics,
        thresholds=thresholds,
        message=message,
        artifacts=tuple(findings.artifacts),
        details=dict(findings.details),
        directions={m: d for m in metrics if (d := check.direction(m)) is not None},
        **common,
    )


def _is_weak(ctx: Any, name: str) -> bool:
    session = getattr(ctx, "session", None)
    return session is not None and any(b.name == name for b in session.weak_baselines())
