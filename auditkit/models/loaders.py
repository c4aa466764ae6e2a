"""Turn a ``--model SPEC`` into a :class:`~auditkit.target.Target`: torchvision names, factories
with state_dicts, torch.export archives, TorchScript files and trusted pickles. Never downloads."""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import logging.handlers
import os
import pickle
import re
import urllib.parse
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import torch
from torch import nn

from auditkit import weights as pretrained
from auditkit.errors import UsageError
from auditkit.importing import NotPythonSource, SourceFileRaised, import_source_file, on_sys_path
from auditkit.target import DATA_PARALLEL_PREFIX, IMAGENET_MEAN, IMAGENET_STD, Target, unwrap_data_parallel

__all__ = [
    "SPEC_FORMS",
    "ExportedProgramModule",
    "ModelOptions",
    "describe_spec_forms",
    "load_model",
    "load_state_dict",
    "read_state_dict",
]

SPEC_FORMS: tuple[str, ...] = (
    "torchvision:NAME[?weights=ENUM_NAME|DEFAULT]",
    "path/to/file.py:factory or package.module:factory (state_dict via --weights PATH)",
    "a .pt2 torch.export archive",
    "a TorchScript file (.pt, .pth, .ts, .jit)",
    "a torch.save'd nn.Module (only with --trust-pickle)",
    "model.onnx or an http(s):// endpoint (black-box, optional extra)",
)

_TORCHVISION = "torchvision:"
_BLACK_BOX_PREFIXES = ("http://", "https://")
_FACTORY_SPEC = re.compile(r"^(?P<source>.+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
# Key prefixes added by wrappers around a model: nn.DataParallel / DDP and torch.compile.
_WRAPPER_PREFIXES = (DATA_PARALLEL_PREFIX, "_orig_mod.")
_MAX_LISTED_KEYS = 5


@dataclass
class ModelOptions:
    """How to load a model spec; filled from the command line and config.

    Attributes:
        weights: path to a state_dict (``--weights``) for a factory or torchvision spec.
        num_classes: size of the classifier head to build; ``None`` keeps the default
            (1000 for torchvision, the factory's own default otherwise).
        trust_pickle: allow unpickling a full ``torch.save``'d module (runs arbitrary code).
        device: where :class:`~auditkit.target.Target` puts the model on entry.
        mean: per-channel normalization mean applied inside the target; overrides the default.
        std: per-channel normalization std applied inside the target; overrides the default.
        weights_dir: a directory searched, before the torch hub cache, for pretrained
            torchvision checkpoints (files named as in the weights' URL).
        offline: never download pretrained weights (also ``AUDITKIT_OFFLINE=1``): a missing
            checkpoint is then an error naming the file to put in the torch hub cache.
        seed: seeds the random initialization of what the spec builds (a ``torchvision:``
            architecture without weights, a factory's model), so the same seed gives the same
            model; drawn on a forked generator, leaving the caller's random stream as it was.
    """

    weights: str | None = None
    num_classes: int | None = None
    trust_pickle: bool = False
    device: str = "cpu"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    weights_dir: str | None = None
    seed: int = 0
    offline: bool = False


def describe_spec_forms() -> str:
    """The accepted model spec forms, as one line for error messages and help text."""
    return "; ".join(SPEC_FORMS)


def load_model(spec: str, options: ModelOptions) -> Target:
    """Load the model named by ``spec`` and wrap it in a :class:`~auditkit.target.Target`.

    The target is built on ``options.device`` with ``spec`` and a human description set; it is
    not entered or probed yet. Pretrained torchvision weights (``?weights=``) come from
    ``options.weights_dir``, then the torch hub cache, else are downloaded into that cache the
    way torchvision does it (:mod:`auditkit.weights`), unless ``options.offline``.

    Raises:
        UsageError: the spec cannot be loaded; the message says what was wrong and what was
            expected, in one line.
    """
    spec = spec.strip()
    if not spec:
        raise UsageError(f"empty model spec; expected one of: {describe_spec_forms()}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return _load_model(spec, options)


def _load_model(spec: str, options: ModelOptions) -> Target:
    if spec.startswith(_TORCHVISION):
        return _load_torchvision(spec, options)
    if _is_black_box_spec(spec):
        return _load_black_box(spec, options)
    factory = _FACTORY_SPEC.match(spec)
    if factory and (factory["source"].endswith(".py") or _MODULE_NAME.match(factory["source"])):
        return _load_factory(spec, factory["source"], factory["attr"], options)
    return _load_file(spec, options)


# -- black box: the seam where ONNX and HTTP targets plug in --------------------------------


def _is_black_box_spec(spec: str) -> bool:
    return spec.lower().startswith(_BLACK_BOX_PREFIXES) or spec.lower().endswith(".onnx")


def _load_black_box(spec: str, options: ModelOptions) -> Target:
    """Load an ONNX file or an HTTP prediction endpoint as a black-box target.

    Not available yet: these will come through a plugin hook with the optional extras."""
    kind = "ONNX" if spec.lower().endswith(".onnx") else "HTTP"
    raise UsageError(
        f"model {spec!r}: black-box {kind} targets need the optional extra and are not available "
        f"in this version yet; use a white-box form: {describe_spec_forms()}"
    )


# -- torchvision -------------------------------------------------------------------------------


def _load_torchvision(spec: str, options: ModelOptions) -> Target:
    import torchvision

    name, _, query = spec[len(_TORCHVISION):].partition("?")
    name = name.strip().lower()
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"weights"})
    if unknown:
        raise UsageError(
            f"model {spec!r}: unknown option(s) {unknown}; expected torchvision:NAME[?weights=ENUM_NAME|DEFAULT]"
        )
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        if name in torchvision.models.list_models():
            raise UsageError(
                f"model {spec!r}: torchvision's {name} is not an image classifier; expected one of "
                "torchvision.models.list_models(module=torchvision.models)"
            )
        close = difflib.get_close_matches(name, classifiers, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(classifiers[:5])}"
        raise UsageError(f"model {spec!r}: torchvision has no classifier named {name!r}; {hint}")

    weights = _torchvision_weights(spec, name, params["weights"][-1]) if "weights" in params else None
    if weights is not None and options.weights:
        raise UsageError(
            f"model {spec!r}: give pretrained weights either as ?weights= or as --weights {options.weights}, "
            "not both"
        )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    kwargs: dict[str, Any] = {"num_classes": options.num_classes or 1000}
    if weights is not None:
        categories = len(weights.meta.get("categories") or ()) or 1000
        if options.num_classes not in (None, categories):
            raise UsageError(
                f"model {spec!r}: pretrained {weights} has {categories} classes but num_classes is "
                f"{options.num_classes}; drop ?weights= to build a random {options.num_classes}-class model, "
                f"or use a factory spec with --weights for a fine-tuned head"
            )
        kwargs["num_classes"] = categories
        transforms = weights.transforms()
        mean = tuple(getattr(transforms, "mean", mean))
        std = tuple(getattr(transforms, "std", std))
        min_size = weights.meta.get("min_size")
        # The builders set these from the weights' metadata when they load weights themselves.
        if name.startswith("vit_") and min_size:
            kwargs["image_size"] = min_size[0]
        if name.startswith("maxvit") and min_size:
            kwargs["input_size"] = tuple(min_size)
    user_state = read_state_dict(options.weights) if options.weights else None
    aux_heads = name in ("googlenet", "inception_v3") and (
        weights is not None
        or any(k.startswith(("aux1.", "AuxLogits.")) for k in _strip_wrapper_prefixes(user_state or {}))
    )
    if name in ("googlenet", "inception_v3"):
        # Built with auxiliary heads only to load a checkpoint that holds them; dropped after.
        # init_weights: torchvision's truncated-normal init for random models (the library
        # default init gives near-constant logits); skipped when a checkpoint overwrites it.
        kwargs.update(aux_logits=aux_heads, init_weights=weights is None and user_state is None)
        if weights is not None:
            kwargs["transform_input"] = True  # torchvision's checkpoints expect its input transform

    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as exc:  # a builder rejecting an argument: the user's num_classes, usually
        raise UsageError(f"model {spec!r}: torchvision could not build it: {_first_line(exc)}") from exc

    if weights is not None:
        state, path = pretrained.load_state_dict(
            weights, weights_dir=options.weights_dir, offline=options.offline, progress=True, what=f"model {spec!r}"
        )
        if name.startswith("densenet"):
            state = _rename_legacy_densenet_keys(state)
        load_state_dict(model, state, f"pretrained checkpoint {path}", f"model {spec!r}")
        description = f"torchvision {name}, pretrained {weights} (from {path})"
    elif user_state is not None:
        load_state_dict(model, user_state, f"--weights {options.weights}", f"model {spec!r}")
        description = f"torchvision {name}, {kwargs['num_classes']} classes, weights from {options.weights}"
    else:
        description = f"torchvision {name}, random init, {kwargs['num_classes']} classes"
    if aux_heads and name == "googlenet":
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    elif aux_heads and name == "inception_v3":
        model.aux_logits, model.AuxLogits = False, None

    input_size = None
    image_size = getattr(model, "image_size", None)  # vision transformers take one size only
    if isinstance(image_size, int):
        input_size = (3, image_size, image_size)
    elif name.startswith("maxvit"):
        input_size = (3, *kwargs.get("input_size", (224, 224)))
    target = _make_target(model, spec, options, mean=mean, std=std, input_size=input_size, description=description)
    if weights is not None:
        from auditkit.data.preprocess import Preprocess

        # The evaluation transform the weights were measured with (e.g. resize 232, crop 224
        # for ResNet50_Weights.IMAGENET1K_V2): real photographs of other sizes get exactly it.
        target.expected_preprocess = Preprocess.coerce(weights.transforms())
    return target


def _torchvision_weights(spec: str, name: str, value: str) -> Any:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except Exception as exc:
        raise UsageError(f"model {spec!r}: torchvision has no pretrained weights for {name}") from exc
    members = [w.name for w in enum]
    prefix, dot, member = value.strip().rpartition(".")
    if dot and prefix != enum.__name__:
        raise UsageError(f"model {spec!r}: weights {value!r} are not {name}'s; expected DEFAULT or one of {members}")
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in members:
        raise UsageError(f"model {spec!r}: {enum.__name__} has no {member!r}; expected DEFAULT or one of {members}")
    return enum[member]


def _rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision's DenseNet checkpoints still use 'norm.1'-style keys from before module names
    # could not contain dots; its builder renames them the same way.
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
        r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


# -- factories: file.py:factory and package.module:factory ------------------------------------


def _load_factory(spec: str, source: str, attr: str, options: ModelOptions) -> Target:
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
            f"model {spec!r}: the factory {attr}() raised {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"model {spec!r}: the factory {attr}() returned {type(model).__name__}, expected a torch.nn.Module"
        )

    description = f"{type(model).__name__} from {source}:{attr}()"
    if options.weights:
        _load_weights_file(model, options.weights, spec)
        description += f", weights from {options.weights}"
    else:
        description += ", its own initial weights"
    return _make_target(model, spec, options, description=description)


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
            f"model {spec!r}: importing {path.resolve()} failed: {type(cause).__name__}: {_first_line(cause)}"
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
        raise UsageError(f"model {spec!r}: importing {name} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"model {spec!r}: importing {name} failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def _accepts_parameter(func: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = parameters.get(name)
    return param is not None and param.kind not in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY)


# -- state_dicts -------------------------------------------------------------------------------

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
    state = _strip_wrapper_prefixes(dict(state), expected.keys(), _WRAPPER_PREFIXES + tuple(extra_prefixes))
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
        raise UsageError(f"{what} does not fit {into}: {_torch_error_text(exc)}") from exc
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


def _load_weights_file(model: nn.Module, path: str, spec: str) -> None:
    load_state_dict(model, read_state_dict(path), f"--weights {path}", f"model {spec!r}")


def _read_state_dict(file: Path, what: str) -> dict[str, torch.Tensor]:
    kind = _file_kind(file)
    if kind != "torch.save":
        raise UsageError(_not_loadable(file, kind, what, STATE_DICT_EXPECTED))
    try:
        obj = _load_tensors_only(file, what)
    except _TensorsOnlyRefused as refused:
        if refused.needs:
            raise UsageError(
                f"{what}: holds pickled Python objects beyond tensors (it needs {refused.needs}: a whole model?), "
                f"refused because unpickling runs arbitrary code; expected {STATE_DICT_EXPECTED}"
            ) from None
        raise UsageError(
            f"{what}: torch's tensors-only loader cannot read it ({refused.reason}; saved with a pickle_protocol "
            f"above 2?); expected {STATE_DICT_EXPECTED} and the default protocol"
        ) from None
    state = _extract_state_dict(obj)
    if state is None:
        raise UsageError(
            f"{what}: holds {type(obj).__name__}, not a state_dict; expected a dict of tensors, or a checkpoint "
            "dict with a 'state_dict', 'model' or 'model_state_dict' key"
        )
    return state


# -- reading PyTorch files safely -----------------------------------------------------------------

# torch.save's legacy (pre-1.6) format opens with a pickled magic number: a 10-byte LONG1.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_WEIGHTS_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _TensorsOnlyRefused(Exception):
    """torch's tensors-only loader refused a sound torch.save file: it needs the Python global
    ``needs`` (a class or function; unpickling it would run code), or, with ``needs`` None,
    pickle features that loader does not read (``reason``)."""

    def __init__(self, needs: str | None, reason: str):
        super().__init__(reason)
        self.needs = needs
        self.reason = reason


def _load_tensors_only(file: Path, what: str) -> Any:
    """``torch.load(file, weights_only=True)`` of a file whose :func:`_file_kind` is torch.save.

    Raises:
        _TensorsOnlyRefused: the file is sound but holds more than tensors and plain containers,
            or uses pickle opcodes that loader does not read.
        UsageError: the file is corrupt or truncated.
    """
    try:
        with warnings.catch_warnings():
            # torch's note about the file's pickle protocol is for whoever saved it
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = _TERMINAL_CODES.sub("", str(exc))
        needs = _UNSUPPORTED_GLOBAL.search(text)
        if needs:
            raise _TensorsOnlyRefused(needs.group(1), f"it needs {needs.group(1)}") from exc
        reason = _WEIGHTS_UNPICKLER_REASON.search(text)
        if reason and reason.group(1).startswith("Unsupported operand"):
            raise _TensorsOnlyRefused(None, reason.group(1).strip()) from exc
        raise UsageError(_corrupt(what, "torch.save file", _torch_error_text(exc))) from exc
    except Exception as exc:
        raise UsageError(_corrupt(what, "torch.save file", _torch_error_text(exc))) from exc


def _not_loadable(file: Path, kind: str, what: str, expected: str) -> str:
    """The one-line message for a file that is not what ``what`` needs, by its :func:`_file_kind`."""
    if kind == "corrupt":
        return _corrupt(what, "zip archive", "its zip directory, at the end of the file, is missing")
    if kind in ("export", "torchscript"):
        return f"{what}: a {_kind_name(kind)} (a whole model), not a state_dict; expected {expected}"
    empty = " (the file is empty)" if file.stat().st_size == 0 else ""
    return f"{what}: not a PyTorch file{empty}; expected {expected}"


def _corrupt(what: str, kind: str, detail: str) -> str:
    return f"{what}: corrupt or truncated {kind} ({detail}); was the download or copy cut short?"


def _torch_error_text(exc: BaseException) -> str:
    """The informative part of a torch error, on one line: the tensors-only unpickler's own
    reason, else the first sentence of the first line; never terminal colour codes or torch's
    advice (such as re-running ``torch.load`` with ``weights_only=False``)."""
    text = _TERMINAL_CODES.sub("", str(exc)).strip()
    reason = _WEIGHTS_UNPICKLER_REASON.search(text)
    if reason:
        text = reason.group(1)
    line = text.splitlines()[0].strip() if text else ""
    sentence = re.split(r"(?<=\w)\.\s", line, maxsplit=1)[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__


def _extract_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
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


def _strip_wrapper_prefixes(
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


# -- model files: torch.export, TorchScript, pickles --------------------------------------------


def _load_file(spec: str, options: ModelOptions) -> Target:
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(
            f"model {spec!r}: no such file, and not a spec form auditkit knows; expected one of: "
            f"{describe_spec_forms()}"
        )
    if path.is_dir():
        raise UsageError(f"model {spec!r} is a directory; expected one of: {describe_spec_forms()}")
    if path.suffix == ".py":
        raise UsageError(f"model {spec!r}: a Python file needs the function that builds the model: {spec}:FACTORY")
    kind = _file_kind(path)
    if kind in ("corrupt", "unknown"):
        raise UsageError(_not_loadable(path, kind, f"model {spec!r}", f"one of: {describe_spec_forms()}"))
    if options.weights and kind in ("export", "torchscript"):
        raise UsageError(
            f"model {spec!r}: a {_kind_name(kind)} carries its own weights; --weights applies to torchvision: and "
            "factory specs"
        )
    if kind == "export":
        return _load_exported(spec, path, options)
    if kind == "torchscript":
        return _load_torchscript(spec, path, options)
    return _load_pickled(spec, path, options)


def _kind_name(kind: str) -> str:
    return {"export": "torch.export archive", "torchscript": "TorchScript file"}.get(kind, kind)


def _file_kind(path: Path) -> str:
    """What the file holds, from its contents: 'export', 'torchscript', 'torch.save', 'corrupt'
    (a zip archive whose directory is missing or damaged: cut short) or 'unknown' (not a PyTorch
    file). A zip archive of no known layout counts as 'export' when named .pt2 (older
    torch.export archives carry no marker)."""
    with open(path, "rb") as handle:
        head = handle.read(32)
    if head.startswith(_ZIP_MAGIC) or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "corrupt"
        inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if "archive_format" in inner or any(n.startswith("models/") for n in inner):
            return "export"
        if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
            return "torchscript"
        if "data.pkl" in inner:
            return "torch.save"
        return "export" if path.suffix.lower() == ".pt2" else "unknown"
    # The legacy format is a pickle (PROTO, 0x80) of torch's magic number; any other pickle is
    # not torch.save's, and torch.load would refuse it.
    return "torch.save" if head[:1] == b"\x80" and _LEGACY_MAGIC in head else "unknown"


def _load_torchscript(spec: str, path: Path, options: ModelOptions) -> Target:
    with warnings.catch_warnings():
        # Deprecation advice for whoever wrote the file, not for the auditor loading it.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"model {spec!r}: not loadable as TorchScript: {_first_line(exc)}") from exc
    original = getattr(model, "original_name", type(model).__name__)
    # Python forward hooks are not supported on ScriptModules: no layers, no Grad-CAM.
    description = f"TorchScript {original} from {path.name} (no layer hooks)"
    return _make_target(model, spec, options, hookable=False, description=description)


def _load_pickled(spec: str, path: Path, options: ModelOptions) -> Target:
    try:
        obj = _load_tensors_only(path, f"model {spec!r}")
    except _TensorsOnlyRefused as refused:
        if not options.trust_pickle:
            if refused.needs is None:
                raise UsageError(
                    f"model {spec!r}: torch's tensors-only loader cannot read this torch.save file "
                    f"({refused.reason}; saved with a pickle_protocol above 2?); expected a TorchScript file or a "
                    "torch.export archive, or a state_dict with --model file.py:factory --weights PATH"
                ) from None
            # It names a Python class or function: loading it would run that code.
            raise UsageError(
                f"model {spec!r} is a pickled Python object that needs {refused.needs}, refused: unpickling runs "
                "arbitrary code; pass --trust-pickle if you trust this file, "
                "or save a state_dict / TorchScript / torch.export archive instead"
            ) from None
    else:
        _refuse_non_module(spec, obj)  # tensors and containers only: never a module
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(
            f"model {spec!r}: unpickling failed: {_torch_error_text(exc)} "
            f"(the classes it names must be importable here)"
        ) from exc
    _refuse_non_module(spec, obj)
    description = f"pickled {type(obj).__name__} from {path.name} (trusted)"
    if options.weights:
        _load_weights_file(obj, options.weights, spec)
        description += f", weights from {options.weights}"
    return _make_target(obj, spec, options, description=description)


def _refuse_non_module(spec: str, obj: Any) -> None:
    if isinstance(obj, nn.Module):
        return
    if _extract_state_dict(obj) is not None:
        raise UsageError(
            f"model {spec!r} holds a state_dict, not a model: give the architecture as --model file.py:factory "
            "--weights PATH"
        )
    raise UsageError(
        f"model {spec!r} holds {type(obj).__name__}, not a model; expected one of: {describe_spec_forms()}"
    )


# -- torch.export archives ----------------------------------------------------------------------


class ExportedProgramModule(nn.Module):
    """A torch.export program as an auditable module.

    An exported program is specialised to its example input's shapes and has its train/eval
    behaviour fixed at export; its module refuses ``.train()``/``.eval()`` and fails its shape
    guards with ``AssertionError``. This wrapper accepts ``.eval()`` as a no-op, reports guard
    failures as ``RuntimeError`` (what :class:`~auditkit.target.Target` expects of a model
    rejecting an input) and, when the batch size was fixed at export, runs any batch in chunks
    of that size, padding the last one by repeating its final image.
    """

    def __init__(self, program: nn.Module, batch_size: int | None = None):
        super().__init__()
        self.program = program
        self.batch_size = batch_size

    def train(self, mode: bool = True) -> "ExportedProgramModule":
        self.training = mode  # the program's own mode was fixed at export
        return self

    def _run(self, x: torch.Tensor) -> Any:
        try:
            return self.program(x)
        except AssertionError as exc:  # shape guards of ExportedProgram.module()
            raise RuntimeError(str(exc)) from exc

    def forward(self, x: torch.Tensor) -> Any:
        n = self.batch_size
        if n is None or x.shape[0] == n:
            return self._run(x)
        outputs = []
        for chunk in x.split(n):
            k = chunk.shape[0]
            if k < n:
                chunk = torch.cat([chunk, chunk[-1:].expand(n - k, *chunk.shape[1:])])
            outputs.append(_first_rows(self._run(chunk), k))
        return _concat_rows(outputs)


def _first_rows(output: Any, k: int) -> Any:
    """``output`` (a tensor, or a tuple, list or dict of them) with each tensor's batch cut to ``k``."""
    if isinstance(output, torch.Tensor):
        return output[:k] if output.ndim else output
    if isinstance(output, Mapping):
        return {key: _first_rows(v, k) for key, v in output.items()}
    if isinstance(output, (tuple, list)):
        parts = [_first_rows(v, k) for v in output]
        return type(output)(*parts) if hasattr(output, "_fields") else type(output)(parts)
    return output


def _concat_rows(outputs: list[Any]) -> Any:
    """The chunks' outputs joined along the batch, keeping their structure (so the Target
    chooses the logits among several outputs as it would for one run)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs) if first.ndim else first
    if isinstance(first, Mapping):
        return {key: _concat_rows([o[key] for o in outputs]) for key in first}
    if isinstance(first, (tuple, list)):
        parts = [_concat_rows([o[i] for o in outputs]) for i in range(len(first))]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    return first


# torch.export logs a failed deserialization as a long traceback before raising its own vaguer
# error ("check the warnings above"): held back while loading, the cause is quoted instead.
_TORCH_EXPORT_LOGGERS = ("torch.export", "torch._export")


@contextlib.contextmanager
def _held_back_logs(names: tuple[str, ...]) -> Iterator[list[logging.LogRecord]]:
    """Hold back what the loggers ``names`` (and their children) log in the block, yielding
    the records: logged as usual after the block succeeds, dropped when it raises (whoever
    catches that says in one line what failed)."""
    held = logging.handlers.BufferingHandler(capacity=1000)
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [held], False
    try:
        yield held.buffer
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
    for record in held.buffer:
        logging.getLogger(record.name).handle(record)


def _load_exported(spec: str, path: Path, options: ModelOptions) -> Target:
    with _held_back_logs(_TORCH_EXPORT_LOGGERS) as logged:
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            causes = [r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1] is not None]
            if causes:
                detail = _torch_error_text(causes[-1])
            elif "warnings above" in str(exc):  # and there were none: nothing in it was a program
                detail = "no exported program found in it"
            else:
                detail = _torch_error_text(exc)
            raise UsageError(
                f"model {spec!r}: not loadable as a torch.export archive ({detail}); is it damaged, or saved by a "
                f"torch other than this {torch.__version__}?"
            ) from exc
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise UsageError(
            f"model {spec!r}: the exported program takes {len(user_inputs)} inputs {user_inputs}; expected one "
            "image batch [B, 3, H, W]"
        )
    example, shape = _exported_example(program, user_inputs[0])
    if example is None or example.ndim != 4:
        shown = None if example is None else list(example.shape)
        raise UsageError(
            f"model {spec!r}: the exported program's input has shape {shown}; expected images [B, 3, H, W]"
        )
    # Exported programs are shape-specialised unless exported with dynamic_shapes; a dimension
    # left dynamic shows up as a SymInt in the input's recorded shape.
    static = [isinstance(s, int) for s in shape] if shape is not None else [True] * 4
    fixed_batch = int(example.shape[0]) if static[0] else None
    input_size = tuple(int(s) for s in example.shape[1:])

    notes = [f"input {list(input_size)}" + (" fixed at export" if all(static[1:]) else " as exported, H/W dynamic")]
    training_ops = _training_mode_ops(program)
    if training_ops:
        notes.append(f"exported in training mode: {' and '.join(training_ops)} as in training")
        warnings.warn(
            f"model {spec!r} was exported in training mode: its {' and '.join(training_ops)} cannot be switched "
            f"to eval behaviour; export after model.eval()",
            stacklevel=2,
        )
    else:
        notes.append("eval mode fixed at export")

    # unflatten() rebuilds the module hierarchy, so forward hooks fire per layer; the flat
    # ExportedProgram.module() has named submodules that its graph never calls.
    module: nn.Module | None = None
    layers_fired = 0
    gradient_ok = False
    with contextlib.suppress(Exception), _held_back_logs(_TORCH_EXPORT_LOGGERS):
        unflattened = torch.export.unflatten(program)
        layers_fired, gradient_ok = _exercise(unflattened, example)
        module = unflattened
    if module is None:
        module = program.module()
        try:
            _, gradient_ok = _exercise(module, example)
        except Exception as exc:
            raise UsageError(
                f"model {spec!r}: the exported program fails on its own example input: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc

    hookable = layers_fired > 0 and fixed_batch is None
    if fixed_batch is not None:
        module = ExportedProgramModule(module, batch_size=fixed_batch)
        notes.append(
            f"batch size fixed at {fixed_batch}, run in chunks; no layer hooks (export with a dynamic batch "
            "dimension for them)"
        )
    elif not hookable:
        module = ExportedProgramModule(module)
        notes.append("no layer hooks")
    if not gradient_ok:
        notes.append("no input gradients")
        warnings.warn(
            f"model {spec!r}: no gradient reaches the input through the exported program; white-box checks will fail",
            stacklevel=2,
        )
    description = f"torch.export program {path.name} ({'; '.join(notes)})"
    return _make_target(module, spec, options, input_size=input_size, hookable=hookable, description=description)


def _exported_example(program: Any, input_name: str) -> tuple[torch.Tensor | None, tuple | None]:
    """The program's example input (or a random one of its recorded shape), and that recorded
    shape: ints where the program is specialised, SymInts where a dimension is dynamic."""
    value = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == input_name:
            value = node.meta.get("val")
            break
    shape = tuple(value.shape) if isinstance(getattr(value, "shape", None), (torch.Size, tuple)) else None
    example_inputs = getattr(program, "example_inputs", None)
    if example_inputs and example_inputs[0] and isinstance(example_inputs[0][0], torch.Tensor):
        return example_inputs[0][0].detach().clone(), shape
    if shape is None:
        return None, None
    dims = [int(s) if isinstance(s, int) else (getattr(s.node, "hint", None) or 2) for s in shape]
    return torch.rand(dims, dtype=getattr(value, "dtype", torch.float32)), shape


def _training_mode_ops(program: Any) -> list[str]:
    found = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        args = list(node.args)
        if "dropout" in target and (True in args[1:] or node.kwargs.get("train") is True):
            found.add("dropout")
        elif "batch_norm" in target and "no_training" not in target:
            index = 3 if "no_stats" in target else 5
            if (len(args) > index and args[index] is True) or node.kwargs.get("training") is True:
                found.add("batch norm")
    return sorted(found)


def _exercise(module: nn.Module, example: torch.Tensor) -> tuple[int, bool]:
    """Run ``module`` once on ``example`` with forward hooks on every submodule; return how many
    submodules fired with a tensor output, and whether a finite gradient reached the input."""
    fired: set[str] = set()
    handles = []

    def recorder(name: str) -> Callable:
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                fired.add(name)

        return hook

    x = example.detach().clone()
    differentiable = x.is_floating_point()
    if differentiable:
        x.requires_grad_(True)
    try:
        for name, sub in module.named_modules():
            if name:
                with contextlib.suppress(RuntimeError, NotImplementedError, AttributeError):
                    handles.append(sub.register_forward_hook(recorder(name)))
        # A program exported in training mode draws dropout masks: keep the caller's RNG as is.
        grad = None
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            # Every floating output counts: which of several outputs are the logits is the Target's call.
            outputs = [t for t in _tensors_in(module(x)) if t.is_floating_point() and t.requires_grad]
            if differentiable and outputs:
                # autograd.grad, not backward(): leave the parameters' .grad untouched.
                total = sum(t.float().sum() for t in outputs)
                (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    gradient_ok = grad is not None and bool(torch.isfinite(grad).all())
    return len(fired), gradient_ok


def _tensors_in(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _tensors_in(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in _tensors_in(v)]
    return [v for v in vars(output).values() if isinstance(v, torch.Tensor)] if hasattr(output, "__dict__") else []


# -- shared ---------------------------------------------------------------------------------------


def _make_target(
    model: nn.Module,
    spec: str,
    options: ModelOptions,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: tuple[int, ...] | None = None,
    hookable: bool = True,
    description: str,
) -> Target:
    mean = options.mean if options.mean is not None else mean
    std = options.std if options.std is not None else std
    try:
        torch.device(options.device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UsageError(f"device {options.device!r} is not a torch device; expected cpu, cuda or cuda:N") from exc
    try:
        target = Target(
            model,
            spec=spec,
            mean=mean,
            std=std,
            device=options.device,
            input_size=input_size,
            hookable=hookable,
            description=description,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"model {spec!r}: bad normalization mean={mean} std={std}; expected 1 or 3 values each, std > 0"
        ) from exc
    if options.num_classes is not None:
        try:
            target.expect_classes(options.num_classes)
        except ValueError as exc:
            raise UsageError(f"model {spec!r}: {exc}") from exc
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
