"""auditkit: pytest-style robustness and interpretability audits for PyTorch image classifiers.

The public API: :func:`audit` runs an audit from Python; :class:`Check`, :class:`Findings`,
:func:`skip`, :func:`xfail` and :data:`hookimpl` are what a check plugin needs.
"""
from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import Any

# Public names and the modules that define them. Imported on first use (PEP 562), so that
# ``auditkit`` (the command's entry point) starts without importing torch: a Ctrl-C during
# start-up then reaches the command's own handler instead of printing an import traceback.
_EXPORTS = {
    "Artifact": "auditkit.check",
    "Check": "auditkit.check",
    "CheckResult": "auditkit.check",
    "Cost": "auditkit.check",
    "Curve": "auditkit.check",
    "CurvePoint": "auditkit.check",
    "Findings": "auditkit.check",
    "Outcome": "auditkit.check",
    "Skipped": "auditkit.check",
    "Threshold": "auditkit.check",
    "XFailed": "auditkit.check",
    "skip": "auditkit.check",
    "xfail": "auditkit.check",
    "AuditData": "auditkit.data.base",
    "Batch": "auditkit.data.base",
    "TensorSplit": "auditkit.data.base",
    "ExitCode": "auditkit.errors",
    "TargetError": "auditkit.errors",
    "UsageError": "auditkit.errors",
    "hookimpl": "auditkit.markers",
    "BlackBoxTarget": "auditkit.target",
    "Target": "auditkit.target",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'auditkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def audit(*args, **kwargs):
    """Audit a model from Python; see :func:`auditkit.main.audit` for the parameters."""
    from auditkit.main import audit as _audit

    return _audit(*args, **kwargs)


audit.__doc__ = "Audit a model from Python and return an AuditRun (see auditkit.main.audit)."

__all__ = [
    "Artifact",
    "AuditData",
    "Batch",
    "BlackBoxTarget",
    "Check",
    "CheckResult",
    "Cost",
    "Curve",
    "CurvePoint",
    "ExitCode",
    "Findings",
    "Outcome",
    "Skipped",
    "TargetError",
    "TensorSplit",
    "Target",
    "Threshold",
    "UsageError",
    "XFailed",
    "audit",
    "hookimpl",
    "skip",
    "xfail",
    "__version__",
]
