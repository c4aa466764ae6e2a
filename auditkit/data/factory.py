"""Data format ``path/to/file.py:factory`` or ``package.module:factory``: a function returning
AuditData, or ``(train_dataset, eval_dataset, num_classes)``."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any, Callable

from auditkit.data.base import AuditData, PixelRangeError, Split
from auditkit.data.datasets import DatasetSplit
from auditkit.data.spec import data_format, located_path
from auditkit.data.synthetic import MIN_CLASSES
from auditkit.errors import UsageError
from auditkit.importing import NotPythonSource, SourceFileRaised, import_source_file


def _factory_parts(spec: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"(?P<target>.+):(?P<attr>[A-Za-z_]\w*)", spec)
    if match and (match["target"].endswith(".py") or re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", match["target"])):
        return match["target"], match["attr"]
    return None


def owns(spec: str) -> bool:
    located = located_path(spec)
    return located is not None and not located[0].is_dir() and not located[0].is_file() and _factory_parts(spec) is not None


def load(spec: str, *, seed: int, size: int | None) -> AuditData:
    target, attr = _factory_parts(spec)
    if target.endswith(".py"):
        module = _import_file(spec, Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(
                f"cannot import module {target!r} for data spec {spec!r}: {exc}; expected an importable module"
            ) from exc
        except Exception as exc:
            raise UsageError(
                f"importing module {target!r} for data spec {spec!r} raised {type(exc).__name__}: {exc}"
            ) from exc

    factory = getattr(module, attr, None)
    if factory is None:
        raise UsageError(
            f"{target!r} has no attribute {attr!r} (data spec {spec!r}); expected a function returning AuditData"
        )
    if not callable(factory):
        raise UsageError(
            f"{target}:{attr} is not callable (data spec {spec!r}); expected a function returning AuditData"
        )

    kwargs = _accepted_kwargs(factory, {"seed": seed, "size": size})
    try:
        result = factory(**kwargs)
    except PixelRangeError as exc:  # raised where the factory built its AuditData: name the spec
        raise exc.for_source(spec) from None
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"data factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    return _wrap_factory_result(spec, result)


def _import_file(spec: str, path: Path) -> Any:
    try:
        return import_source_file(path, "auditkit_data_factory")
    except FileNotFoundError as exc:
        raise UsageError(f"data factory file {str(path)!r} does not exist (data spec {spec!r}); expected a Python file") from exc
    except NotPythonSource as exc:
        raise UsageError(f"cannot import {str(path)!r} (data spec {spec!r}); expected a Python source file") from exc
    except SourceFileRaised as exc:
        cause = exc.__cause__
        raise UsageError(f"importing {str(path)!r} for data spec {spec!r} raised {type(cause).__name__}: {cause}") from cause


def _accepted_kwargs(function: Callable, candidates: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {k: v for k, v in candidates.items() if v is not None}
    return {
        k: v
        for k, v in candidates.items()
        if k in parameters and v is not None and parameters[k].kind is not inspect.Parameter.POSITIONAL_ONLY
    }


def _wrap_factory_result(spec: str, result: Any) -> AuditData:
    if isinstance(result, AuditData):
        if len(result.eval) == 0:
            raise UsageError(
                f"data {spec!r} has no evaluation images; expected the factory to return a non-empty eval split"
            )
        _require_class_count(spec, result.num_classes)
        return result
    if not (isinstance(result, tuple) and len(result) == 3):
        raise UsageError(
            f"data factory {spec!r} returned {type(result).__name__}; expected AuditData or a "
            "(train_dataset, eval_dataset, num_classes) tuple"
        )
    train_set, eval_set, num_classes = result
    if eval_set is None or len(eval_set) == 0:
        raise UsageError(f"data {spec!r} has no evaluation images; expected a non-empty eval_dataset")
    try:
        num_classes = int(num_classes)
    except (TypeError, ValueError):
        raise UsageError(f"data factory {spec!r} returned num_classes={num_classes!r}; expected an integer") from None
    _require_class_count(spec, num_classes)
    eval_split: Split = DatasetSplit(eval_set)
    first = eval_split[0]
    return AuditData(
        name=spec,
        spec=spec,
        eval=eval_split,
        train=DatasetSplit(train_set) if train_set is not None and len(train_set) else None,
        num_classes=num_classes,
        has_labels="label" in first,
        has_boxes="boxes" in first,
        has_masks="mask" in first,
        description=f"datasets from factory {spec}",
        train_split_hint=f"Return a train dataset from {spec} to evaluate every image.",
    )


def _require_class_count(spec: str, num_classes: int) -> None:
    if num_classes < MIN_CLASSES:
        raise UsageError(
            f"data factory {spec!r} returned data with num_classes={num_classes}; at least two classes are needed"
        )


auditkit_load_data = data_format(owns, load)
