"""The built-in ``synthetic:shapes`` dataset: coloured shapes on cluttered backgrounds, with
exact object masks and boxes, and an optional planted shortcut (a class-coloured corner marker)."""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from auditkit.data.base import AuditData, TensorSplit
from auditkit.errors import UsageError

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star", "ellipse", "crescent")
MAX_CLASSES = len(SHAPE_NAMES)
MIN_CLASSES = 2
MIN_SIZE = 16
BACKGROUNDS: tuple[str, ...] = ("clutter", "texture", "plain")

# Object radius (every shape fits inside a circle of this radius) as a fraction of the image
# side: objects span roughly 25-50% of the side, large enough for localization to be meaningful.
RADIUS_RANGE = (0.16, 0.26)

# Marker colours by class: saturated, so the shortcut is easy for a network to pick up.
MARKER_COLOURS = torch.tensor(
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
    ]
)
# Marker corner by class (class % 4): 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left.
MARKER_CORNERS = ("top-left", "top-right", "bottom-right", "bottom-left")

_BLOBS_PER_IMAGE = 6


class ShapesSplit(TensorSplit):
    """A :class:`TensorSplit` of synthetic shapes that also records the planted shortcut.

    ``markers`` is bool [N]: True where the image carries the class-specific corner marker.
    ``marker_boxes`` is float [N,4] (x0, y0, x1, y1, x1/y1 exclusive), NaN where there is no
    marker. The marker is never part of ``masks`` or ``boxes`` and never overlaps the object's box.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor,
        markers: torch.Tensor,
        marker_boxes: torch.Tensor,
    ):
        super().__init__(images, labels, boxes, masks)
        self.markers = markers.bool()
        self.marker_boxes = marker_boxes.float()


def marker_geometry(size: int) -> tuple[int, int, int]:
    """Return ``(side, margin, keep_out)`` in pixels for the marker in a ``size`` x ``size`` image.

    The marker is a ``side`` x ``side`` square ``margin`` pixels from its corner's two edges;
    objects in marked images keep their bounding box out of the ``keep_out`` x ``keep_out``
    corner square, so marker and object never touch.
    """
    side = max(3, round(5 * size / 64))
    margin = max(1, round(2 * size / 64))
    gap = max(1, round(2 * size / 64))
    return side, margin, margin + side + gap


def make_shapes(
    n: int = 64,
    n_train: int | None = None,
    size: int = 64,
    classes: int = 4,
    seed: int = 0,
    spurious: float = 0.0,
    spurious_classes: Sequence[int] | None = None,
    background: str = "clutter",
) -> AuditData:
    """Generate the ``synthetic:shapes`` dataset.

    Each image holds one shape (the first ``classes`` of :data:`SHAPE_NAMES`) of random colour,
    size (about 25-50% of the image side), position and rotation, on a background chosen by
    ``background``: ``"clutter"`` (smooth colour gradients and low-frequency noise, faint
    stripes, and small soft blobs that are not class shapes), ``"texture"`` (the same without
    blobs) or ``"plain"`` (one flat colour per image). Masks are exact (the object is drawn
    with hard edges exactly where its mask is true) and each box is the tight bounding box of
    its mask. Labels cycle through the classes in shuffled order, so counts differ by at most one.

    The output depends only on the arguments. The eval and train splits come from separate
    random streams (seeded from ``(seed, split name)``), so they never share an image.

    Spurious-cue mode: with probability ``spurious``, an image whose class is in
    ``spurious_classes`` (default: all classes) gets a small square marker whose colour
    (:data:`MARKER_COLOURS`) and corner (:data:`MARKER_CORNERS`, ``class % 4``) are functions
    of the class. The marker is not part of the mask or box, and the object is kept clear of
    the marker's corner. Which images carry it is recorded on each split as
    :attr:`ShapesSplit.markers` (bool [N]) and :attr:`ShapesSplit.marker_boxes`.

    Args:
        n: number of evaluation images (at least 1).
        n_train: number of training images; defaults to ``4 * n``; 0 means no train split.
        size: image side in pixels (at least 16).
        classes: number of shape classes, 2 to 8.
        seed: random seed; the same seed gives the same tensors.
        spurious: probability in [0, 1] that an image of a spurious class carries the marker.
        spurious_classes: class indices that may carry the marker; None means all.
        background: ``"clutter"``, ``"texture"`` or ``"plain"``.

    Returns:
        AuditData with float images [N,3,size,size] in [0,1], long labels, float boxes [N,4]
        and bool masks [N,size,size], for both splits (each a :class:`ShapesSplit`).

    Raises:
        UsageError: an argument is out of range.
    """
    n_train = 4 * n if n_train is None else n_train
    _check_arguments(n, n_train, size, classes, spurious, spurious_classes, background)
    marked_classes = list(range(classes)) if spurious_classes is None else sorted({int(c) for c in spurious_classes})

    eval_split = _generate_split(n, size, classes, seed, "eval", spurious, marked_classes, background)
    train_split = None
    if n_train:
        train_split = _generate_split(n_train, size, classes, seed, "train", spurious, marked_classes, background)

    spec = canonical_spec(n, n_train, size, classes, seed, spurious, spurious_classes, background)
    names = list(SHAPE_NAMES[:classes])
    description = (
        f"synthetic shapes ({', '.join(names)}) on {background} backgrounds, "
        f"{n} eval / {n_train} train images at {size}x{size}, seed {seed}"
    )
    if spurious > 0:
        description += (
            f"; spurious corner marker with probability {spurious:g} on classes {marked_classes} "
            "(recorded per split as .markers)"
        )
    data = AuditData(
        name="synthetic:shapes",
        spec=spec,
        eval=eval_split,
        train=train_split,
        num_classes=classes,
        class_names=names,
        has_boxes=True,
        has_masks=True,
        description=description,
    )
    # Unlimited fresh images of the same task, disjoint from both splits, for training baselines.
    data.generator = ShapesStream(
        size=size, classes=classes, seed=seed, spurious=spurious, spurious_classes=spurious_classes, background=background
    )
    return data


def canonical_spec(
    n: int,
    n_train: int,
    size: int,
    classes: int,
    seed: int,
    spurious: float = 0.0,
    spurious_classes: Sequence[int] | None = None,
    background: str = "clutter",
) -> str:
    """The data SPEC that regenerates exactly this dataset; optional settings appear only when not default."""
    parts = [f"n={n}", f"train={n_train}", f"size={size}", f"classes={classes}", f"seed={seed}"]
    if spurious:
        parts.append(f"spurious={float(spurious)!r}")  # repr round-trips the exact float
        if spurious_classes is not None:
            parts.append("spurious_classes=" + ",".join(str(c) for c in sorted({int(c) for c in spurious_classes})))
    if background != "clutter":
        parts.append(f"background={background}")
    return "synthetic:shapes?" + "&".join(parts)


def _check_arguments(
    n: int,
    n_train: int,
    size: int,
    classes: int,
    spurious: float,
    spurious_classes: Sequence[int] | None,
    background: str,
) -> None:
    if n < 1:
        raise UsageError(f"synthetic shapes: n={n} is invalid; expected at least 1 evaluation image")
    if n_train < 0:
        raise UsageError(f"synthetic shapes: n_train={n_train} is invalid; expected 0 or more training images")
    if size < MIN_SIZE:
        raise UsageError(f"synthetic shapes: size={size} is too small; expected at least {MIN_SIZE} pixels")
    if not MIN_CLASSES <= classes <= MAX_CLASSES:
        raise UsageError(
            f"synthetic shapes: classes={classes} is invalid; expected {MIN_CLASSES} to {MAX_CLASSES} "
            f"({', '.join(SHAPE_NAMES)})"
        )
    if not 0.0 <= spurious <= 1.0:
        raise UsageError(f"synthetic shapes: spurious={spurious} is invalid; expected a probability in [0, 1]")
    if spurious_classes is not None:
        bad = [c for c in spurious_classes if not 0 <= int(c) < classes]
        if bad:
            raise UsageError(
                f"synthetic shapes: spurious_classes {bad} are out of range; expected class indices 0 to {classes - 1}"
            )
    if background not in BACKGROUNDS:
        raise UsageError(
            f"synthetic shapes: background={background!r} is unknown; expected one of {', '.join(BACKGROUNDS)}"
        )


def _split_generator(seed: int, split: str) -> torch.Generator:
    # Hashing (seed, split) gives each split its own stream, so eval and train never coincide
    # and changing n for one split leaves the other untouched.
    digest = hashlib.sha256(f"auditkit.synthetic.shapes:{seed}:{split}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _generate_split(
    n: int,
    size: int,
    classes: int,
    seed: int,
    split: str,
    spurious: float,
    marked_classes: list[int],
    background: str,
) -> ShapesSplit:
    g = _split_generator(seed, split)

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g)

    # Every random draw happens for every image, in a fixed order, whatever the options: the
    # same seed gives the same labels, colours and backgrounds with or without markers (only
    # the positions of marked objects move, to keep them clear of the marker).
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    radius = uniform(n, low=RADIUS_RANGE[0], high=RADIUS_RANGE[1]) * size
    angle = uniform(n, high=2 * math.pi)
    position = uniform(n, 2)
    escape_axis = torch.rand(n, generator=g) < 0.5
    marker_draw = torch.rand(n, generator=g)
    object_colour = uniform(n, 3)
    contrast_colour = uniform(n, 3, low=0.3, high=0.5)
    shading = uniform(n, 2, low=-0.15, high=0.15)
    bg = _background(g, n, size, background)
    noise = 0.02 * torch.randn(n, 3, size, size, generator=g)

    has_marker = (marker_draw < spurious) & torch.isin(labels, torch.tensor(marked_classes, dtype=torch.long))
    corner = labels % 4
    side, margin, keep_out = marker_geometry(size)

    # Object centres (pixel units, pixel k covers [k, k+1)). Unmarked: anywhere the whole
    # object fits. Marked: in corner coordinates, one axis starts beyond the keep-out square,
    # so the object's box cannot overlap the marker; then mirror into the class's corner.
    low = radius + 1
    high = size - radius - 1
    free = low[:, None] + (high - low)[:, None] * position
    escape_low = keep_out + radius
    escaped = escape_low[:, None] + (high - escape_low)[:, None] * position
    axis = torch.stack([escape_axis, ~escape_axis], dim=1)
    centre = torch.where(has_marker[:, None] & axis, escaped, free)
    flip_x = has_marker & ((corner == 1) | (corner == 2))
    flip_y = has_marker & ((corner == 2) | (corner == 3))
    cx = torch.where(flip_x, size - centre[:, 0], centre[:, 0])
    cy = torch.where(flip_y, size - centre[:, 1], centre[:, 1])

    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords[None, None, :] - cx[:, None, None]
    dy = coords[None, :, None] - cy[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    r = radius[:, None, None]
    u = (cos * dx + sin * dy) / r
    v = (-sin * dx + cos * dy) / r

    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for cls in range(classes):
        chosen = labels == cls
        if chosen.any():
            masks[chosen] = _SHAPES[SHAPE_NAMES[cls]](u[chosen], v[chosen])

    # Keep the object visible: if its random colour is too close to the background under it,
    # use a colour at least 0.3 per channel away from that background instead.
    area = masks.sum(dim=(1, 2)).clamp(min=1)
    bg_under_object = (bg * masks[:, None]).sum(dim=(2, 3)) / area[:, None]
    too_close = (object_colour - bg_under_object).norm(dim=1) < 0.45
    opposite = torch.where(bg_under_object > 0.5, bg_under_object - contrast_colour, bg_under_object + contrast_colour)
    colour = torch.where(too_close[:, None], opposite, object_colour)
    light = 1 + shading[:, 0, None, None] * u + shading[:, 1, None, None] * v
    object_pixels = (colour[:, :, None, None] * light[:, None]).clamp(0, 1)

    images = torch.where(masks[:, None], object_pixels, bg) + noise

    marker_x0 = torch.where(flip_x, size - margin - side, torch.full_like(cx, margin))
    marker_y0 = torch.where(flip_y, size - margin - side, torch.full_like(cy, margin))
    marker_boxes = torch.stack([marker_x0, marker_y0, marker_x0 + side, marker_y0 + side], dim=1)
    marker_boxes[~has_marker] = float("nan")
    in_marker = (
        has_marker[:, None, None]
        & (coords[None, None, :] >= marker_x0[:, None, None])
        & (coords[None, None, :] < marker_x0[:, None, None] + side)
        & (coords[None, :, None] >= marker_y0[:, None, None])
        & (coords[None, :, None] < marker_y0[:, None, None] + side)
    )
    marker_colour = MARKER_COLOURS[labels][:, :, None, None]
    images = torch.where(in_marker[:, None], marker_colour, images).clamp(0, 1)

    return ShapesSplit(images, labels, _boxes_from_masks(masks), masks, has_marker, marker_boxes)


def _background(g: torch.Generator, n: int, size: int, kind: str) -> torch.Tensor:
    """Float [n,3,size,size] in [0,1]; draws the same random numbers whatever ``kind`` is."""
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    colours = torch.rand(n, 2, 3, generator=g)
    gradient_angle = torch.rand(n, generator=g) * 2 * math.pi
    flat = torch.rand(n, 3, generator=g)
    stripe = torch.rand(n, 4, generator=g)  # amplitude, frequency, angle, phase
    blob = torch.rand(n, _BLOBS_PER_IMAGE, 7, generator=g)  # x, y, sigma, r, g, b, present

    if kind == "plain":
        return flat[:, :, None, None].expand(n, 3, size, size).clone()

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    x, y = coords[None, None, :], coords[None, :, None]
    low_freq = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    cos, sin = torch.cos(gradient_angle)[:, None, None], torch.sin(gradient_angle)[:, None, None]
    t = ((x - 0.5) * cos + (y - 0.5) * sin) / math.sqrt(2) + 0.5
    gradient = colours[:, 0, :, None, None] + (colours[:, 1] - colours[:, 0])[:, :, None, None] * t[:, None]
    bg = 0.5 * low_freq + 0.5 * gradient

    amplitude = 0.12 * stripe[:, 0, None, None]
    frequency = 3 + 5 * stripe[:, 1, None, None]
    s_cos, s_sin = torch.cos(stripe[:, 2] * math.pi)[:, None, None], torch.sin(stripe[:, 2] * math.pi)[:, None, None]
    stripes = amplitude * torch.sin(2 * math.pi * (frequency * (x * s_cos + y * s_sin) + stripe[:, 3, None, None]))
    bg = bg + stripes[:, None]

    if kind == "clutter":
        # Soft-edged blobs, a few pixels wide: distractors that are never one of the hard-edged class shapes.
        for k in range(_BLOBS_PER_IMAGE):
            bx, by = blob[:, k, 0, None, None], blob[:, k, 1, None, None]
            sigma = (1.0 + 1.5 * blob[:, k, 2, None, None]) / 64
            present = (blob[:, k, 6] < 0.7).float()[:, None, None]
            # The Gaussian is separable: two 1-D exps instead of one per pixel.
            spread = 2 * sigma**2
            alpha = 0.85 * present * torch.exp(-((x - bx) ** 2) / spread) * torch.exp(-((y - by) ** 2) / spread)
            bg = bg * (1 - alpha[:, None]) + blob[:, k, 3:6, None, None] * alpha[:, None]
    return bg.clamp(0, 1)


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x0, y0, x1, y1) boxes, x1/y1 exclusive, of bool masks [N,H,W]; NaN for an empty mask."""
    n, h, w = masks.shape
    cols = masks.any(dim=1)
    rows = masks.any(dim=2)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~cols.any(dim=1)] = float("nan")
    return boxes


# Shapes in object coordinates (u, v): the object's radius is 1 and every shape fits in the unit disc.


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 1.0


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.7


def _triangle(u: torch.Tensor, v: torch.Tensor, turn: float = 0.0) -> torch.Tensor:
    # Equilateral triangle inscribed in the unit circle: inside three half-planes at distance 0.5.
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):
        a = math.pi / 2 + turn + 2 * math.pi * k / 3
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
    return inside


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= 0.55**2)


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Five-pointed star: fold the angle into one spike's sector, then test against the edge
    # from the tip (1, 0) to the inner vertex at angle pi/5 and radius 0.45.
    sector = 2 * math.pi / 5
    phi = torch.atan2(v, u)
    folded = torch.remainder(phi + sector / 2, sector) - sector / 2
    rho = torch.sqrt(u * u + v * v)
    px, py = rho * torch.cos(folded), rho * torch.sin(folded).abs()
    tip_x, tip_y = 1.0, 0.0
    inner_x, inner_y = 0.45 * math.cos(sector / 2), 0.45 * math.sin(sector / 2)
    # Same side of the edge as the origin (the origin's cross product is positive).
    cross = (inner_x - tip_x) * (py - tip_y) - (inner_y - tip_y) * (px - tip_x)
    return cross >= 0.0


def _ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + (v / 0.5) ** 2 <= 1.0


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.8**2)


_SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "star": _star,
    "ellipse": _ellipse,
    "crescent": _crescent,
}


# --- a stream of fresh images, for training --------------------------------------------------


class ShapesStream:
    """An endless, deterministic supply of fresh images of one ``synthetic:shapes`` task: the
    same classes, size, background and planted marker as the dataset, drawn from random
    streams of their own (seeded from ``(seed, "stream:<name>")``), so they never coincide with
    the dataset's eval or train images. Generated data is unlimited; training on a stream
    instead of a fixed train split is what lets a network learn the shapes rather than
    memorize a few hundred images.

    :meth:`chunk` ``(index, n)`` is the ``index``-th block of ``n`` images; a chunk depends only
    on the task, ``index`` and ``n``, so a training run that stops earlier sees a prefix of
    what a longer one sees.
    """

    def __init__(
        self,
        size: int = 64,
        classes: int = 4,
        seed: int = 0,
        spurious: float = 0.0,
        spurious_classes: Sequence[int] | None = None,
        background: str = "clutter",
    ):
        _check_arguments(1, 0, size, classes, spurious, spurious_classes, background)
        self.size, self.classes, self.seed = size, classes, seed
        self.spurious, self.background = spurious, background
        self.marked_classes = list(range(classes)) if spurious_classes is None else sorted({int(c) for c in spurious_classes})

    def chunk(self, index: int, n: int) -> ShapesSplit:
        """The ``index``-th block of ``n`` fresh images, labels, boxes, masks and markers."""
        return _generate_split(
            n, self.size, self.classes, self.seed, f"stream:{index}", self.spurious, self.marked_classes, self.background
        )

    def describe(self) -> str:
        marker = f", marker probability {self.spurious:g}" if self.spurious else ""
        return (
            f"fresh synthetic shapes ({self.classes} classes, {self.size} px, {self.background}{marker}, seed {self.seed}), "
            "disjoint from the eval and train images"
        )


def shapes_stream(data: AuditData) -> ShapesStream | None:
    """The :class:`ShapesStream` of the task ``data`` was generated from (set by
    :func:`make_shapes` as ``data.generator``); None for data that was not generated here."""
    return getattr(data, "generator", None)
