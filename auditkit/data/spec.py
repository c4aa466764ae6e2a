"""What every data format shares: the accepted forms, the one parser for a spec's
``?key=value`` parameters and their typed values, and a format as a plugin. Each format is a
module of :mod:`auditkit.data` that answers ``auditkit_load_data``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote

from auditkit.data.base import AuditData
from auditkit.data.preprocess import STANDARD_CROP, STANDARD_RESIZE, Preprocess
from auditkit.errors import UsageError
from auditkit.markers import hookimpl

ACCEPTED_FORMS = (
    "synthetic:shapes[?n=..&size=..&classes=..&seed=..&spurious=..&train=..], "
    "an ImageFolder directory (DIR/<class>/* or DIR/train/<class>/* + DIR/val/<class>/*), "
    "a COCO-style .json file, torchvision:NAME[?root=DIR], "
    "path/to/file.py:factory or package.module:factory"
)
_URL = re.compile(r"[A-Za-z][\w+.-]*://")
_NAMED_FORMS = ("synthetic:", "torchvision:")


def is_url(spec: str) -> bool:
    return bool(_URL.match(spec))


def located_path(spec: str) -> tuple[Path, str] | None:
    """The path a file or folder spec names and its query (``PATH?key=value&...``); a path
    that exists as written wins, even if it contains '?' or ':'. None for named forms
    (``synthetic:``, ``torchvision:``) and URLs."""
    if spec.startswith(_NAMED_FORMS) or is_url(spec):
        return None
    if Path(spec).expanduser().exists():
        return Path(spec).expanduser(), ""
    head, query = split_query(spec)
    return Path(head).expanduser(), query


def split_query(spec: str) -> tuple[str, str]:
    head, _, query = spec.partition("?")
    return head, query


def parse_query(spec: str, query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for piece in filter(None, query.split("&")):
        key, eq, value = piece.partition("=")
        if not eq or not key:
            raise UsageError(
                f"malformed parameter {piece!r} in data spec {spec!r}; expected NAME=VALUE pairs joined by '&'"
            )
        if key in params:
            raise UsageError(f"parameter {key!r} is given twice in data spec {spec!r}; expected each parameter once")
        # unquote, not unquote_plus: a '+' in a path means '+', not a space.
        params[key] = unquote(value)
    return params


def reject_unknown(spec: str, params: dict[str, str], accepted: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UsageError(
            f"unknown parameter {unknown[0]!r} in data spec {spec!r}; "
            f"expected one of the parameters {', '.join(accepted)}"
        )


def int_param(
    spec: str, params: dict[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    if name not in params:
        return default
    raw = params[name]
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    try:
        value = int(raw)
    except ValueError:
        raise bad_value(spec, name, raw, expected) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise bad_value(spec, name, raw, expected)
    return value


def bad_value(spec: str, name: str, raw: str, expected: str) -> UsageError:
    return UsageError(f"bad value {raw!r} for parameter {name!r} in data spec {spec!r}; expected {expected}")


def fraction_param(
    spec: str, params: dict[str, str], name: str, default: float, *, open_low: bool = False, open_high: bool = False
) -> float:
    if name not in params:
        return default
    raw = params[name]
    low = "above 0" if open_low else "from 0"
    high = "below 1" if open_high else "at most 1"
    expected = f"a number {low} and {high}" if (open_low or open_high) else "a number from 0 to 1"
    try:
        value = float(raw)
    except ValueError:
        raise bad_value(spec, name, raw, expected) from None
    inside = (0.0 < value if open_low else 0.0 <= value) and (value < 1.0 if open_high else value <= 1.0)
    if not inside:
        raise bad_value(spec, name, raw, expected)
    return value


def train_fraction_param(spec: str, params: dict[str, str]) -> float | None:
    """The share to hold out for training that ``train_fraction`` or ``eval_fraction``
    (= 1 - train_fraction) asks for; None when neither is given, 0 for "evaluate all"."""
    if "eval_fraction" in params and "train_fraction" in params:
        raise UsageError(f"data spec {spec!r} gives both 'eval_fraction' and 'train_fraction'; expected one of them")
    if "eval_fraction" in params:
        return 1.0 - fraction_param(spec, params, "eval_fraction", 1.0, open_low=True)
    if "train_fraction" in params:
        return fraction_param(spec, params, "train_fraction", 0.0, open_high=True)
    return None


def preprocess_param(spec: str, params: dict[str, str], size: int | None) -> Preprocess | None:
    """The image size the spec asks for (``size=N``, or ``crop=N[&resize=M]``), else the
    ``size`` argument as a square, else None (decided from the images)."""
    if "size" in params and ("crop" in params or "resize" in params):
        raise UsageError(
            f"data spec {spec!r} gives both 'size' and 'crop'/'resize'; expected size=N (resize to N x N) "
            "or crop=N[&resize=M] (shorter side to M, then the central N x N)"
        )
    if "resize" in params and "crop" not in params:
        raise UsageError(
            f"parameter 'resize' in data spec {spec!r} needs 'crop'; expected resize=M&crop=N "
            "(shorter side to M, then the central N x N), e.g. resize=256&crop=224"
        )
    if "crop" in params:
        crop = int_param(spec, params, "crop", STANDARD_CROP, minimum=8, maximum=4096)
        default_resize = round(crop * STANDARD_RESIZE / STANDARD_CROP)
        resize = int_param(spec, params, "resize", default_resize, minimum=crop, maximum=8192)
        return Preprocess.center_crop(crop, resize)
    side = size_param(spec, params, size, None)
    return None if side is None else Preprocess.resized(side)


def size_param(spec: str, params: dict[str, str], size: int | None, default: int | None) -> int | None:
    fallback = size if size is not None else default
    if "size" not in params:
        return fallback
    return int_param(spec, params, "size", 0, minimum=8, maximum=4096)


def looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~")) or Path(text).suffix.lower() in {".json", ".py"}



# -- a format as a plugin ---------------------------------------------------------------------


def load_if_owned(
    spec: str, owns: Callable[[str], bool], load: Callable[..., AuditData], *, seed: int, size: int | None
) -> AuditData | None:
    """``load(spec, seed=, size=)`` with the spec stripped, or None when ``owns`` refuses it."""
    spec = spec.strip()
    return load(spec, seed=seed, size=size) if spec and owns(spec) else None


def data_format(owns: Callable[[str], bool], load: Callable[..., AuditData]) -> Callable[..., Any]:
    """The ``auditkit_load_data`` implementation of a format (see :func:`load_if_owned`), seeded
    by the config. Built-in formats answer last (``trylast``), after any plugin's."""

    @hookimpl(trylast=True)
    def auditkit_load_data(spec: str, config: Any) -> Any:
        return load_if_owned(spec, owns, load, seed=config.seed, size=None)

    return auditkit_load_data
