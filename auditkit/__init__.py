"""auditkit: pytest-style robustness and interpretability audits for PyTorch image classifiers.

The public API: :func:`audit` runs an audit from Python; :class:`Check`, :class:`Findings`,
:func:`skip`, :func:`xfail` and :data:`hookimpl` are what a check plugin needs.
"""
from __future__ import annotations

__version__ = "0.1.0"

from auditkit.check import Artifact, Check, CheckResult, Findings, Outcome, Skipped, Threshold, XFailed, skip, xfail
from auditkit.data.base import AuditData, Batch, TensorSplit
from auditkit.errors import TargetError, UsageError
from auditkit.plugin_manager import hookimpl
from auditkit.target import BlackBoxTarget, Target


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
