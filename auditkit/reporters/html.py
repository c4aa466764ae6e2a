"""The HTML scorecard: one self-contained offline page (inline CSS, images as data URIs, plots as
inline SVG, no script, a Content-Security-Policy that forbids any request), rendered with jinja2
from the results alone and written when ``config.html`` is set (``--html PATH``).

The page holds the verdict, a comparison table (the target beside each baseline), the sections
that plugins contribute through ``auditkit_scorecard_sections`` (plus a generic section for every
check no section covers), skipped checks, errors with folded tracebacks, the environment, the
effective configuration and the command that reproduces the run.

Size: the default ``auditkit demo`` (ResNet-18 beside AlexNet, GoogLeNet and ResNet-18 baselines,
64 synthetic 64 px images, every built-in check) gives a scorecard of about SIZE_NOTE.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import logging
import math
import shlex
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from auditkit.check import CheckResult, Outcome, Threshold
from auditkit.plugin_manager import hookimpl
from auditkit.reporters import svg

log = logging.getLogger(__name__)

TEMPLATE = "scorecard.html.j2"
TEMPLATES = Path(__file__).resolve().parent / "templates"

HIGHER, LOWER = 1, -1

# Which way is better, by metric name (fnmatch patterns, first match wins). ``None`` means the
# metric has no better side (a property of the data or of the audit itself, such as the center
# baseline or the queries spent) and blocks the fallback. A metric matching no pattern takes the
# direction of its threshold in the target's result (``min`` -> higher, ``max`` -> lower);
# without one it stays unmarked.
METRIC_DIRECTIONS: tuple[tuple[str, int | None], ...] = (
    # neither side is better: controls, counts, sizes of the audit
    ("n_*", None),
    ("center_baseline*", None),
    ("box_area_share", None),
    ("*_random", None),
    ("noise_success*", None),
    ("queries", None),
    ("attack_queries", None),
    ("proxy_agreement*", None),
    ("steps", None),
    ("faithful_depth", None),
    ("*.psnr", None),
    ("*.ssim", None),
    ("*.feature_rel_err", None),
    # higher is better
    ("top1", HIGHER),
    ("clean_acc", HIGHER),
    ("pointing_game*", HIGHER),
    ("pointing_gain*", HIGHER),
    ("energy_in_box*", HIGHER),
    ("energy_gain*", HIGHER),
    ("loc_acc_iou50*", HIGHER),
    ("mean_iou", HIGHER),
    ("insertion_auc", HIGHER),
    ("deletion_gain*", HIGHER),
    ("insertion_gain*", HIGHER),
    ("robust_acc*", HIGHER),
    ("median_min_eps*", HIGHER),
    ("cam_gradcam_corr", HIGHER),
    ("flip_corr", HIGHER),
    # lower is better
    ("deletion_auc", LOWER),
    ("max_rank_corr", LOWER),
    ("final_rank_corr", LOWER),
    ("max_ssim", LOWER),
    ("final_ssim", LOWER),
    ("logit_max_abs_err", LOWER),
    ("logit_rel_err", LOWER),
    ("gradcam_max_abs_err", LOWER),
    ("gradcam_rel_err", LOWER),
    ("attack_success*", LOWER),
    ("targeted_success*", LOWER),
    ("transfer_success*", LOWER),
    ("whitebox_success*", LOWER),
    ("flags", LOWER),
    ("rises_with_eps", LOWER),
    ("*_p_value", LOWER),
    ("leaking_layers", LOWER),
)

# Sections contributed by plugins sort by their "order"; generic sections come after them.
GENERIC_SECTION_ORDER = 900


def metric_direction(
    metric: str, threshold: Mapping[str, Any] | None = None, declared: str | None = None
) -> int | None:
    """``HIGHER`` (1), ``LOWER`` (-1) or None (unknown: no value is marked better) for a metric:
    the check's own declaration first (``declared``, from ``CheckResult.directions``:
    ``"higher"``/``"lower"``), then :data:`METRIC_DIRECTIONS`, then ``threshold`` (a result's
    ``thresholds[metric]``: op ``min`` means higher is better, ``max`` lower)."""
    if declared in ("higher", "lower"):
        return HIGHER if declared == "higher" else LOWER
    for pattern, direction in METRIC_DIRECTIONS:
        if fnmatch.fnmatchcase(metric, pattern):
            return direction
    if threshold:
        op = threshold.get("op")
        if op == "min":
            return HIGHER
        if op == "max":
            return LOWER
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


# -------------------------------------------------------------------------------------------
# the comparison table
# -------------------------------------------------------------------------------------------


def comparison_groups(results: Sequence[CheckResult], models: Sequence[str]) -> list[dict[str, Any]]:
    """The comparison table as data for the template: one group per check (in run order), an
    outcome row, then one row per headline or thresholded metric with a cell per model.

    A cell is marked ``best`` when the metric's direction is known, at least two models have a
    value, and this value is the best of them (ties are all marked); ``violates`` when it
    breaks the threshold of its own result."""
    by_check: dict[str, dict[str, CheckResult]] = {}
    for r in results:
        by_check.setdefault(r.check, {})[r.model] = r
    groups = []
    for check, per_model in by_check.items():
        lead = next((per_model[m] for m in models if m in per_model and per_model[m].role == "target"), None)
        lead = lead or next(iter(per_model.values()))
        names: list[str] = []
        for r in [lead, *per_model.values()]:
            for m in r.headline_metrics():
                if m not in names:
                    names.append(m)
        gated = [m for r in [lead, *per_model.values()] for m in r.thresholds if any(m in x.metrics for x in per_model.values())]
        for m in gated:
            if m not in names:
                names.append(m)
        outcome_cells = []
        for model in models:
            r = per_model.get(model)
            if r is None:
                outcome_cells.append({"model": model, "outcome": None, "title": "not run on this model"})
            else:
                outcome_cells.append({"model": model, "outcome": r.outcome.value, "title": r.message or r.outcome.value})
        rows = []
        for metric in names:
            threshold = next((dict(r.thresholds[metric]) for r in [lead, *per_model.values()] if metric in r.thresholds), None)
            declared = next(
                (r.directions[metric] for r in [lead, *per_model.values()] if metric in (getattr(r, "directions", None) or {})),
                None,
            )
            direction = metric_direction(metric, threshold, declared)
            values = {m: _number(per_model[m].metrics.get(metric)) if m in per_model else None for m in models}
            present = {m: v for m, v in values.items() if v is not None}
            best: set[str] = set()
            if direction is not None and len(present) >= 2:
                top = max(present.values()) if direction == HIGHER else min(present.values())
                if not all(v == top for v in present.values()):
                    best = {m for m, v in present.items() if v == top}
            cells = []
            for model in models:
                r = per_model.get(model)
                v = values[model]
                raw = None if r is None else r.metrics.get(metric)
                classes = ["value"]
                notes = []
                if model in best:
                    classes.append("best")
                    notes.append("best of the models")
                own = dict(r.thresholds[metric]) if r is not None and metric in r.thresholds else None
                if own and raw is not None and _violates(own, raw, values):
                    classes.append("violates")
                    notes.append(f"violates the threshold {describe_threshold(own)}")
                text = "\u2013" if raw is None else svg.format_number(raw, 3)
                cells.append({
                    "model": model,
                    "text": text,
                    "classes": " ".join(classes),
                    "best": model in best,
                    "violates": "violates" in classes,
                    "title": "; ".join(notes) or (f"{metric} = {raw!r}" if raw is not None else "no value"),
                })
            rows.append({
                "metric": metric,
                "direction": {HIGHER: "higher", LOWER: "lower"}.get(direction or 0, ""),
                "threshold": describe_threshold(threshold),
                "cells": cells,
            })
        groups.append({"check": check, "anchor": _slug("check-" + check), "outcomes": outcome_cells, "rows": rows})
    return groups


def _violates(threshold: Mapping[str, Any], value: Any, row: Mapping[str, float | None]) -> bool:
    try:
        t = Threshold(str(threshold.get("metric", "")), str(threshold["op"]), float(threshold["value"]), threshold.get("baseline"))
    except (KeyError, TypeError, ValueError):
        return False
    reference = row.get(t.baseline) if t.baseline else None
    if t.baseline and reference is None:
        return False  # the reference model is not in this scorecard: cannot tell
    try:
        return t.violated_by(float(value), reference)
    except (TypeError, ValueError):
        return False


# -------------------------------------------------------------------------------------------
# sections
# -------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text).lower())
    return out.strip("-") or "section"


def collect_sections(results: Sequence[CheckResult], config: Any, pm: Any) -> list[dict[str, Any]]:
    """Every plugin's sections, each implementation called on its own so that one raising
    becomes an error note instead of ending the others, then a generic section for each check
    that no section covers; sorted by (order, title).

    A section covers the check ids in its optional ``"checks"`` list, or else the checks of
    the family named by its ``id`` (section ``"gradcam"`` covers ``gradcam.*``)."""
    sections: list[dict[str, Any]] = []
    if pm is not None:
        hook = pm.hook.auditkit_scorecard_sections
        for impl in hook.get_hookimpls():
            if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
                continue
            kwargs = {"results": list(results), "config": config}
            try:
                out = impl.function(*(kwargs[a] for a in impl.argnames))
                for raw in out or ():
                    sections.append(_validated(raw, impl.plugin_name))
            except Exception:
                sections.append({
                    "id": _slug(f"error-{impl.plugin_name}"),
                    "title": f"Section from plugin {impl.plugin_name} failed",
                    "html": "<p>The plugin raised while building its scorecard section; the rest of the scorecard "
                    "is complete.</p><details><summary>traceback</summary><pre>"
                    + svg.esc(traceback.format_exc()) + "</pre></details>",
                    "order": GENERIC_SECTION_ORDER - 1,
                    "checks": [],
                    "error": True,
                })
    covered: set[str] = set()
    for s in sections:
        if s.get("checks") is not None:
            covered.update(s["checks"])
        else:
            covered.update(r.check for r in results if r.check.split(".", 1)[0] == s["id"])
    for check in dict.fromkeys(r.check for r in results):
        if check not in covered:
            generic = generic_section(check, [r for r in results if r.check == check])
            if generic is not None:
                sections.append(generic)
    seen: dict[str, int] = {}
    for s in sections:
        base = _slug("section-" + s["id"])
        seen[base] = seen.get(base, 0) + 1
        s["anchor"] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return sorted(sections, key=lambda s: (s["order"], s["title"], s["anchor"]))


def _validated(raw: Any, plugin: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("html"), str) or not raw.get("id"):
        raise TypeError(f"plugin {plugin!r} returned a section that is not a dict with 'id', 'title', 'html', 'order': {raw!r:.200}")
    order = raw.get("order", 100)
    checks = raw.get("checks")
    return {
        "id": str(raw["id"]),
        "title": str(raw.get("title") or raw["id"]),
        "html": raw["html"],
        "order": float(order) if isinstance(order, (int, float)) and not isinstance(order, bool) else 100.0,
        "checks": None if checks is None else [str(c) for c in checks],
        "plugin": plugin,
    }


def generic_section(check: str, results: Sequence[CheckResult]) -> dict[str, Any] | None:
    """The section a check gets when no plugin contributes one: every metric per model, each
    model's message, and its artifacts rendered by :func:`svg.artifact_html`. None when no
    model produced anything (all skipped: the skipped list says why)."""
    shown = [r for r in results if r.metrics or r.artifacts or r.outcome in (Outcome.PASSED, Outcome.FAILED)]
    if not shown:
        return None
    models = svg.model_order(shown)
    per_model = {r.model: r for r in shown}
    metrics: list[str] = []
    for r in shown:
        metrics += [m for m in r.metrics if m not in metrics]
    parts = []
    if metrics:
        rows = [[m, *[per_model[mod].metrics.get(m) for mod in models]] for m in metrics]
        head, tail = rows[:24], rows[24:]
        parts.append(svg.table(["metric", *models], head))
        if tail:
            parts.append(f"<details><summary>{len(tail)} more metrics</summary>{svg.table(['metric', *models], tail)}</details>")
    for model in models:
        r = per_model[model]
        block = [f"<h4>{svg.esc(model)} {svg.outcome_badge(r.outcome)}</h4>"]
        if r.message:
            block.append(f'<p class="message">{svg.esc(r.message)}</p>')
        block.append(svg.gallery(svg.artifact_html(a) for a in r.artifacts))
        parts.append('<div class="model-block">' + "".join(block) + "</div>")
    parts.append(svg.not_run_note([r for r in results if r not in shown]))
    return {
        "id": check,
        "title": check,
        "html": "".join(parts),
        "order": GENERIC_SECTION_ORDER,
        "checks": [check],
        "generic": True,
    }


# -------------------------------------------------------------------------------------------
# the page
# -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _environment_jinja() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = svg.format_number
    return env


def reproduce_command(config: Any) -> tuple[str, str]:
    """The command line that reproduces the run, and a note on where it came from. From the
    recorded invocation when there is one; rebuilt from the configuration otherwise (the
    Python API), with a placeholder for a model that was passed as an object."""
    invocation = getattr(config, "invocation", None)
    if invocation:
        return shlex.join([str(a) for a in invocation]), ""
    args = ["auditkit", "run", "--model", getattr(config, "model", None) or "<your model spec>"]
    if getattr(config, "weights", None):
        args += ["--weights", config.weights]
    args += ["--data", str(getattr(config, "data", ""))]
    if getattr(config, "select", None):
        args += ["--checks", ",".join(config.select)]
    if getattr(config, "keyword", None):
        args += ["-k", config.keyword]
    args += ["--baselines", ",".join(getattr(config, "baselines", None) or []) or "none"]
    args += ["--device", str(getattr(config, "device", "auto")), "--seed", str(getattr(config, "seed", 0))]
    if getattr(config, "max_images", None) is not None:
        args += ["--max-images", str(config.max_images)]
    for option in ("json", "junitxml", "html"):
        if getattr(config, option, None):
            args += [f"--{option}", str(getattr(config, option))]
    note = "rebuilt from the configuration: this audit ran through the Python API"
    if not getattr(config, "model", None):
        note += " with a model object, so put its spec (file.py:factory) in place of the placeholder"
    if getattr(config, "checks", None):
        note += "; per-check settings go in [tool.auditkit.checks] (see the configuration below)"
    return shlex.join(args), note


def _config_json(config: Any, report: Mapping[str, Any] | None) -> str:
    data = report.get("config") if report and "config" in report else None
    if data is None:
        data = config.to_json() if hasattr(config, "to_json") else {}
    return json.dumps(data, indent=2, default=str, ensure_ascii=False)


def _models(results: Sequence[CheckResult], report: Mapping[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    described = list(report.get("models", [])) if report else []
    order = svg.model_order(results)
    names = [m["name"] for m in described if m.get("role") == "target"]
    names += [m["name"] for m in described if m.get("role") != "target"]
    names += [m for m in order if m not in names]
    names = [n for n in names if n in order] or names
    info = {m["name"]: m for m in described}
    roles = {r.model: r.role for r in results}
    models = []
    for name in names:
        m = {"name": name, "role": roles.get(name, "target"), "spec": "", "params": None, "white_box": None,
             "gap_head": None, "input_size": None, "num_classes": None, **info.get(name, {})}
        params = m.get("params")
        m["params_text"] = "" if not params else (f"{params / 1e6:.2f}M" if params >= 1e5 else str(params))
        models.append(m)
    return names, models


def render_scorecard(
    results: Sequence[CheckResult],
    config: Any,
    *,
    pm: Any = None,
    report: Mapping[str, Any] | None = None,
) -> str:
    """Render the scorecard page from the results alone (never a model).

    :param results: every result of the audit, target and baselines.
    :param config: the effective ``auditkit.config.Config`` (its ``invocation`` gives the
        reproduce command).
    :param pm: the plugin manager whose ``auditkit_scorecard_sections`` implementations add
        sections (None: generic sections only).
    :param report: the JSON report dict (``auditkit.reporters.json_report.build_report``) for
        the environment, model descriptions, data and summary; optional.
    :returns: the HTML page as a string.
    """
    results = list(results)
    names, models = _models(results, report)
    target = [r for r in results if r.role == "target"]
    counts = {o.value: 0 for o in Outcome}
    for r in target:
        counts[r.outcome.value] += 1
    summary = dict(report.get("summary", {})) if report else {}
    if "exit_code" in summary:
        exit_code = int(summary["exit_code"])
    elif not results:
        exit_code = 5
    else:
        exit_code = 1 if counts["failed"] or counts["error"] else 0
    interrupted = bool(summary.get("interrupted"))
    if interrupted:
        word, cls = "INTERRUPTED", "failed"
    elif exit_code == 0:
        word, cls = "PASSED", "passed"
    elif exit_code == 1:
        word, cls = "FAILED", "failed"
    elif exit_code == 5 or not target:
        word, cls = "NO CHECKS RAN", "skipped"
    else:
        word, cls = f"EXIT CODE {exit_code}", "failed"
    gating = [r for r in target if r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    baseline_bad = [r for r in results if r.role != "target" and r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    sections = collect_sections(results, config, pm)
    command, command_note = reproduce_command(config)
    environment = dict(report.get("environment", {})) if report else {}
    if not environment:
        from auditkit.session import environment as current_environment

        environment = current_environment()
    data = dict(report.get("data", {})) if report else {}
    context = {
        "title": f"auditkit scorecard: {getattr(config, 'model', None) or 'model'} on {getattr(config, 'data', '')}",
        "verdict": {
            "word": word,
            "cls": cls,
            "n_target": len(target),
            "failures": [
                {"check": r.check, "outcome": r.outcome.value, "message": r.message or "(no message)",
                 "anchor": _slug("check-" + r.check)}
                for r in gating
            ],
            "baseline_failures": [{"check": r.check, "model": r.model, "outcome": r.outcome.value} for r in baseline_bad],
            "n_baseline_results": sum(1 for r in results if r.role != "target"),
            "regressions": [
                {"check": str(g.get("check", "")), "metric": str(g.get("metric", "")), "previous": g.get("previous"),
                 "current": g.get("current"), "direction": str(g.get("direction", ""))}
                for g in ((report or {}).get("comparison") or {}).get("regressions", []) or []
                if isinstance(g, Mapping)
            ],
            "compared_with": ((report or {}).get("comparison") or {}).get("previous"),
        },
        "counts": counts,
        "duration": summary.get("duration_s"),
        "created": report.get("created", "") if report else "",
        "version": report.get("auditkit_version", "") if report else "",
        "model_spec": getattr(config, "model", None) or (models[0].get("spec") if models else "") or "",
        "data_spec": data.get("spec") or getattr(config, "data", ""),
        "data": data,
        "models": models,
        "columns": names,
        "groups": comparison_groups(results, names),
        "sections": sections,
        "skipped": [r for r in results if r.outcome in (Outcome.SKIPPED, Outcome.XFAILED)],
        "errors": [r for r in results if r.outcome is Outcome.ERROR],
        "results": results,
        "environment": environment,
        "config_json": _config_json(config, report),
        "command": command,
        "command_note": command_note,
    }
    import markupsafe

    for s in sections:
        s["markup"] = markupsafe.Markup(s["html"])  # plugins build their html from escaped values
    return _environment_jinja().get_template(TEMPLATE).render(**context)


def write_scorecard(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


@hookimpl
def auditkit_session_finish(session: Any, exitstatus: int) -> None:
    if not session.config.html:
        return
    from auditkit.reporters.json_report import build_report

    # Implementations run in reverse registration order, so the JSON reporter may not have
    # built session.report yet: build it here when needed (it is cheap).
    report = session.report or build_report(session)
    t0 = time.perf_counter()
    page = render_scorecard(session.results, session.config, pm=session.pm, report=report)
    path = write_scorecard(page, session.config.html)
    session.written.append(("HTML scorecard", str(path)))
    log.info("scorecard %s: %d bytes in %.2fs", path, path.stat().st_size, time.perf_counter() - t0)
