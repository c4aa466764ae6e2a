"""pytest-like terminal output: a header, one line per check and model with its outcome and
headline metrics, failures and errors, and the final "N passed, N failed in 12.3s" line."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from typing import Any, TextIO

from auditkit.check import CheckResult, Outcome
from auditkit.markers import hookimpl

_COLORS = {
    Outcome.PASSED: "32",
    Outcome.FAILED: "31",
    Outcome.ERROR: "31",
    Outcome.SKIPPED: "33",
    Outcome.XFAILED: "33",
}


def format_metric(name: str, value: float) -> str:
    if value != value:  # NaN
        return f"{name}=nan"
    if float(value).is_integer() and abs(value) < 1e9:
        return f"{name}={int(value)}"
    return f"{name}={value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{name}={value:.3f}"


class TerminalReporter:
    """Registered by the command line and (quietly) by the Python API."""

    def __init__(self, verbosity: int = 0, stream: TextIO | None = None, color: bool | None = None):
        self.verbosity = verbosity
        self.stream = stream or sys.stdout
        if color is None:
            color = hasattr(self.stream, "isatty") and self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = min(shutil.get_terminal_size((100, 20)).columns, 120)
        self._model = None

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def rule(self, title: str, char: str = "=", code: str | None = None) -> None:
        title = f" {title} "
        fill = max(self.width - len(title), 4)
        line = char * (fill // 2) + title + char * (fill - fill // 2)
        self.write(self.paint(line, code) if code else line)

    # -- session start -------------------------------------------------------------------------

    @hookimpl
    def auditkit_session_start(self, session: Any) -> None:
        if self.verbosity < 0:
            return
        import torch

        from auditkit.device import describe_device

        self.rule("auditkit session starts")
        self.write(
            f"platform {platform.system().lower()} -- Python {platform.python_version()}, "
            f"torch {torch.__version__}, device {describe_device(session.device)}"
        )
        pm = session.pm
        plugins = sorted(f"{name} (-p)" if origin == "-p" else name for name, origin in pm.origins.items()
                         if not name.startswith("auditkit."))
        if plugins:
            self.write("plugins: " + ", ".join(plugins))
        data = session.data
        n_train = 0 if data.train is None else len(data.train)
        extras = ", boxes/masks" if data.has_localization else ""
        self.write(f"data: {data.spec} ({session.n_eval} eval / {n_train} train images, {data.num_classes} classes{extras})")
        preprocessing = getattr(data, "preprocessing", None) or {}
        if preprocessing.get("description"):
            self.write(f"images: {preprocessing['description']}")
        for t in session.all_targets:
            self.write(f"{t.role}: {t.name} = {t.spec} ({_describe_target(t)})")
        n_models = len(session.all_targets)
        n_checks = len(session.checks)
        self.write(f"collected {n_checks} check{'s' if n_checks != 1 else ''} x {n_models} model{'s' if n_models > 1 else ''}")
        self.write()

    # -- results -------------------------------------------------------------------------------

    @hookimpl
    def auditkit_log_result(self, result: CheckResult) -> None:
        if self.verbosity < 0:
            return
        if result.model != self._model:
            self._model = result.model
        word = result.outcome.value.upper()
        metrics = result.headline_metrics() if self.verbosity < 1 else dict(result.metrics)
        shown = " ".join(format_metric(k, v) for k, v in metrics.items())
        left = f"{result.model} :: {result.check} "
        tail = f" {word}"
        dots = "." * max(self.width // 2 - len(left) - len(tail), 2)
        line = f"{left}{dots}{self.paint(tail, _COLORS[result.outcome])}"
        if shown and result.outcome in (Outcome.PASSED, Outcome.FAILED):
            line += f"  {shown}"
        if result.outcome in (Outcome.SKIPPED, Outcome.XFAILED) and result.message:
            line += f"  ({result.message})"
        self.write(line)
        if self.verbosity >= 1 and result.message and result.outcome in (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR):
            self.write(f"    {result.message}")

    # -- summary -------------------------------------------------------------------------------

    @hookimpl(trylast=True)
    def auditkit_session_finish(self, session: Any, exitstatus: int) -> None:
        results = session.results
        errors = [r for r in results if r.outcome is Outcome.ERROR]
        if errors and self.verbosity >= 0:
            self.write()
            self.rule("ERRORS")
            for r in errors:
                self.rule(r.nodeid, "_")
                tb = (r.traceback or r.message).rstrip().splitlines()
                limit = None if self.verbosity >= 1 else 12
                if limit and len(tb) > limit:
                    tb = ["..."] + tb[-limit:]
                self.write("\n".join(tb))
        failed = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.ERROR)]
        skipped = [r for r in results if r.outcome in (Outcome.SKIPPED, Outcome.XFAILED)]
        if session.regressions:
            self.write()
            self.rule(f"regressions against {session.config.compare}", "=", "31")
            for reg in session.regressions:
                self.write(f"REGRESSED {reg.describe()}")
        elif session.config.compare and not session.interrupted and self.verbosity >= 0:
            self.write()
            self.write(f"no headline metric regressed against {session.config.compare}")
        if (failed or skipped) and self.verbosity >= 0:
            self.write()
            self.rule("short audit summary info")
            for r in failed + skipped:
                role = "" if r.role == "target" else " [baseline]"
                self.write(f"{r.outcome.value.upper()} {r.nodeid}{role} - {r.message}")
        if session.baselines and self.verbosity >= 0:
            self.comparison(session)
        if session.interrupted:
            self.write()
            self.rule("Interrupted: results so far were written", "!", "31")
        for what, path in session.written:
            if self.verbosity >= 0:
                self.write(f"{what}: {path}")
        for line in getattr(session, "not_written", ()):
            self.write(self.paint(line, "31"))
        counts = session.counts()
        parts = [f"{n} {name}" for name, n in counts.items() if n]
        base = [r for r in results if r.role == "baseline"]
        summary = ", ".join(parts) or "no checks ran"
        if base:
            summary += f" (+{len(base)} baseline result{'s' if len(base) != 1 else ''})"
        if session.regressions:
            summary += f", {len(session.regressions)} regressed"
        unwritten = len(getattr(session, "not_written", ()))
        if unwritten:
            summary += f", {unwritten} output{'s' if unwritten > 1 else ''} NOT written"
        summary += f" in {session.duration_s:.1f}s"
        bad = counts["failed"] or counts["error"] or session.interrupted or unwritten or session.regressions
        code = "31" if bad else ("32" if counts["passed"] else "33")
        self.rule(summary, "=", code)


    def comparison(self, session: Any) -> None:
        """The target beside each baseline, per headline metric."""
        names = [session.target.name] + [b.name for b in session.baselines]
        table: dict[tuple[str, str], dict[str, float]] = {}
        for r in session.results:
            for metric, value in r.headline_metrics().items():
                if not r.is_verdict:
                    value = None  # numbers of a skipped result decided nothing: shown as "-"
                table.setdefault((r.check, metric), {})[r.model] = value
        if not table:
            return
        self.write()
        self.rule("target beside baselines")
        weak = {b.name for b in session.weak_baselines()}
        first = max(len(f"{c} {m}") for c, m in table) + 2
        self.write(f"{'':<{first}}" + "".join(f"{n + ('*' if n in weak else ''):>12}" for n in names))
        for (check, metric), values in table.items():
            cells = "".join(f"{_short(values.get(n)):>12}" for n in names)
            self.write(f"{check + ' ' + metric:<{first}}{cells}")
        if weak:
            self.write("* weak baseline: it did not learn the task; its numbers are no yardstick")


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    return f"{value:.4g}"


def _describe_target(t: Any) -> str:
    bits = []
    params = t.num_params()
    if params:
        bits.append(f"{params / 1e6:.2f}M params" if params >= 1e5 else f"{params} params")
    bits.append("white box" if t.white_box else f"black box, {t.returns}")
    if getattr(t, "gap_head", None) is not None:
        bits.append("GAP head")
    if t.input_size:
        bits.append("input " + "x".join(map(str, t.input_size)))
    if t.num_classes:
        bits.append(f"{t.num_classes} classes")
    return ", ".join(bits)
