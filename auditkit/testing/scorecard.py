"""Helpers for testing a plugin's scorecard section (``auditkit_scorecard_sections``): results
as a check reports them, a small PNG artifact, the one section a plugin returns, and the
section's SVG charts by title, a curve against a budget. Used by auditkit's own plugin tests; plugin authors may use
them too."""
from __future__ import annotations

import io
import re
from typing import Any, Iterable, Sequence

from auditkit.check import Artifact, CheckResult, Curve, CurvePoint, Outcome


def png(width: int = 16, height: int = 16, colour: tuple[int, int, int] = (0, 120, 200)) -> bytes:
    """A solid-colour RGB PNG of ``width`` x ``height`` pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def result(
    check: str, model: str, outcome: str = "passed", metrics: dict[str, float] | None = None,
    artifacts: Iterable[Artifact] = (), **kwargs: Any,
) -> CheckResult:
    """A :class:`CheckResult` of ``check`` on ``model``; the role is "target" for the model
    named "target" and "baseline" otherwise unless ``role`` is given."""
    kwargs.setdefault("role", "target" if model == "target" else "baseline")
    return CheckResult(check=check, model=model, outcome=Outcome(outcome), metrics=dict(metrics or {}),
                       artifacts=tuple(artifacts), **kwargs)


def only_section(plugin: Any, results: Sequence[CheckResult], config: Any = None) -> dict[str, Any]:
    """The single section ``plugin`` (a module or object with ``auditkit_scorecard_sections``)
    returns for ``results``; fails when it returns none or several."""
    from auditkit.config import Config

    (section,) = plugin.auditkit_scorecard_sections(results=list(results), config=config or Config())
    return section


def charts(html: str) -> dict[str, str]:
    """The ``<svg>`` charts in ``html`` by the text of their ``<title>``."""
    return {re.search(r"<title>(.*?)</title>", c).group(1): c for c in re.findall(r"<svg.*?</svg>", html, re.S)}


def budget_curve(
    metric: str, norm: str, eps: Sequence[float], values: Sequence[float],
    lo: Sequence[float] | None = None, hi: Sequence[float] | None = None, variant: str = "",
) -> Curve:
    """A :class:`Curve` of ``metric`` against the ``norm`` budget, as a check reports it."""
    lo = list(lo) if lo is not None else [None] * len(values)
    hi = list(hi) if hi is not None else [None] * len(values)
    points = tuple(CurvePoint(float(e), float(v), low, high) for e, v, low, high in zip(eps, values, lo, hi))
    name = "_".join(part for part in (metric, variant, norm) if part)
    return Curve(name=name, metric=metric, points=points, norm=norm, variant=variant, label=name)
