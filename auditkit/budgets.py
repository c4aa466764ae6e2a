"""Perturbation budgets as they appear in metric names (``robust_acc@linf_8/255``,
``transfer_success@pgd_l2_0.5``): one format shared by every check and report."""
from __future__ import annotations

import re

NORMS = ("linf", "l2")

_LABEL = re.compile(r"^(?:(linf|l2)_)?(?:(\d+(?:\.\d+)?)/255|(\d*\.?\d+(?:e-?\d+)?))$")


def budget_label(norm: str, eps: float) -> str:
    """The name of a perturbation budget inside metric names, stable and JSON-friendly.

    Linf budgets that are whole 8-bit grey levels read as ``linf_<k>/255`` (``linf_8/255``);
    every other budget as ``<norm>_<eps>`` with six significant digits (``linf_0.01``,
    ``l2_0.25``). :func:`parse_budget` reads both back.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if norm == "linf":
        levels = eps * 255
        if round(levels) >= 1 and abs(levels - round(levels)) < 1e-6:
            return f"linf_{round(levels)}/255"
    return f"{norm}_{eps:.6g}"


def parse_budget(text: str) -> tuple[str, float]:
    """Read a budget label back as ``(norm, eps)``: ``linf_8/255``, ``l2_0.5``, and also the bare
    forms other plugins may use (``8/255``, ``0.03``, read as Linf). Raises ValueError otherwise."""
    match = _LABEL.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a perturbation budget; expected e.g. 'linf_8/255', 'l2_0.5' or '0.03'")
    norm, levels, value = match.groups()
    eps = float(levels) / 255 if levels is not None else float(value)
    return norm or "linf", eps
