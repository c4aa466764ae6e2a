"""Built-in plugin ``transfer``: the ``transfer.proxy`` check (black-box transfer attacks via a
trained proxy). Black-box models (ONNX files, HTTP endpoints) load through :mod:`auditkit.models`."""
from __future__ import annotations

import warnings
from typing import Any

import auditkit

from auditkit_transfer.check import ProxyTransfer

__all__ = ["ProxyTransfer"]

# Names that lived here before black-box loading moved to auditkit.models: still importable.
_MOVED = {
    "HTTPTarget": "auditkit.models.http_endpoint",
    "PROTOCOL": "auditkit.models.http_endpoint",
    "ONNXTarget": "auditkit.models.onnx_file",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'auditkit_transfer' has no attribute {name!r}")
    warnings.warn(f"auditkit_transfer.{name} is deprecated; import it from {home}", DeprecationWarning, stacklevel=2)
    import importlib

    return getattr(importlib.import_module(home), name)


@auditkit.hookimpl
def auditkit_collect_checks(config: Any) -> list[type[auditkit.Check]]:
    return [ProxyTransfer]


from auditkit_transfer.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
