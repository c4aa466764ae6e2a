"""Built-in plugin ``transfer``: the ``transfer.proxy`` check (black-box transfer attacks via a
trained proxy) and black-box model loaders for ``*.onnx`` files and ``http(s)://`` endpoints."""
from __future__ import annotations

from typing import Any

import auditkit

from auditkit_transfer.blackbox import is_http_spec, is_onnx_spec
from auditkit_transfer.check import ProxyTransfer
from auditkit_transfer.endpoints import PROTOCOL, HTTPTarget, load_http_target
from auditkit_transfer.onnx_target import ONNXTarget, load_onnx_target

__all__ = ["PROTOCOL", "HTTPTarget", "ONNXTarget", "ProxyTransfer"]


@auditkit.hookimpl
def auditkit_collect_checks(config: Any) -> list[type[auditkit.Check]]:
    return [ProxyTransfer]


@auditkit.hookimpl
def auditkit_load_model(spec: str, options: Any, config: Any) -> Any:
    if is_http_spec(spec):
        return load_http_target(spec, options)
    if is_onnx_spec(spec):
        return load_onnx_target(spec, options)
    return None


from auditkit_transfer.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
