"""Importing the user's own Python files: the ``path/to/file.py:factory`` specs of models and data."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator


class NotPythonSource(ImportError):
    """The file exists but cannot be loaded as Python source."""


class SourceFileRaised(Exception):
    """Executing the user's file raised; the original exception is ``__cause__``."""


@contextlib.contextmanager
def on_sys_path(directory: str, *, at_end: bool = False) -> Iterator[None]:
    """``directory`` on sys.path for the duration (unless already there): at the front, or
    with ``at_end`` behind everything installed (installed modules then win)."""
    added = directory not in sys.path
    if added:
        if at_end:
            sys.path.append(directory)
        else:
            sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)


def import_source_file(path: Path, prefix: str) -> ModuleType:
    """Import ``path`` as a fresh module named ``{prefix}_{stem}_{hash of the path}``.

    The module is registered in sys.modules before it runs, so dataclasses and pickling inside
    the file find it, and the file's folder is on sys.path while it runs, so it can import its
    sibling modules. Raises FileNotFoundError (no such file), :class:`NotPythonSource`, or
    :class:`SourceFileRaised` from whatever executing the file raised (the module is then
    unregistered).
    """
    if not path.is_file():
        raise FileNotFoundError(str(path))
    path = path.resolve()
    stem = re.sub(r"\W", "_", path.stem)
    name = f"{prefix}_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise NotPythonSource(str(path))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        with on_sys_path(str(path.parent)):
            module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SourceFileRaised(str(path)) from exc
    return module
