"""The HTML scorecard: one self-contained offline page (inline CSS, images as data URIs, plots as
inline SVG, no script, a Content-Security-Policy that forbids any request), rendered with jinja2
from the results alone and written when ``config.html`` is set (``--html PATH``).

The page holds the verdict, a comparison table (the target beside each baseline), the sections
that plugins contribute through ``auditkit_scorecard_sections`` (plus a generic section for every
check no section covers), skipped checks, errors with folded tracebacks, the environment, the
effective configuration and the command that reproduces the run. The comparison table's model
is :mod:`auditkit.reporters.comparison`, the command :mod:`auditkit.reporters.reproduce`; the
checker tests use on pages and sections is :mod:`auditkit.testing.html`.

Size, measured on the default ``auditkit demo`` (the demo model beside the AlexNet, GoogLeNet and
ResNet-18 baselines, 48 synthetic 32 px images, every built-in check and section): about 1.0 MB
(1,048,534 bytes, of which 0.80 MB are the 62 embedded PNGs), rendered in 0.06 s (0.02 s once
the template is compiled) on two CPU cores.
"""
from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from auditkit.check import CheckResult, Outcome
from auditkit.errors import ExitCode, UsageError
from auditkit.markers import hookimpl
from auditkit.reporters import svg
from auditkit.reporters.comparison import comparison_groups, slug
from auditkit.reporters.reproduce import reproduce_command

log = logging.getLogger(__name__)

TEMPLATE = "scorecard.html.j2"
TEMPLATES = Path(__file__).resolve().parent / "templates"

# Sections contributed by plugins sort by their "order"; generic sections come after them.
GENERIC_SECTION_ORDER = 900


# -------------------------------------------------------------------------------------------
# sections
# -------------------------------------------------------------------------------------------


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
                    "id": slug(f"error-{impl.plugin_name}"),
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
        base = slug("section-" + s["id"])
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
    model's message, its curves (:func:`svg.curve_html`) and its artifacts (:func:`svg.artifact_html`). None when no
    model produced anything (all skipped: the skipped list says why)."""
    shown = [r for r in results if r.metrics or r.artifacts or r.curves or r.outcome in (Outcome.PASSED, Outcome.FAILED)]
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
        block.append(svg.gallery([*(svg.curve_html(c) for c in r.curves), *(svg.artifact_html(a) for a in r.artifacts)]))
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


def _verdict(summary: Mapping[str, Any], counts: Mapping[str, int], any_results: bool, any_target: bool) -> tuple[str, str]:
    """The verdict's word and CSS class, from the report's exit code (or, without a report,
    the exit code the target's outcomes give)."""
    if "exit_code" in summary:
        exit_code = int(summary["exit_code"])
    elif not any_results:
        exit_code = ExitCode.NO_CHECKS_COLLECTED
    else:
        exit_code = ExitCode.CHECKS_FAILED if counts["failed"] or counts["error"] else ExitCode.OK
    if summary.get("interrupted"):
        return "INTERRUPTED", "failed"
    if exit_code == ExitCode.OK:
        return "PASSED", "passed"
    if exit_code == ExitCode.CHECKS_FAILED:
        return "FAILED", "failed"
    if exit_code == ExitCode.NO_CHECKS_COLLECTED or not any_target:
        return "NO CHECKS RAN", "skipped"
    return f"EXIT CODE {exit_code}", "failed"


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
    word, cls = _verdict(summary, counts, bool(results), bool(target))
    gating = [r for r in target if r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    baseline_bad = [r for r in results if r.role != "target" and r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    weak = [m["name"] for m in models if m["weak"]]
    with svg.weak_models(weak):  # every chart of every section marks them
        sections = collect_sections(results, config, pm)
    command, command_note = reproduce_command(config)
    environment = dict(report.get("environment", {})) if report else {}
    if not environment:
        from auditkit.session import environment as describe_environment

        environment = describe_environment()
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
                 "short": _shorten(r.message or "(no message)"), "anchor": slug("check-" + r.check)}
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
    from auditkit.config import Config

    try:
        results = [CheckResult.from_json(r) for r in report.get("results", [])]
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"the report's results are malformed ({type(exc).__name__}: {exc})") from exc
    config = Config.from_json(dict(report.get("config") or {}))
    return render_scorecard(results, config, pm=pm, report=report)


def write_scorecard(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


@hookimpl
def auditkit_session_finish(session: Any, exitstatus: int) -> None:
    if not session.config.html:
        return
    if session.report is None:  # AuditSession.finish builds it once for every writer
        from auditkit.reporters.json_report import build_report

        session.report = build_report(session)
    report = session.report
    t0 = time.perf_counter()
    # A failure here is the session's to list (auditkit.outputs.call_writers): the JSON
    # report is already written and the other writers still run.
    page = render_scorecard(session.results, session.config, pm=session.pm, report=report)
    path = write_scorecard(page, session.config.html)
    session.written.append(("HTML scorecard", str(path)))
    log.info("scorecard %s: %d bytes in %.2fs", path, path.stat().st_size, time.perf_counter() - t0)
