"""The plugin-manager factory: hook specs, the host's own default plugins, entry-point plugins,
``-p`` plugins and the working directory's ``auditconf.py``, validated before use."""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import pluggy

from auditkit import hookspecs
from auditkit.data import DATA_FORMATS
from auditkit.errors import UsageError
from auditkit.importing import on_sys_path
from auditkit.models import MODEL_FORMATS

from auditkit.markers import hookimpl  # noqa: E402,F401  (re-exported: auditkit.plugin_manager.hookimpl)

ENTRY_POINT_GROUP = "auditkit"
AUTOLOAD_ENV = "AUDITKIT_DISABLE_PLUGIN_AUTOLOAD"

# The host's own features, each one a plugin module (the pytest idea: the core only calls hooks).
DEFAULT_PLUGINS = (
    "auditkit.loading",
    *MODEL_FORMATS,
    *DATA_FORMATS,
    "auditkit.selection",
    "auditkit.runner",
    "auditkit.reporters.json_report",
    "auditkit.reporters.junit",
    "auditkit.reporters.markdown",
    "auditkit.reporters.html",
)


class PluginError(UsageError):
    """A plugin could not be imported or does not match the hook specifications."""


class AuditPluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from (for ``auditkit checks``)."""

    def __init__(self) -> None:
        super().__init__("auditkit")
        self.origins: dict[str, str] = {}

    def register_plugin(self, plugin: object, name: str, origin: str) -> None:
        if self.is_blocked(name) or self.has_plugin(name):
            return
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} ({origin}): {_explain_validation(exc)}") from exc
        self.origins[name] = origin


def get_plugin_manager(
    plugins: Sequence[str] = (),
    *,
    disabled: Iterable[str] = (),
    autoload: bool | None = None,
    confdir: str | os.PathLike | None = None,
    extra: Sequence[object] = (),
) -> AuditPluginManager:
    """Build the plugin manager for one audit.

    :param plugins: module names to register (``-p module``); ``no:NAME`` entries disable.
    :param disabled: plugin names to block (entry-point names or module names).
    :param autoload: load ``auditkit`` entry points; default: unless
        ``AUDITKIT_DISABLE_PLUGIN_AUTOLOAD`` is set.
    :param confdir: directory whose ``auditconf.py`` is registered (None: none).
    :param extra: plugin objects to register directly, or module names to import as ``-p``
        does (the Python API's ``plugins=``).
    :raises PluginError: a plugin fails to import or implements an unknown hook.
    """
    pm = AuditPluginManager()
    pm.add_hookspecs(hookspecs)
    blocked = set(disabled)
    to_load = []
    for p in plugins:
        if p.startswith("no:"):
            blocked.add(p[3:])
        else:
            to_load.append(p)
    for name in blocked:
        pm.set_blocked(name)

    for modname in DEFAULT_PLUGINS:
        pm.register_plugin(importlib.import_module(modname), modname, "auditkit (built-in)")

    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            module_name = ep.value.split(":")[0]
            if ep.name in blocked or module_name in blocked:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value!r}) failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            dist = f"{ep.dist.name}-{ep.dist.version}" if ep.dist else "unknown distribution"
            pm.register_plugin(plugin, ep.name, dist)

    for modname in to_load:
        if modname in blocked:
            continue
        try:
            # as pytest: a plugin module in the working directory is found (installed ones win)
            with on_sys_path(os.fspath(confdir), at_end=True) if confdir is not None else contextlib.nullcontext():
                module = importlib.import_module(modname)
        except ImportError as exc:
            raise PluginError(f"-p {modname}: cannot import plugin module: {exc}") from exc
        except Exception as exc:  # a plugin module that breaks on import (a syntax error, say) is the plugin's fault
            raise PluginError(f"-p {modname}: the plugin module failed to import: {type(exc).__name__}: {exc}") from exc
        pm.register_plugin(module, modname, "-p")

    if confdir is not None:
        path = Path(confdir) / "auditconf.py"
        if path.is_file() and "auditconf" not in blocked:
            pm.register_plugin(_import_path(path), "auditconf", str(path))

    for obj in extra:
        if isinstance(obj, str):  # a module name, as -p takes it
            try:
                obj = importlib.import_module(obj)
            except Exception as exc:
                raise PluginError(f"plugins=[{obj!r}]: cannot import plugin module: {type(exc).__name__}: {exc}") from exc
        pm.register_plugin(obj, getattr(obj, "__name__", None) or f"{type(obj).__name__}-{id(obj)}", "python api")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_explain_validation(exc)) from exc
    return pm


def _import_path(path: Path) -> object:
    spec = importlib.util.spec_from_file_location("auditconf", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    sys.modules.setdefault("auditconf", module)
    return module


def _explain_validation(exc: pluggy.PluginValidationError) -> str:
    """Add the closest real hook name to pluggy's message about an unknown hook."""
    msg = str(exc)
    known = [n for n in dir(hookspecs) if n.startswith("auditkit_")]
    for word in msg.replace("'", " ").replace(",", " ").split():
        if word.startswith("auditkit_") and word not in known:
            close = difflib.get_close_matches(word, known, n=1)
            if close:
                return f"{msg} (unknown hook {word!r}; did you mean {close[0]!r}?)"
            return f"{msg} (unknown hook {word!r}; known hooks: {', '.join(known)})"
    return msg
