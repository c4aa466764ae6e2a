"""The built-in way a check runs and becomes a result: call ``run``, then choose the outcome
from the exception, the evidence (sample size, computable metrics, constant predictions), the
check's own failures and the thresholds."""
from __future__ import annotations

import dataclasses
import math
import traceback
from typing import Any

from auditkit.check import Check, CheckResult, Findings, Outcome, Skipped, XFailed
from auditkit.errors import TargetError
from auditkit.markers import hookimpl

# How every result that is skipped for want of evidence begins its message.
INSUFFICIENT_EVIDENCE = "insufficient evidence"


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
    constant = _constant_predictions(ctx)
    if isinstance(excinfo, Skipped):
        return _noted(CheckResult(outcome=Outcome.SKIPPED, message=str(excinfo), **common), constant, ctx)
    if isinstance(excinfo, XFailed):
        return _noted(CheckResult(outcome=Outcome.XFAILED, message=str(excinfo), **common), constant, ctx)
    if excinfo is not None:
        tb = "".join(traceback.format_exception(type(excinfo), excinfo, excinfo.__traceback__))
        msg = str(excinfo) if isinstance(excinfo, TargetError) else f"{type(excinfo).__name__}: {excinfo}"
        return _noted(CheckResult(outcome=Outcome.ERROR, message=msg, traceback=tb, **common), constant, ctx)
    assert findings is not None
    metrics = {k: float(v) for k, v in findings.metrics.items()}
    failures = list(findings.failures)
    thresholds: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    # What a verdict would rest on but could not be measured: metric name -> why.
    uncomputable: dict[str, str] = {}
    for name in _expected_headline(check):
        value = metrics.get(name)
        if value is None:
            uncomputable[name] = f"{name} could not be computed (the check reported no {name!r})"
        elif math.isnan(value):
            uncomputable[name] = f"{name} could not be computed (nan)"
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
            # a baseline's numbers are a yardstick only when its own result is a verdict (a
            # skipped one keeps numbers measured on too little evidence)
            judged = base is not None and base.outcome in (Outcome.PASSED, Outcome.FAILED)
            reference = base.metrics.get(t.metric) if judged else None
            thresholds[key] = entry
            if reference is None or math.isnan(reference):
                if base is None:
                    why = "no result"
                elif not judged:
                    why = f"its result is {base.outcome.value}"
                else:
                    why = "nan" if reference is not None else "not reported"
                uncomputable.setdefault(
                    key,
                    f"no {t.metric} from baseline {t.baseline!r} to compare with ({why}), so threshold "
                    f"{t.describe()} cannot be evaluated",
                )
                continue
            entry["reference"] = reference
        thresholds[key] = entry
        value = metrics.get(t.metric)
        if value is None:
            uncomputable.setdefault(t.metric, f"{t.metric} could not be computed (the check reported no {t.metric!r})")
        elif math.isnan(value):
            uncomputable.setdefault(t.metric, f"{t.metric} could not be computed (nan)")
        elif t.violated_by(value, reference):
            failures.append(f"{t.metric}={value:.4g} violates {t.describe()}")

    own = findings.message
    if constant is not None and check.constant_sensitive:
        outcome = Outcome.SKIPPED
        message = _insufficient(_constant_reason(ctx, constant) + "; an attack cannot change a constant output", own)
    elif (shortfall := _sample_shortfall(check, metrics)) is not None:
        # below the check's smallest meaningful sample the rule decides nothing, whichever
        # way it would go; the numbers stay in the result for the reports
        outcome, message = Outcome.SKIPPED, _insufficient(shortfall, own)
    elif failures:
        # real evidence fails the check even where other numbers could not be computed
        outcome = Outcome.FAILED
        message = "; ".join([*failures, *uncomputable.values()])
        if own:
            message = f"{message} ({own})"
    elif uncomputable:
        outcome, message = Outcome.SKIPPED, _insufficient("; ".join(uncomputable.values()), own)
    else:
        outcome, message = Outcome.PASSED, own
    if refused:
        message = "; ".join([message, *dict.fromkeys(refused)]) if message else "; ".join(dict.fromkeys(refused))
    result = CheckResult(
        outcome=outcome,
        metrics=metrics,
        thresholds=thresholds,
        message=message,
        artifacts=tuple(findings.artifacts),
        details=dict(findings.details),
        curves=tuple(findings.curves),
        directions={m: d for m in metrics if (d := check.direction(m)) is not None},
        **common,
    )
    return _noted(result, constant, ctx, said=check.constant_sensitive)


def _insufficient(reason: str, own: str) -> str:
    return f"{INSUFFICIENT_EVIDENCE}: {reason}" + (f"; {own}" if own else "")


def _expected_headline(check: Check) -> list[str]:
    """The headline metrics this check should report with its settings: all of them, or,
    when it declares its metrics, those its settings produce (``robust_acc@linf_8/255``
    only when 8/255 is a configured budget)."""
    declared = check.reported_metrics(check.settings)
    return [m for m in check.headline if not declared or check.may_report(m, check.settings)]


def _sample_shortfall(check: Check, metrics: dict[str, float]) -> str | None:
    """Why the sample is too small for the check's rule (its ``min_sample``), or None."""
    if check.min_sample <= 0:
        return None
    needs = f"this check's rule needs at least {check.min_sample}"
    count = metrics.get(check.sample_metric)
    if count is None or math.isnan(count):
        shown = "nan" if count is not None else "not reported"
        return f"the sample size {check.sample_metric} is {shown} ({needs})"
    if count >= check.min_sample:
        return None
    if check.sample_metric == "n_images":
        return f"{count:g} image{'' if count == 1 else 's'} ({needs})"
    return f"{check.sample_metric} = {count:g} ({needs})"


def _constant_predictions(ctx: Any) -> tuple[int, int] | None:
    session = getattr(ctx, "session", None)
    find = getattr(session, "constant_predictions", None)
    return None if find is None else find(ctx.target)


def _constant_reason(ctx: Any, constant: tuple[int, int]) -> str:
    k, n = constant
    names = getattr(getattr(ctx, "data", None), "class_names", None) or ()
    named = f" ({names[k]})" if 0 <= k < len(names) else ""
    return f"{ctx.target.name} predicts class {k}{named} for all {n} images"


def _noted(result: CheckResult, constant: tuple[int, int] | None, ctx: Any, said: bool = False) -> CheckResult:
    """``result`` with the model's constant predictions in its details and, unless the
    message already gives them as its reason (``said``), noted in its message."""
    if constant is None:
        return result
    k, n = constant
    details = {**result.details, "constant_predictions": {"class": k, "n_images": n}}
    message = result.message
    if not said:
        note = f"note: {_constant_reason(ctx, constant)} (constant predictions)"
        message = f"{message}; {note}" if message else note
    return dataclasses.replace(result, message=message, details=details)


def _is_weak(ctx: Any, name: str) -> bool:
    session = getattr(ctx, "session", None)
    return session is not None and any(b.name == name for b in session.weak_baselines())
