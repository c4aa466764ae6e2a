"""The pluggy markers of the ``auditkit`` hook namespace, in a module that imports nothing of
auditkit, so that any module (a reporter, a loader, a plugin) can mark its hooks without
importing the plugin manager and, through it, the whole core."""
from __future__ import annotations

import pluggy

#: Marks a hook specification (used by :mod:`auditkit.hookspecs` only).
hookspec = pluggy.HookspecMarker("auditkit")
#: Marks a hook implementation: ``@auditkit.hookimpl`` (also ``tryfirst``, ``trylast``,
#: ``wrapper``, ``historic`` as in pluggy).
hookimpl = pluggy.HookimplMarker("auditkit")
