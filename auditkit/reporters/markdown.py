"""``--md PATH``: a short Markdown summary of the audit, sized for a pull-request comment."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from auditkit.check import Outcome
from auditkit.plugin_manager import hookimpl
from auditkit.reporters.terminal import format_metric

_ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "➖"}


def _cell(value: Any) -> str:
    return "–" if value is None else format_metric("", value)[1:]


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
        for reg in regressions:
            lines.append(f"- 📉 regression: {reg.describe()}")
        lines.append("")
    names = [session.target.name] + [b.name for b in session.baselines]
    weak = session.weak_baselines()
    weak_names = {b.name for b in weak}
    lines.append("| check | metric | " + " | ".join(f"{n} ⚠️ weak" if n in weak_names else n for n in names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    outcome: dict[str, str] = {}
    for r in session.results:
        if r.role == "target":
            outcome[r.check] = r.outcome.value
        for metric, value in r.headline_metrics().items():
            by_key.setdefault((r.check, metric), {})[r.model] = value
    for (check, metric), values in by_key.items():
        icon = _ICONS.get(outcome.get(check, ""), "")
        lines.append(f"| {icon} `{check}` | {metric} | " + " | ".join(_cell(values.get(n)) for n in names) + " |")
    if weak:
        lines += ["", "⚠️ Weak baselines (validation accuracy not above chance, or one class predicted for nearly "
                  "every image; comparisons against them say little, and no threshold is evaluated against them): "
                  + ", ".join(f"{b.name} ({_weak_reason(b.info['quality'])})" for b in weak)]
    skipped = [r for r in session.results if r.role == "target" and r.outcome is Outcome.SKIPPED]
    if skipped:
        lines += ["", "<details><summary>skipped</summary>", ""]
        lines += [f"- `{r.check}`: {r.message}" for r in skipped]
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
