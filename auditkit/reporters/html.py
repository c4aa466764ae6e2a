"""The HTML scorecard: one self-contained offline page (inline CSS, images as data URIs, plots as
inline SVG, no script, a Content-Security-Policy that forbids any request), rendered with jinja2
from the results alone and written when ``config.html`` is set (``--html PATH``).

The page holds the verdict, a comparison table (the target beside each baseline), the sections
that plugins contribute through ``auditkit_scorecard_sections`` (plus a generic section for every
check no section covers), skipped checks, errors with folded tracebacks, the environment, the
effective configuration and the command that reproduces the run.

Size, measured on the default ``auditkit demo`` (the demo model beside the AlexNet, GoogLeNet and
ResNet-18 baselines, 48 synthetic 32 px images, every built-in check and section): about 1.0 MB
(1,048,534 bytes, of which 0.80 MB are the 62 embedded PNGs), rendered in 0.06 s (0.02 s once
the template is compiled) on two CPU cores.
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
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Mapping, Sequence

from auditkit.check import CheckResult, Outcome, Threshold
from auditkit.errors import UsageError
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

    A cell is marked ``best`` when the metric's direction is known, at least two models that
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
            declared = next((r.directions[metric] for r in ordered if metric in (getattr(r, "directions", None) or {})), None)
            direction = metric_direction(metric, threshold, declared)
            present = {
                m: v for m in models
                if m in per_model and m not in weak and (v := _number(per_model[m].metrics.get(metric))) is not None
            }
            best: set[str] = set()
            if direction is not None and len(present) >= 2 and len(set(present.values())) > 1:
                top = max(present.values()) if direction == HIGHER else min(present.values())
                best = {m for m, v in present.items() if v == top}
            cells = []
            for model in models:
                r = per_model.get(model)
                raw = None if r is None else r.metrics.get(metric)
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
                "direction": {HIGHER: "higher", LOWER: "lower"}.get(direction or 0, ""),
                "threshold": describe_threshold(threshold),
                "cells": cells,
            })
        outcomes = [
            {"model": m, "outcome": None, "title": "not run on this model"} if m not in per_model
            else {"model": m, "outcome": per_model[m].outcome.value, "title": per_model[m].message or per_model[m].outcome.value}
            for m in models
        ]
        groups.append({"check": check, "anchor": _slug("check-" + check), "outcomes": outcomes, "rows": rows})
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
            parts.append(f"<details><summary>{svg.plural(len(tail), 'more metric')}</summary>{svg.table(['metric', *models], tail)}</details>")
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
    env.filters["plural"] = svg.plural
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
             "gap_head": None, "input_size": None, "num_classes": None, "info": None, **info.get(name, {})}
        params = m.get("params")
        m["params_text"] = "" if not params else (f"{params / 1e6:.2f}M" if params >= 1e5 else str(params))
        m["weak"] = bool(((m.get("info") or {}).get("quality") or {}).get("weak"))
        models.append(m)
    return names, models


def _shorten(message: str, limit: int = 200) -> str:
    """The start of a long message, cut at a word, for the one-glance verdict."""
    if len(message) <= limit:
        return message
    return message[:limit].rsplit(" ", 1)[0].rstrip(" ;,(") + " \u2026"


def _this_environment() -> dict[str, Any]:
    """Versions of what is already imported (without a report: no session to describe)."""
    import platform
    import sys

    import auditkit

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "auditkit": auditkit.__version__}
    for name in ("torch", "torchvision"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", "?")
    return env


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
    weak = [m["name"] for m in models if m["weak"]]
    with svg.weak_models(weak):  # every chart of every section marks them
        sections = collect_sections(results, config, pm)
    command, command_note = reproduce_command(config)
    environment = dict(report.get("environment", {})) if report else {}
    if not environment:
        environment = _this_environment()
    data = dict(report.get("data", {})) if report else {}
    model_spec = getattr(config, "model", None) or (models[0].get("spec") if models else "") or "model"
    context = {
        "title": f"auditkit scorecard: {model_spec} on {data.get('spec') or getattr(config, 'data', '')}",
        "verdict": {
            "word": word,
            "cls": cls,
            "n_target": len(target),
            "failures": [
                {"check": r.check, "outcome": r.outcome.value, "message": r.message or "(no message)",
                 "short": _shorten(r.message or "(no message)"), "anchor": _slug("check-" + r.check)}
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
            "warnings": [str(w) for w in (report or {}).get("warnings") or []],
        },
        "counts": counts,
        "duration": summary.get("duration_s"),
        "created": report.get("created", "") if report else "",
        "version": report.get("auditkit_version", "") if report else "",
        "model_spec": model_spec,
        "data_spec": data.get("spec") or getattr(config, "data", ""),
        "data": data,
        "models": models,
        "columns": names,
        "groups": comparison_groups(results, names, weak),
        "weak_models": weak,
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


def scorecard_from_report(report: Mapping[str, Any], pm: Any = None) -> str:
    """Render the scorecard from a JSON report alone (``auditkit report REPORT.json``): the
    results, with their artifacts, come back through :meth:`CheckResult.from_json` and the
    configuration from the report's ``config``. Plugins in ``pm`` add their sections as in
    the run itself."""
    import dataclasses

    from auditkit.config import Config

    try:
        results = [CheckResult.from_json(r) for r in report.get("results", [])]
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"the report's results are malformed ({type(exc).__name__}: {exc})") from exc
    recorded = dict(report.get("config") or {})
    names = {f.name for f in dataclasses.fields(Config)} - {"options", "pluginmanager", "invocation"}
    config = Config(**{k: v for k, v in recorded.items() if k in names})
    if recorded.get("command"):
        config.invocation = shlex.split(str(recorded["command"]))
    return render_scorecard(results, config, pm=pm, report=report)


# -------------------------------------------------------------------------------------------
# checking a page or a section
# -------------------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_FORBIDDEN = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "link", "base", "form"}
_URL_ATTRS = {"src", "href", "xlink:href", "srcset", "action", "formaction", "data", "poster", "background", "ping"}


class _Linter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self.anchors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
            return
        self.problems.append(f"line {self.getpos()[0]}: </{tag}> does not close <{self.stack[-1] if self.stack else '(nothing)'}>")
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style" and ("url(" in data or "@import" in data):
            self.problems.append(f"line {self.getpos()[0]}: <style> loads a resource (url( or @import)")

    def _check(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        where = f"line {self.getpos()[0]}: <{tag}>"
        if tag in _FORBIDDEN:
            self.problems.append(f"{where} is not allowed in a self-contained scorecard")
        for name, value in attrs:
            value = (value or "").strip()
            if name.startswith("on"):
                self.problems.append(f"{where} has an event handler attribute {name}")
            elif name == "id":
                if value in self.ids:
                    self.problems.append(f"{where} repeats id {value!r}")
                self.ids.add(value)
            elif name in _URL_ATTRS:
                if name == "href" and value.startswith("#"):
                    self.anchors.append(value[1:])
                elif not value.lower().startswith("data:image/"):
                    self.problems.append(f"{where} {name}={value[:60]!r} refers outside the file")
            elif name == "style" and "url(" in value:
                self.problems.append(f"{where} style loads a resource (url()")
            elif tag == "meta" and name == "http-equiv" and value.lower() == "refresh":
                self.problems.append(f"{where} refreshes or redirects the page")


def lint_html(text: str, *, fragment: bool = False) -> list[str]:
    """What keeps ``text`` from being a valid self-contained scorecard (or, with ``fragment``,
    a section's html): unbalanced tags, scripts, frames, stylesheets or anything else that
    loads a resource, references outside the file (only ``data:image/...`` and ``#anchors``
    are allowed), event-handler attributes, repeated ids and, for a page, links to anchors
    that do not exist. An empty list means none. Meant for tests of scorecard sections::

        assert lint_html(section["html"], fragment=True) == []
    """
    linter = _Linter()
    linter.feed(text)
    linter.close()
    problems = list(linter.problems)
    open_tags = [t for t in linter.stack if fragment or t not in ("html", "body", "head")]
    if open_tags:
        problems.append(f"unclosed tags at the end: {', '.join(f'<{t}>' for t in open_tags)}")
    if not fragment:
        problems += [f"link to #{a}, which no element has as id" for a in linter.anchors if a not in linter.ids]
    return problems


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

    report = session.report or build_report(session)  # the JSON reporter (tryfirst) normally built it
    t0 = time.perf_counter()
    # A failure here is the session's to list (auditkit.outputs.call_writers): the JSON
    # report is already written and the other writers still run.
    page = render_scorecard(session.results, session.config, pm=session.pm, report=report)
    path = write_scorecard(page, session.config.html)
    session.written.append(("HTML scorecard", str(path)))
    log.info("scorecard %s: %d bytes in %.2fs", path, path.stat().st_size, time.perf_counter() - t0)
