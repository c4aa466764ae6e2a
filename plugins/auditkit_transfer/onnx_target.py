"""Deprecated: ONNX targets moved to :mod:`auditkit.models.onnx_file`."""
from __future__ import annotations

import warnings

from auditkit.models.onnx_file import ONNXTarget  # noqa: F401

warnings.warn("auditkit_transfer.onnx_target is deprecated; import from auditkit.models.onnx_file", DeprecationWarning, stacklevel=2)
