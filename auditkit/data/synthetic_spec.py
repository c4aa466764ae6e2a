"""Data format ``synthetic:shapes[?n=..&train=..&size=..&classes=..&seed=..&spurious=..&...]``:
the built-in shapes dataset (:func:`auditkit.data.synthetic.make_shapes`), with boxes and masks."""
from __future__ import annotations

from auditkit.data.base import AuditData
from auditkit.data.spec import data_format, fraction_param, int_param, parse_query, reject_unknown, split_query
from auditkit.data.synthetic import BACKGROUNDS, MAX_CLASSES, MIN_CLASSES, MIN_SIZE, make_shapes
from auditkit.errors import UsageError

PREFIX = "synthetic:"
PARAMS = ("n", "train", "size", "classes", "seed", "spurious", "spurious_classes", "background")


def owns(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load(spec: str, *, seed: int, size: int | None) -> AuditData:
    head, query = split_query(spec)
    name = head.removeprefix(PREFIX)
    if name != "shapes":
        raise UsageError(f"unknown synthetic dataset {name!r} in data spec {spec!r}; expected synthetic:shapes")
    params = parse_query(spec, query)
    reject_unknown(spec, params, PARAMS)
    n = int_param(spec, params, "n", 64, minimum=1)
    classes = int_param(spec, params, "classes", 4, minimum=MIN_CLASSES, maximum=MAX_CLASSES)
    spurious_classes = None
    if "spurious_classes" in params:
        raw = params["spurious_classes"]
        try:
            spurious_classes = [int(c) for c in raw.split(",")]
        except ValueError:
            spurious_classes = None
        if spurious_classes is None or not all(0 <= c < classes for c in spurious_classes):
            raise UsageError(
                f"bad value {raw!r} for parameter 'spurious_classes' in data spec {spec!r}; "
                f"expected comma-separated class indices from 0 to {classes - 1}"
            )
    background = params.get("background", "clutter")
    if background not in BACKGROUNDS:
        raise UsageError(
            f"bad value {background!r} for parameter 'background' in data spec {spec!r}; "
            f"expected one of {', '.join(BACKGROUNDS)}"
        )
    return make_shapes(
        n=n,
        n_train=int_param(spec, params, "train", 4 * n, minimum=0),
        size=int_param(spec, params, "size", size if size is not None else 64, minimum=MIN_SIZE, maximum=1024),
        classes=classes,
        seed=int_param(spec, params, "seed", seed, minimum=0),
        spurious=fraction_param(spec, params, "spurious", 0.0),
        spurious_classes=spurious_classes,
        background=background,
    )

auditkit_load_data = data_format(owns, load)
