"""The one state-dict reader and loader, behind ``--weights`` and ``--baseline-weights``
alike: tensors only, wrapper prefixes stripped, mismatches said in one line."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditkit.errors import UsageError
from auditkit.models.torch_files import TensorsOnlyRefused, file_kind, load_tensors_only, not_loadable, torch_error_text
from auditkit.target import DATA_PARALLEL_PREFIX, unwrap_data_parallel

# Key prefixes added by wrappers around a model: nn.DataParallel / DDP and torch.compile.
_WRAPPER_PREFIXES = (DATA_PARALLEL_PREFIX, "_orig_mod.")
_MAX_LISTED_KEYS = 5
STATE_DICT_EXPECTED = "a state_dict saved with torch.save(model.state_dict(), PATH)"
_FIRST_KEYS = 3


def read_state_dict(path: str, what: str | None = None) -> dict[str, torch.Tensor]:
    """The state_dict in the file ``path``, read with ``torch.load(weights_only=True)``: a
    dict of tensors, or a checkpoint dict holding one under ``"state_dict"``, ``"model"`` or
    ``"model_state_dict"``. Shared by ``--weights`` and ``--baseline-weights``.

    Args:
        path: the file (``~`` is expanded).
        what: how error messages name the file, e.g. ``"--weights w.pt"`` (the default).

    Raises:
        UsageError: one line saying what the file is instead: missing, not a PyTorch file,
            corrupt or truncated, a whole model (naming the Python class it needs), or a
            container without a state_dict.
    """
    what = what or f"--weights {path}"
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{what}: no such file; expected {STATE_DICT_EXPECTED}")
    return _read_state_dict(file, what)


def load_state_dict(
    model: nn.Module,
    state: Mapping[str, Any],
    what: str,
    into: str,
    *,
    extra_prefixes: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``model`` exactly: every key the model has, nothing else, every
    shape equal. Key prefixes that wrappers add (DataParallel's ``module.``, torch.compile's
    ``_orig_mod.``, and ``extra_prefixes``) are stripped while every key carries one.

    Args:
        what: names the state in messages, e.g. ``"--weights w.pt"``.
        into: names the model in messages, e.g. ``"model 'net.py:build'"``.

    Raises:
        UsageError: one line. Missing and unexpected keys come first (another architecture);
            when the only mismatches are the shapes of the classifier's outputs, the message
            gives the checkpoint's number of classes and asks whether num_classes is right.
    """
    # A DataParallel-wrapped model loads into its network, as the Target runs it; the state's
    # own DataParallel prefix goes the same way.
    model, _ = unwrap_data_parallel(model)
    expected = model.state_dict()
    state = strip_wrapper_prefixes(dict(state), expected.keys(), _WRAPPER_PREFIXES + tuple(extra_prefixes))
    mismatched = {
        k: (list(v.shape), list(expected[k].shape))
        for k, v in state.items()
        if k in expected
        and isinstance(v, torch.Tensor)
        and isinstance(expected[k], torch.Tensor)
        and v.shape != expected[k].shape
    }
    # strict=False, then our own check: modules' load hooks (BatchNorm's num_batches_tracked)
    # accept keys that a plain comparison of key sets would call missing.
    try:
        result = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    except RuntimeError as exc:
        raise UsageError(f"{what} does not fit {into}: {torch_error_text(exc)}") from exc
    missing = [k for k in result.missing_keys if k not in mismatched]
    unexpected = list(result.unexpected_keys)
    shapes = [f"{k} {got} (model has {want})" for k, (got, want) in mismatched.items()]
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys (first: {_first(missing)})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (first: {_first(shapes)})")
        raise UsageError(f"{what} does not fit {into}: {', '.join(parts)}; expected a state_dict of this architecture")
    if shapes:
        classes = _classifier_outputs(mismatched, list(expected))
        if classes is not None:
            raise UsageError(
                f"{what} does not fit {into}: shape mismatches {_listed(shapes)}: its classifier has {classes} "
                f"outputs; is num_classes right?"
            )
        raise UsageError(
            f"{what} does not fit {into}: shape mismatches {_listed(shapes)}; expected a state_dict of this architecture"
        )


def _classifier_outputs(mismatched: dict[str, tuple[list[int], list[int]]], keys: list[str]) -> int | None:
    """The state's number of classes when its only mismatches are the output dimension of the
    model's last module (its classifier), else None."""
    if not keys:
        return None
    head = keys[-1].rpartition(".")[0]
    for key, (got, want) in mismatched.items():
        if key.rpartition(".")[0] != head or len(got) != len(want) or not got or got[1:] != want[1:]:
            return None
    return next(iter(mismatched.values()))[0][0]


def _first(items: list[str]) -> str:
    return ", ".join(items[:_FIRST_KEYS]) + (", ..." if len(items) > _FIRST_KEYS else "")


def load_weights_file(model: nn.Module, path: str, spec: str) -> None:
    load_state_dict(model, read_state_dict(path), f"--weights {path}", f"model {spec!r}")


def _read_state_dict(file: Path, what: str) -> dict[str, torch.Tensor]:
    kind = file_kind(file)
    if kind != "torch.save":
        raise UsageError(not_loadable(file, kind, what, STATE_DICT_EXPECTED))
    try:
        obj = load_tensors_only(file, what)
    except TensorsOnlyRefused as refused:
        if refused.needs:
            raise UsageError(
                f"{what}: holds pickled Python objects beyond tensors (it needs {refused.needs}: a whole model?), "
                f"refused because unpickling runs arbitrary code; expected {STATE_DICT_EXPECTED}"
            ) from None
        raise UsageError(
            f"{what}: torch's tensors-only loader cannot read it ({refused.reason}; saved with a pickle_protocol "
            f"above 2?); expected {STATE_DICT_EXPECTED} and the default protocol"
        ) from None
    state = extract_state_dict(obj)
    if state is None:
        raise UsageError(
            f"{what}: holds {type(obj).__name__}, not a state_dict; expected a dict of tensors, or a checkpoint "
            "dict with a 'state_dict', 'model' or 'model_state_dict' key"
        )
    return state


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model", "model_state_dict"):
        if key in obj and _is_state_dict(obj[key]):
            return dict(obj[key])
    return dict(obj) if _is_state_dict(obj) else None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(
            isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state")) for k, v in obj.items()
        )
    )


def strip_wrapper_prefixes(
    state: dict[str, Any], expected: Any = None, prefixes: tuple[str, ...] = _WRAPPER_PREFIXES
) -> dict[str, Any]:
    """``state`` without the key ``prefixes`` that wrappers add (by default DataParallel / DDP's
    ``module.``, torch.compile's ``_orig_mod.``), one at a time while every key carries it. With
    the model's own keys ``expected``, a prefix stays when the keys match the model better with
    it (a network whose own child is named ``module``)."""
    known = set(expected) if expected is not None else None

    def matches(keys: Any) -> int:
        return len(known.intersection(keys)) if known is not None else 0

    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if not state or not all(k.startswith(prefix) for k in state):
                continue
            shorter = {k[len(prefix):]: v for k, v in state.items()}
            if matches(state) > matches(shorter):
                continue
            state, stripped = shorter, True
    return state


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED_KEYS])
    more = len(items) - _MAX_LISTED_KEYS
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"

