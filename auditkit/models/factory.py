"""Model format ``path/to/file.py:factory`` and ``package.module:factory``: a function or
class building an ``nn.Module``, with an optional state_dict from ``--weights``."""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn

from auditkit.errors import UsageError
from auditkit.importing import NotPythonSource, SourceFileRaised, import_source_file, on_sys_path
from auditkit.models.format import ModelOptions, factory_parts, first_line, make_target, model_format
from auditkit.models.state_dict import load_weights_file
from auditkit.target import Target


def owns(spec: str) -> bool:
    return factory_parts(spec) is not None


def load(spec: str, options: ModelOptions) -> Target:
    source, attr = factory_parts(spec)
    module = _import_file(spec, Path(source).expanduser()) if source.endswith(".py") else _import_module(spec, source)
    factory = module
    for part in attr.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"model {spec!r}: {source} has no attribute {attr!r}{hint}") from None
    if not callable(factory):
        raise UsageError(
            f"model {spec!r}: {attr} is not callable ({type(factory).__name__}); expected a function or class that "
            "returns an nn.Module"
        )

    kwargs: dict[str, Any] = {}
    if options.num_classes is not None:
        if _accepts_parameter(factory, "num_classes"):
            kwargs["num_classes"] = options.num_classes
        else:
            warnings.warn(
                f"model {spec!r}: {attr} takes no num_classes parameter; num_classes={options.num_classes} is ignored",
                stacklevel=2,
            )
    try:
        model = factory(**kwargs)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"model {spec!r}: the factory {attr}() raised {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"model {spec!r}: the factory {attr}() returned {type(model).__name__}, expected a torch.nn.Module"
        )

    description = f"{type(model).__name__} from {source}:{attr}()"
    if options.weights:
        load_weights_file(model, options.weights, spec)
        description += f", weights from {options.weights}"
    else:
        description += ", its own initial weights"
    return make_target(model, spec, options, description=description)


def _import_file(spec: str, path: Path) -> ModuleType:
    try:
        return import_source_file(path, "auditkit_user_model")
    except FileNotFoundError as exc:
        raise UsageError(f"model {spec!r}: no such file {path}; expected path/to/file.py:factory") from exc
    except NotPythonSource as exc:
        raise UsageError(f"model {spec!r}: cannot import {path.resolve()} as Python; expected path/to/file.py:factory") from exc
    except SourceFileRaised as exc:
        cause = exc.__cause__
        raise UsageError(
            f"model {spec!r}: importing {path.resolve()} failed: {type(cause).__name__}: {first_line(cause)}"
        ) from cause


def _import_module(spec: str, name: str) -> ModuleType:
    try:
        # Console scripts do not put the working directory on sys.path; `python -m` does.
        with on_sys_path(os.getcwd()):
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"model {spec!r}: no module named {exc.name!r} (not installed, not under the current directory); "
                "expected package.module:factory or path/to/file.py:factory"
            ) from exc
        raise UsageError(f"model {spec!r}: importing {name} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"model {spec!r}: importing {name} failed: {type(exc).__name__}: {first_line(exc)}") from exc


def _accepts_parameter(func: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = parameters.get(name)
    return param is not None and param.kind not in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY)


auditkit_load_model = model_format(owns, load)
