"""The loading hooks' last word: when no plugin and no built-in format (:mod:`auditkit.models`,
:mod:`auditkit.data`) answers a spec, say why in one line instead of answering None."""
from __future__ import annotations

from typing import Any, Generator

from auditkit.markers import hookimpl


@hookimpl(wrapper=True)
def auditkit_load_model(spec: str, options: Any, config: Any) -> Generator[None, Any, Any]:
    target = yield
    if target is None:
        from auditkit.models.loaders import unknown_spec_error

        raise unknown_spec_error(spec)
    return target


@hookimpl(wrapper=True)
def auditkit_load_data(spec: str, config: Any) -> Generator[None, Any, Any]:
    data = yield
    if data is None:
        from auditkit.data.loaders import unknown_spec_error

        raise unknown_spec_error(spec)
    return data
