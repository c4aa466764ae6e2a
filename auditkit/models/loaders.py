"""Turn a ``--model SPEC`` into a :class:`~auditkit.target.Target` through the built-in formats
(:data:`auditkit.models.MODEL_FORMATS`), and say why when none of them owns the spec.
Never downloads unless pretrained weights are asked for and missing."""
from __future__ import annotations

import importlib
from pathlib import Path

from auditkit.errors import UsageError
from auditkit.models import MODEL_FORMATS
from auditkit.models.exported import ExportedProgramModule
from auditkit.models.format import SPEC_FORMS, ModelOptions, describe_spec_forms
from auditkit.models.state_dict import load_state_dict, read_state_dict
from auditkit.models.torch_files import file_kind, not_loadable
from auditkit.target import Target

__all__ = [
    "SPEC_FORMS",
    "ExportedProgramModule",
    "ModelOptions",
    "describe_spec_forms",
    "load_model",
    "load_state_dict",
    "read_state_dict",
    "unknown_spec_error",
]


def load_model(spec: str, options: ModelOptions) -> Target:
    """Load the model named by ``spec`` and wrap it in a :class:`~auditkit.target.Target`.

    The built-in formats are asked in turn, as the ``auditkit_load_model`` hook asks them;
    plugins are not (use the hook for that). The target is built on ``options.device`` with
    ``spec`` and a human description set; it is not entered or probed yet. Pretrained
    torchvision weights (``?weights=``) come from ``options.weights_dir``, then the torch hub
    cache, else are downloaded into that cache the way torchvision does it
    (:mod:`auditkit.weights`), unless ``options.offline``.

    Raises:
        UsageError: the spec cannot be loaded; the message says what was wrong and what was
            expected, in one line.
    """
    for name in MODEL_FORMATS:
        target = importlib.import_module(name).auditkit_load_model(spec=spec, options=options, config=None)
        if target is not None:
            return target
    raise unknown_spec_error(spec)


def unknown_spec_error(spec: str) -> UsageError:
    """Why no format owns ``spec``: empty, no such file, a directory, a Python file without
    its factory, or a file that is not a model auditkit reads."""
    spec = spec.strip()
    if not spec:
        return UsageError(f"empty model spec; expected one of: {describe_spec_forms()}")
    path = Path(spec).expanduser()
    if not path.exists():
        return UsageError(
            f"model {spec!r}: no such file, and not a spec form auditkit knows; expected one of: "
            f"{describe_spec_forms()}"
        )
    if path.is_dir():
        return UsageError(f"model {spec!r} is a directory; expected one of: {describe_spec_forms()}")
    if path.suffix == ".py":
        return UsageError(f"model {spec!r}: a Python file needs the function that builds the model: {spec}:FACTORY")
    return UsageError(not_loadable(path, file_kind(path), f"model {spec!r}", f"one of: {describe_spec_forms()}"))
