"""A plugin object for tests: register check classes for one audit without writing a plugin
module (``auditkit.audit(model, data, plugins=[CheckPlugin(MyCheck)])``)."""
from __future__ import annotations

from typing import Any

from auditkit.markers import hookimpl

__all__ = ["CheckPlugin"]


class CheckPlugin:
    """Provides the given :class:`auditkit.Check` subclasses through
    ``auditkit_collect_checks``, as a plugin module's hook would."""

    def __init__(self, *checks: type):
        self.checks = list(checks)

    @hookimpl
    def auditkit_collect_checks(self, config: Any) -> list[type]:
        return self.checks
