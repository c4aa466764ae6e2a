"""What the ONNX and HTTP targets share: which model specs they answer, the options a spec
carries after ``#`` (never sent to a server), and reading scores as probabilities."""
from __future__ import annotations

import difflib
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from auditkit.errors import UsageError

HTTP_SCHEMES = ("http://", "https://")
SCORE_READINGS = ("auto", "probs", "logits")
_PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SpecOption:
    """One ``#name=value`` option: its type (``int``, ``float``, ``str``), a lower bound for
    numbers, the accepted values for strings, and a one-line help."""

    kind: type
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()


def is_http_spec(spec: str) -> bool:
    """True for ``http://`` and ``https://`` specs."""
    return spec.strip().lower().startswith(HTTP_SCHEMES)


def is_onnx_spec(spec: str) -> bool:
    """True for a path ending in ``.onnx`` (options after ``#`` aside)."""
    base = spec.strip().partition("#")[0]
    return base.lower().endswith(".onnx") and not is_http_spec(spec)


def split_options(spec: str, known: Mapping[str, SpecOption]) -> tuple[str, dict[str, Any]]:
    """Split ``base#a=1&b=x`` into the base and typed options.

    :raises UsageError: an unknown option, a repeated one, or a value of the wrong type or
        out of range; the message lists the known options.
    """
    base, sep, fragment = spec.strip().partition("#")
    options: dict[str, Any] = {}
    if not sep or not fragment:
        return base, options
    listing = ", ".join(f"{name} ({opt.help})" for name, opt in known.items())
    for name, raw in urllib.parse.parse_qsl(fragment, keep_blank_values=True, strict_parsing=False):
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"model {spec!r}: unknown option {name!r}{hint} (options after '#': {listing})")
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


def scores_to_probabilities(scores: torch.Tensor, reading: str = "auto") -> torch.Tensor:
    """Rows of probabilities from a model's scores [B,K]. ``"auto"`` keeps rows that already
    are probabilities (every value in [0, 1], each row summing to 1 within 1e-3) and
    softmaxes the batch otherwise (logits); ``"probs"`` and ``"logits"`` force one reading."""
    if reading not in SCORE_READINGS:
        raise ValueError(f"reading must be one of {SCORE_READINGS}, got {reading!r}")
    if reading == "probs":
        return scores.float()
    if reading == "auto":
        in_range = bool(((scores >= -1e-6) & (scores <= 1 + 1e-6)).all())
        sums_to_one = bool(((scores.sum(dim=1) - 1).abs() <= _PROBABILITY_TOLERANCE).all())
        if in_range and sums_to_one:
            return scores.float().clamp(0.0, 1.0)
    return torch.softmax(scores.double(), dim=1).float()
