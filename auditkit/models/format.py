"""What every model format shares: :class:`ModelOptions`, the spec forms, the one parser for
a spec's ``key=value`` options, and building the :class:`~auditkit.target.Target` a format
returns. Each format is a module of :mod:`auditkit.models` that answers ``auditkit_load_model``."""
from __future__ import annotations

import difflib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from auditkit.errors import UsageError
from auditkit.markers import hookimpl
from auditkit.target import Target

SPEC_FORMS: tuple[str, ...] = (
    "torchvision:NAME[?weights=ENUM_NAME|DEFAULT] or timm:NAME[.TAG][?pretrained=true]",
    "path/to/file.py:factory or package.module:factory (state_dict via --weights PATH)",
    "a .pt2 torch.export archive",
    "a TorchScript file (.pt, .pth, .ts, .jit)",
    "a torch.save'd nn.Module (only with --trust-pickle)",
    "model.onnx or an http(s):// endpoint (black-box, optional extra)",
)

HTTP_SCHEMES = ("http://", "https://")
FACTORY_SPEC = re.compile(r"^(?P<source>.+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


@dataclass
class ModelOptions:
    """How to load a model spec; filled from the command line and config.

    Attributes:
        weights: path to a state_dict (``--weights``) for a factory, torchvision or timm spec.
        num_classes: size of the classifier head to build; ``None`` keeps the default
            (1000 for torchvision, timm's for timm, the factory's own default otherwise).
        trust_pickle: allow unpickling a full ``torch.save``'d module (runs arbitrary code).
        device: where :class:`~auditkit.target.Target` puts the model on entry, a
            ``torch.device`` (a string such as ``"cuda:0"`` is converted once, here;
            ``UsageError`` when it names no torch device).
        mean: per-channel normalization mean applied inside the target; overrides the default.
        std: per-channel normalization std applied inside the target; overrides the default.
        weights_dir: a directory searched, before the torch hub cache, for pretrained
            torchvision checkpoints (files named as in the weights' URL).
        offline: never download pretrained weights (also ``AUDITKIT_OFFLINE=1``): a missing
            checkpoint is then an error naming the file to put in the torch hub cache (the
            Hugging Face cache for timm).
        seed: seeds the random initialization of what the spec builds (a ``torchvision:``
            architecture without weights, a factory's model), so the same seed gives the same
            model; drawn on a forked generator, leaving the caller's random stream as it was.
    """

    weights: str | None = None
    num_classes: int | None = None
    trust_pickle: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    weights_dir: str | None = None
    seed: int = 0
    offline: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.device, torch.device):
            try:
                self.device = torch.device(self.device)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise UsageError(f"device {self.device!r} is not a torch device; expected cpu, cuda or cuda:N") from exc


def describe_spec_forms() -> str:
    """The accepted model spec forms, as one line for error messages and help text."""
    return "; ".join(SPEC_FORMS)



def is_http_spec(spec: str) -> bool:
    """True for ``http://`` and ``https://`` specs."""
    return spec.strip().lower().startswith(HTTP_SCHEMES)


def factory_parts(spec: str) -> tuple[str, str] | None:
    """``(source, attribute)`` of a ``path/to/file.py:factory`` or ``package.module:factory``
    spec, else None (``torchvision:NAME``, ``timm:NAME`` and URLs are not factories)."""
    match = FACTORY_SPEC.match(spec)
    if not match or spec.startswith(("torchvision:", "timm:")) or is_http_spec(spec):
        return None
    source = match["source"]
    if source.endswith(".py") or _MODULE_NAME.match(source):
        return source, match["attr"]
    return None


# -- the one option parser: NAME?key=value&... (torchvision:) and PATH#key=value&... (black box) --


@dataclass(frozen=True)
class SpecOption:
    """One ``key=value`` option of a spec: its type (``int``, ``float``, ``str``), a one-line
    help, a lower bound for numbers, the accepted values for strings."""

    kind: type
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()


def split_options(spec: str, known: Mapping[str, SpecOption], separator: str = "#") -> tuple[str, dict[str, Any]]:
    """Split ``base<separator>a=1&b=x`` into the base and typed options.

    :raises UsageError: an unknown option, a repeated one, or a value of the wrong type or
        out of range; the message lists the known options.
    """
    base, sep, query = spec.strip().partition(separator)
    options: dict[str, Any] = {}
    if not sep or not query:
        return base, options
    listing = ", ".join(f"{name} ({opt.help})" for name, opt in known.items())
    for name, raw in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"model {spec!r}: unknown option {name!r}{hint} (options after '{separator}': {listing})")
        if name in options:
            raise UsageError(f"model {spec!r}: option {name!r} is given twice")
        options[name] = _coerce(spec, name, raw, known[name])
    return base, options


def _coerce(spec: str, name: str, raw: str, option: SpecOption) -> Any:
    if option.kind is str:
        if option.choices and raw not in option.choices:
            raise UsageError(f"model {spec!r}: option {name}={raw!r}; expected one of {', '.join(option.choices)}")
        return raw
    try:
        value = option.kind(raw)
    except ValueError:
        raise UsageError(f"model {spec!r}: option {name}={raw!r}; expected {option.kind.__name__} ({option.help})") from None
    if option.minimum is not None and value < option.minimum:
        raise UsageError(f"model {spec!r}: option {name}={raw}; expected at least {option.minimum:g} ({option.help})")
    return value


def refuse_weights(spec: str, options: Any, what: str) -> None:
    """A UsageError when ``--weights`` is given for a model file that carries its own (``what``:
    "a TorchScript file", "an ONNX file", ...)."""
    if getattr(options, "weights", None):
        raise UsageError(
            f"model {spec!r}: {what} carries its own weights; --weights applies to torchvision:, timm: and factory specs"
        )


# -- a format as a plugin ---------------------------------------------------------------------


def model_format(owns: Callable[[str], bool], load: Callable[[str, ModelOptions], Any]) -> Callable[..., Any]:
    """The ``auditkit_load_model`` implementation of a format: None for a spec that ``owns``
    refuses, else ``load(spec, options)`` with the spec stripped and the random
    initialization seeded by ``options.seed`` (on a forked generator: the caller's random
    stream stays as it was). Built-in formats answer last (``trylast``), after any plugin's."""

    @hookimpl(trylast=True)
    def auditkit_load_model(spec: str, options: Any, config: Any) -> Any:
        spec = spec.strip()
        if not spec or not owns(spec):
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(getattr(options, "seed", 0))
            return load(spec, options)

    return auditkit_load_model


def make_target(
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
