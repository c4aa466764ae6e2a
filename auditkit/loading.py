"""Built-in model and data loading, as the last implementations of the loading hooks, so a
plugin can add a model or data format by answering first."""
from __future__ import annotations

from typing import Any

from auditkit.plugin_manager import hookimpl


@hookimpl(trylast=True)
def auditkit_load_model(spec: str, options: Any, config: Any) -> Any:
    from auditkit.models.loaders import load_model

    return load_model(spec, options)


@hookimpl(trylast=True)
def auditkit_load_data(spec: str, config: Any) -> Any:
    from auditkit.data.loaders import load_data

    return load_data(spec, seed=config.seed)
