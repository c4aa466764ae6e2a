"""Turn a data SPEC (``--data``) into AuditData: the built-in synthetic shapes, an ImageFolder
directory, a COCO-style JSON file, a torchvision dataset on disk, or a user factory."""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import math
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote

import numpy as np
import torch
from PIL import Image, ImageFile, JpegImagePlugin, UnidentifiedImageError

from auditkit.data.base import MAX_SIZE_SCAN, AuditData, PixelRangeError, Split
from auditkit.data.preprocess import STANDARD_CROP, STANDARD_RESIZE, Preprocess
from auditkit.data.synthetic import BACKGROUNDS, MAX_CLASSES, MIN_CLASSES, MIN_SIZE, make_shapes
from auditkit.errors import UsageError
from auditkit.importing import NotPythonSource, SourceFileRaised, import_source_file
from auditkit.localization import polygon_mask

ACCEPTED_FORMS = (
    "synthetic:shapes[?n=..&size=..&classes=..&seed=..&spurious=..&train=..], "
    "an ImageFolder directory (DIR/<class>/* or DIR/train/<class>/* + DIR/val/<class>/*), "
    "a COCO-style .json file, torchvision:NAME[?root=DIR], "
    "path/to/file.py:factory or package.module:factory"
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
DEFAULT_TORCHVISION_ROOT = "data"
EVAL_FOLDER_NAMES = ("val", "valid", "validation", "test")
TRAIN_SPLIT_VALUES = frozenset({"train", "training"})
EVAL_SPLIT_VALUES = frozenset({"val", "valid", "validation", "test", "eval"})
# The warning about unreadable images names this many files; the rest are counted.
NAMED_UNREADABLE = 5


def load_data(spec: str, *, seed: int = 0, size: int | None = None) -> AuditData:
    """Load the data named by ``spec``.

    Accepted forms:

    - ``synthetic:shapes[?n=..&train=..&size=..&classes=..&seed=..&spurious=..&spurious_classes=..&background=..]``:
      the built-in dataset (:func:`auditkit.data.synthetic.make_shapes`); ``seed`` defaults
      to the ``seed`` argument and ``size`` to the ``size`` argument, else 64.
    - ``DIR[?size=..|crop=..&resize=..][&eval_fraction=..|train_fraction=..]``: an ImageFolder
      directory, either ``DIR/train/<class>/*`` with ``DIR/val/<class>/*`` (or ``valid/``,
      ``validation/``, ``test/``), or ``DIR/<class>/*`` (or only one of ``train/``, ``val/``):
      without both train and val folders every image is evaluated and there is no train
      split. ``train_fraction=F`` (or ``eval_fraction=1-F``) holds out the share F, chosen by
      a hash of each file's relative path, as the train split. Images load lazily, as RGB in
      [0,1], at their native size (see "Image size" below).
    - ``FILE.json[?size=..|crop=..&resize=..&root=..&eval_fraction=..|train_fraction=..]``: a
      COCO-style file. Each annotated image is one sample labelled with the category of its
      largest annotation; its boxes are every annotation of that category (the objects the
      label names; the pointing game hits any of them) and its mask, when every kept
      annotation has polygon segmentation, is the union of their polygons. Images are found
      under ``root`` (default: the JSON's folder). A per-image ``split`` field
      (``"train"``/``"val"``) decides the split; images without one are evaluated, or split
      by ``train_fraction`` (a hash of the image id) when no image has one. Boxes are checked
      against their file's size first: one with zero or negative width/height, or wholly
      outside its image, is dropped (one warning counts them by reason), one partly outside is
      clipped, and an image left without a box is left out.
    - ``torchvision:NAME[?root=..&size=..|crop=..&resize=..]``: a torchvision dataset already
      on disk (never downloaded), ``train=True``/``split="train"`` as the train split and the
      test split for evaluation; default root ``./data``.
    - ``path/to/file.py:factory`` or ``package.module:factory``: ``factory()`` (given ``seed``
      and ``size`` when it accepts them by those names) returns an AuditData, or a
      ``(train_dataset, eval_dataset, num_classes)`` tuple whose datasets yield ``(image, label)``
      pairs or dicts as described in :class:`auditkit.data.base.Split`; ``train_dataset`` may
      be None.

    Image size (files and datasets): ``size=N`` resizes every image to N x N (the ``size``
    argument is its default); ``crop=N[&resize=M]`` resizes the shorter side to M (default
    N * 256/224, rounded) and keeps the central N x N, torchvision's ImageNet evaluation
    transform at M=256, N=224. Otherwise, once the model is known (:meth:`AuditData.fit_to`):
    the model's own evaluation transform when it declares one (pretrained torchvision
    weights); else the native size when the evaluation images share one the model takes;
    else the model's fixed input size, resized and center-cropped; else 256 -> 224.
    ``data.preprocessing`` says what was done, and the terminal says it when auditkit chose.

    Pixels: every route yields float images in [0,1]; uint8 images are divided by 255, and
    values outside [0,1] (already normalized, or 0-255 floats) are a UsageError, never clamped.

    Classes: every route refuses data with fewer than two classes (``num_classes``, or for
    an ImageFolder or COCO file the labels of the evaluation images): with one class any model
    that answers it scores 1.0 on every check.

    Image files (ImageFolder and COCO) are each decoded once when loaded: files that do not
    decode (truncated, not an image, corrupt) are left out with one warning that counts them
    and names the first few; a file with more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` is
    a UsageError ("image too large").

    Args:
        spec: the data SPEC.
        seed: the default seed for generated data.
        size: the default square side for data that is resized; ``?size=`` or ``?crop=`` in
            the spec wins. None: native sizes.

    Returns:
        The loaded AuditData.

    Raises:
        UsageError: the spec is malformed, a path is missing, a parameter is unknown or has a
            bad value, the data cannot be read (no evaluation image decodes), an image is too
            large, images lie outside [0,1], the evaluation split is empty, or the data has
            fewer than two classes.
    """
    spec = spec.strip()
    if not spec:
        raise UsageError(f"empty data spec; expected one of: {ACCEPTED_FORMS}")
    if spec.startswith("synthetic:"):
        return _load_synthetic(spec, seed=seed, size=size)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec, size=size)

    if re.match(r"[A-Za-z][\w+.-]*://", spec):
        raise UsageError(f"unknown data spec {spec!r}: URLs are not data sources; expected one of: {ACCEPTED_FORMS}")

    # A path that exists as written wins, even if it contains '?' or ':'.
    whole = Path(spec).expanduser()
    path_text, query = (spec, "") if whole.exists() else _split_query(spec)
    path = Path(path_text).expanduser()
    if path.is_dir():
        return _load_image_folder(spec, path, _parse_query(spec, query), size=size)
    if path.is_file() and path.suffix.lower() == ".json":
        return _load_coco(spec, path, _parse_query(spec, query), size=size)
    if path.is_file():
        raise UsageError(
            f"data file {str(path)!r} is not a COCO-style .json file; expected one of: {ACCEPTED_FORMS}"
        )

    factory_match = re.fullmatch(r"(?P<target>.+):(?P<attr>[A-Za-z_]\w*)", spec)
    if factory_match:
        target = factory_match["target"]
        if target.endswith(".py") or re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", target):
            return _load_factory(spec, target, factory_match["attr"], seed=seed, size=size)

    if _looks_like_path(path_text):
        raise UsageError(
            f"data path {path_text!r} does not exist; expected an ImageFolder directory or a COCO .json file"
        )
    raise UsageError(f"unknown data spec {spec!r} (and no such path); expected one of: {ACCEPTED_FORMS}")


# --- spec parsing ---------------------------------------------------------------------------


def _split_query(spec: str) -> tuple[str, str]:
    head, _, query = spec.partition("?")
    return head, query


def _parse_query(spec: str, query: str) -> dict[str, str]:
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


def _reject_unknown(spec: str, params: dict[str, str], accepted: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UsageError(
            f"unknown parameter {unknown[0]!r} in data spec {spec!r}; "
            f"expected one of the parameters {', '.join(accepted)}"
        )


def _int_param(
    spec: str, params: dict[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    if name not in params:
        return default
    raw = params[name]
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    try:
        value = int(raw)
    except ValueError:
        raise _bad_value(spec, name, raw, expected) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise _bad_value(spec, name, raw, expected)
    return value


def _bad_value(spec: str, name: str, raw: str, expected: str) -> UsageError:
    return UsageError(f"bad value {raw!r} for parameter {name!r} in data spec {spec!r}; expected {expected}")


def _fraction_param(
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
        raise _bad_value(spec, name, raw, expected) from None
    inside = (0.0 < value if open_low else 0.0 <= value) and (value < 1.0 if open_high else value <= 1.0)
    if not inside:
        raise _bad_value(spec, name, raw, expected)
    return value


def _train_fraction_param(spec: str, params: dict[str, str]) -> float | None:
    """The share to hold out for training that ``train_fraction`` or ``eval_fraction``
    (= 1 - train_fraction) asks for; None when neither is given, 0 for "evaluate all"."""
    if "eval_fraction" in params and "train_fraction" in params:
        raise UsageError(f"data spec {spec!r} gives both 'eval_fraction' and 'train_fraction'; expected one of them")
    if "eval_fraction" in params:
        return 1.0 - _fraction_param(spec, params, "eval_fraction", 1.0, open_low=True)
    if "train_fraction" in params:
        return _fraction_param(spec, params, "train_fraction", 0.0, open_high=True)
    return None


def _preprocess_param(spec: str, params: dict[str, str], size: int | None) -> Preprocess | None:
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
        crop = _int_param(spec, params, "crop", STANDARD_CROP, minimum=8, maximum=4096)
        default_resize = round(crop * STANDARD_RESIZE / STANDARD_CROP)
        resize = _int_param(spec, params, "resize", default_resize, minimum=crop, maximum=8192)
        return Preprocess.center_crop(crop, resize)
    side = _size_param(spec, params, size, None)
    return None if side is None else Preprocess.resized(side)


def _size_param(spec: str, params: dict[str, str], size: int | None, default: int | None) -> int | None:
    fallback = size if size is not None else default
    if "size" not in params:
        return fallback
    return _int_param(spec, params, "size", 0, minimum=8, maximum=4096)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~")) or Path(text).suffix.lower() in {".json", ".py"}


# --- synthetic ------------------------------------------------------------------------------

_SYNTHETIC_PARAMS = ("n", "train", "size", "classes", "seed", "spurious", "spurious_classes", "background")


def _load_synthetic(spec: str, *, seed: int, size: int | None) -> AuditData:
    head, query = _split_query(spec)
    name = head.removeprefix("synthetic:")
    if name != "shapes":
        raise UsageError(f"unknown synthetic dataset {name!r} in data spec {spec!r}; expected synthetic:shapes")
    params = _parse_query(spec, query)
    _reject_unknown(spec, params, _SYNTHETIC_PARAMS)
    n = _int_param(spec, params, "n", 64, minimum=1)
    classes = _int_param(spec, params, "classes", 4, minimum=MIN_CLASSES, maximum=MAX_CLASSES)
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
        n_train=_int_param(spec, params, "train", 4 * n, minimum=0),
        size=_int_param(spec, params, "size", size if size is not None else 64, minimum=MIN_SIZE, maximum=1024),
        classes=classes,
        seed=_int_param(spec, params, "seed", seed, minimum=0),
        spurious=_fraction_param(spec, params, "spurious", 0.0),
        spurious_classes=spurious_classes,
        background=background,
    )


# --- image files (ImageFolder and COCO) -----------------------------------------------------


class ImageFileSplit:
    """A split of image files, loaded lazily: each item is read, converted to RGB in [0,1] and
    brought to size by ``preprocess`` (default: native size) when it is asked for.

    ``boxes`` (per item, float [M,4] as (x0, y0, x1, y1), x1/y1 exclusive, in the file's pixel
    coordinates) and ``polygons`` (per item, a list of COCO polygons, flat [x0, y0, x1, y1, ...]
    lists in the file's pixel coordinates, whose union is the object mask) are optional; when
    given they move with exactly the image's geometry and are returned as ``boxes`` (float
    [M',4], clipped to the image, boxes cropped away dropped) and ``mask`` (bool [H,W]).
    ``item_keys`` name each item stably (default: its path) for hash-chosen train splits.
    ``sizes`` are the files' (width, height) when already known (the load-time check reads
    them); else they are read from the file headers when first asked for.

    Raises (when an item or the sizes are read):
        UsageError: a file cannot be read, or has more pixels than PIL's
            ``Image.MAX_IMAGE_PIXELS`` ("image too large").
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        preprocess: Preprocess | None = None,
        boxes: Sequence[Any] | None = None,
        polygons: Sequence[list[list[float]]] | None = None,
        item_keys: Sequence[str] | None = None,
        item_key_name: str = "file path",
        sizes: Sequence[tuple[int, int]] | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels)
        self.preprocess = preprocess or Preprocess.native()
        self.boxes = None if boxes is None else [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        self.polygons = None if polygons is None else list(polygons)
        self.item_keys = list(item_keys) if item_keys is not None else [p.as_posix() for p in self.paths]
        self.item_key_name = item_key_name
        self._sizes: list[tuple[int, int]] | None = None if sizes is None else [tuple(s) for s in sizes]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def max_boxes(self) -> int:
        return max((int(b.shape[0]) for b in self.boxes), default=0) if self.boxes is not None else 0

    def native_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each file, read from its header (no decoding); cached."""
        if self._sizes is None:
            sizes = []
            for path in self.paths:
                try:
                    with Image.open(path) as raw:
                        sizes.append((int(raw.size[0]), int(raw.size[1])))
                except Image.DecompressionBombError as exc:
                    raise _too_large_error([(path, _declared_size(path))]) from exc
                except OSError as exc:
                    raise UsageError(f"cannot read image {str(path)!r}: {exc}; expected a readable image file") from exc
            self._sizes = sizes
        return list(self._sizes)

    def with_preprocess(self, preprocess: Preprocess) -> "ImageFileSplit":
        """A copy that brings its images to size with ``preprocess``."""
        out = copy.copy(self)
        out.preprocess = preprocess
        return out

    def subset(self, indices: Sequence[int]) -> "ImageFileSplit":
        """The items at ``indices``, in that order, with the same preprocessing."""
        idx = list(indices)
        out = copy.copy(self)
        out.paths = [self.paths[i] for i in idx]
        out.labels = [self.labels[i] for i in idx]
        out.item_keys = [self.item_keys[i] for i in idx]
        out.boxes = None if self.boxes is None else [self.boxes[i] for i in idx]
        out.polygons = None if self.polygons is None else [self.polygons[i] for i in idx]
        out._sizes = None if self._sizes is None else [self._sizes[i] for i in idx]
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            with Image.open(path) as raw:
                image = pil_to_tensor(raw)
        except Image.DecompressionBombError as exc:
            raise _too_large_error([(path, _declared_size(path))]) from exc
        except OSError as exc:
            raise UsageError(f"cannot read image {str(path)!r}: {exc}; expected a readable image file") from exc
        geometry = self.preprocess.geometry(int(image.shape[-1]), int(image.shape[-2]))
        item: dict[str, Any] = {"image": self.preprocess.apply_image(image, geometry), "label": self.labels[i]}
        if self.boxes is not None:
            item["boxes"] = geometry.boxes(self.boxes[i])
        if self.polygons is not None:
            moved = [geometry.points(torch.tensor(flat[: len(flat) // 2 * 2]).reshape(-1, 2)) for flat in self.polygons[i]]
            item["mask"] = polygon_mask(moved, geometry.out_height, geometry.out_width)
        return item


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as float [3,H,W] RGB in [0,1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


# --- image files: the load-time check -------------------------------------------------------
# Every file is decoded once when the data is loaded, so a damaged file is found (and named)
# before any check runs instead of failing one check with a traceback.


def _pixel_limit() -> int | None:
    limit = Image.MAX_IMAGE_PIXELS  # read at call time: a user who changed PIL's limit keeps their choice
    return None if limit is None else int(limit)


def _check_image_file(path: Path, limit: int | None) -> tuple[tuple[int, int] | None, str | None]:
    """Decode ``path`` once: its (width, height) and None when it decodes, else the declared
    size (when known) and why it cannot be used ("too large", "truncated", "not an image",
    "corrupt", "not readable")."""
    try:
        with Image.open(path) as image:
            size = (int(image.size[0]), int(image.size[1]))
            if limit is not None and size[0] * size[1] > limit:
                return size, "too large"
            if isinstance(image, JpegImagePlugin.JpegImageFile):
                # libjpeg decodes at 1/8 scale: it still reads every entropy-coded byte (a cut
                # or damaged stream still fails) at about half the cost of a full decode.
                image.draft(image.mode, (1, 1))
            image.load()
        return size, None
    except Image.DecompressionBombError:
        return _declared_size(path), "too large"
    except UnidentifiedImageError:
        return None, "not an image"
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            return None, "not readable"
        return None, "truncated" if "truncated" in str(exc) else "corrupt"
    except Exception:  # a decoder's SyntaxError, ValueError, struct.error, ...: the file is damaged
        return None, "corrupt"


def _declared_size(path: Path) -> tuple[int, int] | None:
    """The (width, height) a file's header declares, read past PIL's decompression-bomb guard
    (which refuses to open it) by asking the format plugins directly, as ``Image.open`` does;
    None when no plugin reads it."""
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                if accept is not None and not accept(prefix):
                    continue
                fp.seek(0)
                try:
                    image = factory(fp, str(path))
                except Exception:  # not this format after all: try the next, as Image.open does
                    continue
                return int(image.size[0]), int(image.size[1])
    except OSError:
        pass
    return None


@contextlib.contextmanager
def _strict_decoding() -> Any:
    # PIL's global LOAD_TRUNCATED_IMAGES would let a cut file decode (padded with grey) and
    # pass as good: the check turns it off while it runs and restores it. PIL's warning about
    # large images is silenced here because the check reports those as an error itself.
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _check_image_files(paths: Sequence[Path]) -> tuple[list[tuple[int, int] | None], list[tuple[Path, str]]]:
    """Decode every file in ``paths`` once, at load: per file its (width, height), or None
    when it does not decode; and the files that do not, each with why ("truncated", "not an
    image", "corrupt", "not readable"), for the caller to leave out and report.

    PIL's ``LOAD_TRUNCATED_IMAGES`` is ignored: a truncated file is never taken as good. JPEGs
    are decoded at 1/8 scale (every byte of the compressed stream is still read); the files
    are decoded on a few threads (PIL releases the GIL while decoding).

    Raises:
        UsageError: a file has more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` ("image too
            large"): such a file is a decompression bomb or must be downsized; unlike a
            damaged file it is not left out quietly.
    """
    limit = _pixel_limit()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(8, cores))
    with _strict_decoding():
        if workers == 1 or len(paths) < 2 * workers:
            results = [_check_image_file(p, limit) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_check_image_file, paths, [limit] * len(paths)))

    too_large = [(path, size) for path, (size, reason) in zip(paths, results) if reason == "too large"]
    if too_large:
        raise _too_large_error(too_large)
    unreadable = [(path, reason) for path, (_, reason) in zip(paths, results) if reason is not None]
    return [size if reason is None else None for size, reason in results], unreadable


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _unreadable_summary(unreadable: list[tuple[Path, str]], total: int, root: Path) -> str:
    """"2 of 14 images cannot be read (1 truncated, 1 not an image): cat/a.jpg (truncated),
    cat/b.jpg (not an image)", naming the first :data:`NAMED_UNREADABLE` relative to ``root``."""
    counts = Counter(reason for _, reason in unreadable)
    by_reason = ", ".join(f"{n:,} {reason}" for reason, n in counts.most_common())
    named = ", ".join(f"{_relative_name(p, root)} ({reason})" for p, reason in unreadable[:NAMED_UNREADABLE])
    more = len(unreadable) - NAMED_UNREADABLE
    if more > 0:
        named += f" and {more:,} more"
    return f"{len(unreadable):,} of {total:,} images cannot be read ({by_reason}): {named}"


def _too_large_error(files: list[tuple[Path, tuple[int, int] | None]]) -> UsageError:
    path, size = files[0]
    limit = _pixel_limit()
    dims = "too large to open" if size is None else f"{size[0]}x{size[1]} ({size[0] * size[1]:,} pixels)"
    limit_text = "PIL's limit" if limit is None else f"the limit of {limit:,} pixels"
    others = ""
    if len(files) > 1:
        others = f"; {len(files) - 1:,} more too large: " + ", ".join(str(p) for p, _ in files[1:NAMED_UNREADABLE])
        if len(files) > NAMED_UNREADABLE:
            others += " ..."
    return UsageError(
        f"image too large: {str(path)!r} is {dims}, above {limit_text} "
        f"(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs){others}; "
        "expected smaller images: downsize or remove it"
    )


def _require_two_classes(labels: Sequence[int], class_names: Sequence[str], source: str, expected: str) -> None:
    """A UsageError unless the evaluation ``labels`` hold at least two classes: with one, any
    model that answers it scores 1.0 everywhere."""
    present = Counter(labels)
    if len(present) >= MIN_CLASSES:
        return
    (label, n), = present.most_common(1)
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    raise UsageError(
        f"{source} has evaluation images of one class only ({name!r}, {n:,} images); "
        f"at least two classes are needed: {expected}"
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_image_folder(spec: str, root: Path, params: dict[str, str], *, size: int | None) -> AuditData:
    _reject_unknown(spec, params, ("size", "resize", "crop", "eval_fraction", "train_fraction"))
    preprocess = _preprocess_param(spec, params, size)
    train_fraction = _train_fraction_param(spec, params)

    train_dir = root / "train"
    eval_dir = next((root / name for name in EVAL_FOLDER_NAMES if (root / name).is_dir()), None)
    train_items: list[tuple[Path, int]] = []
    if train_dir.is_dir() and eval_dir is not None:
        if train_fraction is not None:
            given = "eval_fraction" if "eval_fraction" in params else "train_fraction"
            raise UsageError(
                f"parameter {given!r} in data spec {spec!r} does not apply: {root} has train/ and "
                f"{eval_dir.name}/ folders, which decide the split; expected no {given}"
            )
        layout = f"train/ and {eval_dir.name}/ folders"
        class_names, index = _class_index(sorted({name for d in (train_dir, eval_dir) for name in _class_folders(d)}))
        train_items = _folder_items(train_dir, index)
        eval_folder = eval_dir
    elif train_dir.is_dir() or eval_dir is not None:
        # One split folder only: it is the data to audit, all of it.
        eval_folder = eval_dir if eval_dir is not None else train_dir
        layout = f"{eval_folder.name}/ folder only, every image evaluated"
        class_names, index = _class_index(_class_folders(eval_folder))
    else:
        layout = "class folders, every image evaluated"
        eval_folder = root
        class_names, index = _class_index(_class_folders(root))
    eval_items = _folder_items(eval_folder, index)

    if not train_items and not eval_items:
        raise UsageError(
            f"no images found in {str(root)!r}; expected {root}/<class>/*.png (or .jpg, ...) "
            f"or {root}/train/<class>/* and {root}/val/<class>/*"
        )
    if not eval_items:
        raise UsageError(f"data {spec!r} has no evaluation images; expected a non-empty val/ or test/ folder")

    # Decode every file once now: damaged files are left out (one warning), not found by a check.
    sizes, unreadable = _check_image_files([p for p, _ in train_items + eval_items])
    train_sizes, eval_sizes = sizes[: len(train_items)], sizes[len(train_items) :]
    readable_eval = [(p, c, s) for (p, c), s in zip(eval_items, eval_sizes) if s is not None]
    if not readable_eval:
        raise UsageError(
            f"cannot read any evaluation image in {str(eval_folder)!r}: "
            f"{_unreadable_summary(unreadable, len(sizes), root)}; expected image files that PIL can decode"
        )
    if unreadable:
        warnings.warn(
            f"ImageFolder {root}: {_unreadable_summary(unreadable, len(sizes), root)}; they are left out of the audit"
        )
    train_items = [(p, c, s) for (p, c), s in zip(train_items, train_sizes) if s is not None]
    eval_items = readable_eval
    _require_two_classes(
        [c for _, c, _ in eval_items],
        class_names,
        f"ImageFolder {str(eval_folder)!r}",
        f"expected a folder of images per class, {eval_folder}/<class>/*",
    )

    def to_split(items: list[tuple[Path, int, tuple[int, int]]]) -> ImageFileSplit:
        return ImageFileSplit(
            [p for p, _, _ in items],
            [c for _, c, _ in items],
            preprocess,
            item_keys=[p.relative_to(root).as_posix() for p, _, _ in items],
            sizes=[s for _, _, s in items],
        )

    data = AuditData(
        name=spec,
        spec=spec,
        eval=to_split(eval_items),
        train=to_split(train_items) if train_items else None,
        num_classes=len(class_names),
        class_names=class_names,
        preprocess=preprocess,
        train_split_hint=f"Give {root}/train and {root}/val to evaluate every image.",
    )
    if train_fraction:
        n_train = data._carve(train_fraction)
        layout = f"class folders, {n_train} of {len(eval_items)} images held out for training by a hash of each file path"
    data.description = f"ImageFolder {root} ({layout}), {len(class_names)} classes"
    return data


def _class_index(folders: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names (one per class index) and the index of each class folder. Folders named by
    non-negative integers (``0243/``, as ImageNet-index layouts are) are those class indices,
    so a subset of a 1000-class task lines up with the model's outputs; any other names are
    sorted and numbered from 0, as torchvision's ImageFolder does."""
    if folders and all(name.isdecimal() for name in folders):
        numbers = {name: int(name) for name in folders}
        if len(set(numbers.values())) == len(numbers):
            by_index = {k: name for name, k in numbers.items()}
            return [by_index.get(k, str(k)) for k in range(max(numbers.values()) + 1)], numbers
    return list(folders), {name: k for k, name in enumerate(folders)}


def _folder_items(folder: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    items = []
    for name in _class_folders(folder):
        if name in index:
            items.extend((path, index[name]) for path in _image_files(folder / name))
    return items


def _load_coco(spec: str, json_path: Path, params: dict[str, str], *, size: int | None) -> AuditData:
    _reject_unknown(spec, params, ("size", "resize", "crop", "root", "eval_fraction", "train_fraction"))
    preprocess = _preprocess_param(spec, params, size)
    train_fraction = _train_fraction_param(spec, params)
    image_root = Path(params["root"]).expanduser() if "root" in params else json_path.parent
    if not image_root.is_dir():
        raise UsageError(f"image root {str(image_root)!r} for data spec {spec!r} does not exist; expected a directory")

    try:
        document = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read COCO file {str(json_path)!r}: {exc}; expected a JSON document") from exc
    required = ("images", "annotations", "categories")
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in required):
        raise UsageError(
            f"COCO file {str(json_path)!r} lacks the lists 'images', 'annotations' and 'categories'; "
            "expected a COCO-style detection file"
        )

    try:
        categories = sorted(document["categories"], key=lambda c: c["id"])
        class_of = {c["id"]: k for k, c in enumerate(categories)}
        class_names = [str(c.get("name", c["id"])) for c in categories]
        annotations_of: dict[Any, list[dict[str, Any]]] = {}
        for ann in document["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann["category_id"] not in class_of:
                raise UsageError(
                    f"COCO file {str(json_path)!r} has an annotation with category_id {ann['category_id']!r} "
                    "that is not in 'categories'; expected every category to be listed"
                )
            given_area = float(ann["area"]) if "area" in ann else None
            annotations_of.setdefault(ann["image_id"], []).append({**ann, "_xywh": (x, y, w, h), "_area": given_area})
        images = list(document["images"])
        annotated = [(image, annotations_of[image["id"]]) for image in images if annotations_of.get(image["id"])]
        file_names = [str(image["file_name"]) for image, _ in annotated]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"COCO file {str(json_path)!r} is malformed ({type(exc).__name__}: {exc}); expected images with "
            "'id' and 'file_name', annotations with 'image_id', 'category_id' and 'bbox' [x, y, w, h], "
            "categories with 'id'"
        ) from exc

    skipped = len(images) - len(annotated)
    if skipped:
        warnings.warn(f"COCO file {json_path}: {skipped} image(s) without annotations were left out", stacklevel=3)
    if not annotated:
        raise UsageError(f"COCO file {str(json_path)!r} has no annotated images; expected annotations with 'image_id'")
    paths = [image_root / name for name in file_names]
    for path in paths:
        if not path.is_file():
            raise UsageError(
                f"COCO file {str(json_path)!r} lists image {str(path)!r}, which does not exist; "
                "expected it under the image root (pass ?root=DIR if the images live elsewhere)"
            )

    # Decode every file once now: damaged files are left out (one warning), not found by a check.
    sizes, unreadable = _check_image_files(paths)
    if unreadable:
        summary = _unreadable_summary(unreadable, len(paths), image_root)
        if len(unreadable) == len(paths):
            raise UsageError(
                f"COCO file {str(json_path)!r}: {summary}; expected image files that PIL can decode"
            )
        warnings.warn(f"COCO file {json_path}: {summary}; they are left out of the audit")

    # Boxes are checked against each file's own size: the label is chosen among valid boxes only.
    dropped: Counter[str] = Counter()
    n_clipped = n_without_box = 0
    records = []
    for (image, anns), path, native in zip(annotated, paths, sizes):
        if native is None:
            continue
        valid = []
        for ann in anns:
            box, problem = _clip_coco_box(ann["_xywh"], *native)
            if problem is not None:
                dropped[problem] += 1
                continue
            n_clipped += box != _xywh_to_box(ann["_xywh"])
            area = ann["_area"] if ann["_area"] is not None else (box[2] - box[0]) * (box[3] - box[1])
            valid.append({**ann, "_box": box, "_area": area})
        if not valid:
            n_without_box += 1
            continue
        # The label is the largest object's category; the boxes are every object of it.
        category = max(valid, key=lambda a: a["_area"])["category_id"]
        records.append((image, [a for a in valid if a["category_id"] == category], path))
    if dropped:
        n_boxes_read = sum(len(anns) for (_, anns), native in zip(annotated, sizes) if native is not None)
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in dropped.most_common())
        note = f"COCO file {json_path}: dropped {sum(dropped.values()):,} of {n_boxes_read:,} boxes ({reasons})"
        if n_clipped:
            note += f"; clipped {n_clipped:,} more that lay partly outside their image"
        if n_without_box:
            note += f"; left out {n_without_box:,} image(s) with no valid box"
        warnings.warn(note)
    if not records:
        raise UsageError(
            f"COCO file {str(json_path)!r} has no image with a valid box; expected 'bbox' [x, y, w, h] "
            "with w > 0 and h > 0 overlapping its image"
        )

    declared = any(image.get("split") is not None for image, _, _ in records)
    if declared and train_fraction is not None:
        given = "eval_fraction" if "eval_fraction" in params else "train_fraction"
        raise UsageError(
            f"parameter {given!r} in data spec {spec!r} does not apply: COCO file {json_path.name} gives images a "
            f"\"split\" field, which decides the split; expected no {given}"
        )

    # Masks only when every kept annotation has polygons: a batch has masks for all items or none.
    with_masks = all(
        isinstance(ann.get("segmentation"), list) and ann["segmentation"] for _, anns, _ in records for ann in anns
    )
    size_of = dict(zip(paths, sizes))
    splits: dict[str, list[tuple[Path, int, list, list | None, str, tuple[int, int]]]] = {"train": [], "eval": []}
    for image, anns, path in records:
        polygons = [poly for ann in anns for poly in _as_polygon_list(ann["segmentation"])] if with_masks else None
        splits[_coco_split(json_path, image)].append(
            (
                path,
                class_of[anns[0]["category_id"]],
                [a["_box"] for a in anns],
                polygons,
                f"coco-image:{image['id']}",
                size_of[path],
            )
        )

    if not splits["eval"]:
        raise UsageError(
            f"data {spec!r} has no evaluation images; expected images with \"split\": \"val\" (or no split field)"
        )
    _require_two_classes(
        [e[1] for e in splits["eval"]],
        class_names,
        f"COCO file {str(json_path)!r}",
        "expected evaluation images whose largest annotations are of at least two categories",
    )

    def to_split(entries: list[tuple[Path, int, list, list | None, str, tuple[int, int]]]) -> ImageFileSplit:
        return ImageFileSplit(
            [e[0] for e in entries],
            [e[1] for e in entries],
            preprocess,
            boxes=[e[2] for e in entries],
            polygons=[e[3] for e in entries] if with_masks else None,
            item_keys=[e[4] for e in entries],
            item_key_name="image id",
            sizes=[e[5] for e in entries],
        )

    data = AuditData(
        name=spec,
        spec=spec,
        eval=to_split(splits["eval"]),
        train=to_split(splits["train"]) if splits["train"] else None,
        num_classes=len(class_names),
        class_names=class_names,
        has_boxes=True,
        has_masks=with_masks,
        preprocess=preprocess,
        train_split_hint=f"Give each image in {json_path.name} a \"split\" field (\"train\" or \"val\") to evaluate every image.",
    )
    n_boxes = sum(len(anns) for _, anns, _ in records)
    several = sum(len(anns) > 1 for _, anns, _ in records)
    held_out = ""
    if train_fraction:
        held_out = f", {data._carve(train_fraction)} held out for training by a hash of each image id"
    data.description = (
        f"COCO-style {json_path.name}: {len(records)} images{held_out}, {len(class_names)} classes, "
        f"{n_boxes} boxes ({several} images with several)"
    )
    return data


def _xywh_to_box(xywh: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = xywh
    return (x, y, x + w, y + h)


def _clip_coco_box(
    xywh: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float], str | None]:
    """A COCO ``bbox`` [x, y, w, h] as (x0, y0, x1, y1) clipped to a ``width`` x ``height``
    image, and None; or why it is dropped (not finite, zero or negative width/height, wholly
    outside its image: no area left after clipping)."""
    if not all(math.isfinite(v) for v in xywh):
        return xywh, "with coordinates that are not finite"
    x0, y0, x1, y1 = _xywh_to_box(xywh)
    if xywh[2] <= 0 or xywh[3] <= 0:
        return xywh, "with zero or negative width/height"
    box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        return xywh, "wholly outside its image"
    return box, None


def _as_polygon_list(segmentation: list) -> list[list[float]]:
    # COCO polygons are a list of flat [x0, y0, x1, y1, ...] lists; accept a single flat list too.
    if segmentation and not isinstance(segmentation[0], list):
        return [[float(v) for v in segmentation]]
    return [[float(v) for v in poly] for poly in segmentation]


def _coco_split(json_path: Path, image: dict[str, Any]) -> str:
    declared = image.get("split")
    if declared is None:
        return "eval"
    value = str(declared).lower()
    if value in TRAIN_SPLIT_VALUES:
        return "train"
    if value in EVAL_SPLIT_VALUES:
        return "eval"
    raise UsageError(
        f"COCO file {str(json_path)!r}: image {image['id']!r} has split {declared!r}; expected 'train' or 'val'"
    )


# --- torchvision and other datasets ---------------------------------------------------------


class DatasetSplit:
    """Adapts a map-style dataset to :class:`Split`: items may be ``(image, label)`` pairs or
    dicts with ``image`` (and optionally ``label``, ``box`` [4] or ``boxes`` [M,4], ``mask``
    [H,W]). Images may be PIL images, tensors [C,H,W] or [H,W] (uint8 are divided by 255,
    floats kept as they are: the pixel check rejects values outside [0,1]), or arrays
    (channels-last when the last axis has 1 or 3 entries); grey becomes three channels.
    ``preprocess`` (default: native size) brings each image, its boxes and mask to size.
    ``indices`` restricts the split to those dataset items, in that order."""

    item_key_name = "position"

    def __init__(self, dataset: Any, preprocess: Preprocess | None = None, indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.preprocess = preprocess or Preprocess.native()
        self.indices = None if indices is None else list(indices)
        self._sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def _position(self, i: int) -> int:
        return i if self.indices is None else self.indices[i]

    @property
    def item_keys(self) -> list[str]:
        return [f"item:{self._position(i)}" for i in range(len(self))]

    def with_preprocess(self, preprocess: Preprocess) -> "DatasetSplit":
        out = copy.copy(self)
        out.preprocess = preprocess
        return out

    def subset(self, indices: Sequence[int]) -> "DatasetSplit":
        return DatasetSplit(self.dataset, self.preprocess, [self._position(i) for i in indices])

    def native_sizes(self) -> list[tuple[int, int]]:
        """(width, height) per item before preprocessing, cached: from file headers for an
        ImageFolder-like dataset without transforms (``samples``), one size for data held in
        one array (``data``, ``tensors``), else by loading the first :data:`MAX_SIZE_SCAN`
        items (later ones are checked when batched)."""
        if self._sizes is None:
            self._sizes = self._read_sizes()
        return list(self._sizes)

    def _read_sizes(self) -> list[tuple[int, int]]:
        ds, n = self.dataset, len(self)
        plain = getattr(ds, "transform", None) is None and getattr(ds, "transforms", None) is None
        samples = getattr(ds, "samples", None) or getattr(ds, "imgs", None)
        if plain and isinstance(samples, list) and len(samples) == len(ds):
            return ImageFileSplit([samples[self._position(i)][0] for i in range(n)], [0] * n).native_sizes()
        arrays = [getattr(ds, "data", None), *(getattr(ds, "tensors", None) or ())[:1]]
        if any(isinstance(a, (np.ndarray, torch.Tensor)) and a.ndim >= 3 for a in arrays):
            first = self._raw_image(0)
            return [(int(first.shape[-1]), int(first.shape[-2]))] * n
        sizes = []
        for i in range(min(n, MAX_SIZE_SCAN)):
            image = self._raw_image(i)
            sizes.append((int(image.shape[-1]), int(image.shape[-2])))
        return sizes

    def _raw(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        try:
            raw = self.dataset[self._position(i)]
        except Image.DecompressionBombError as exc:
            raise UsageError(
                f"image too large: dataset item {self._position(i)}: {exc}; expected images within "
                "PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs: downsize or remove it"
            ) from exc
        if isinstance(raw, dict):
            item = dict(raw)
            image = self._image(item.pop("image"))
            if "label" in item:
                item["label"] = int(item["label"])
            return image, item
        return self._image(raw[0]), {"label": int(raw[1])}

    def _raw_image(self, i: int) -> torch.Tensor:
        return self._raw(i)[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, item = self._raw(i)
        boxes = item.pop("boxes", None)
        if boxes is None:
            boxes = item.pop("box", None)
        item.pop("box", None)
        boxes = None if boxes is None else torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        mask = item.pop("mask", None)
        mask = None if mask is None else torch.as_tensor(mask).bool()
        image, boxes, mask = self.preprocess.apply(image, boxes, mask)
        item["image"] = image
        if boxes is not None:
            item["boxes"] = boxes
        if mask is not None:
            item["mask"] = mask
        return item

    @staticmethod
    def _image(image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return pil_to_tensor(image)
        if isinstance(image, torch.Tensor):
            tensor = image
        else:
            tensor = torch.as_tensor(np.asarray(image))
            # Arrays come channels-last, as PIL and NumPy image code writes them.
            if tensor.ndim == 3 and tensor.shape[-1] in (1, 3) and tensor.shape[0] not in (1, 3):
                tensor = tensor.permute(2, 0, 1)
        tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise UsageError(f"dataset image has shape {list(tensor.shape)}; expected [3,H,W], [1,H,W] or [H,W]")
        return tensor.contiguous()


def _load_torchvision(spec: str, *, size: int | None) -> AuditData:
    import torchvision.datasets

    head, query = _split_query(spec)
    name = head.removeprefix("torchvision:")
    params = _parse_query(spec, query)
    _reject_unknown(spec, params, ("root", "size", "resize", "crop"))
    preprocess = _preprocess_param(spec, params, size)
    root = Path(params.get("root", DEFAULT_TORCHVISION_ROOT)).expanduser()

    available = {n.lower(): n for n in dir(torchvision.datasets) if isinstance(getattr(torchvision.datasets, n), type)}
    if name.lower() not in available:
        raise UsageError(
            f"unknown torchvision dataset {name!r} in data spec {spec!r}; expected a class in torchvision.datasets "
            "such as CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN"
        )
    cls = getattr(torchvision.datasets, available[name.lower()])
    parameters = inspect.signature(cls).parameters
    if "train" in parameters:
        split_args = ({"train": True}, {"train": False})
    elif "split" in parameters:
        split_args = ({"split": "train"}, {"split": "test"})
    else:
        raise UsageError(
            f"torchvision dataset {cls.__name__} has no train/test switch (neither 'train' nor 'split'); "
            "expected a dataset like CIFAR10 or SVHN, or wrap it in a file.py:factory"
        )
    kwargs: dict[str, Any] = {"download": False} if "download" in parameters else {}
    try:
        train_set = cls(str(root), **split_args[0], **kwargs)
        eval_set = cls(str(root), **split_args[1], **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"torchvision dataset {cls.__name__} rejected the train/test split arguments ({exc}); "
            "expected a dataset like CIFAR10 or SVHN, or wrap it in a file.py:factory"
        ) from exc
    except (RuntimeError, OSError) as exc:
        raise UsageError(
            f"torchvision dataset {cls.__name__} was not found under {str(root.resolve())!r} "
            "and downloads are disabled; "
            f"expected its files there already (pass ?root=DIR to look elsewhere) [{exc}]"
        ) from exc
    if len(eval_set) == 0:
        raise UsageError(f"data {spec!r} has no evaluation images; expected a non-empty test split")

    class_names = list(getattr(eval_set, "classes", []) or [])
    if not class_names:
        targets = getattr(eval_set, "targets", None)
        if targets is None:
            targets = getattr(eval_set, "labels", None)
        num_classes = int(torch.as_tensor(np.asarray(targets)).max()) + 1 if targets is not None else 0
        class_names = [str(k) for k in range(num_classes)]
    if len(class_names) < MIN_CLASSES:
        raise UsageError(
            f"torchvision dataset {cls.__name__} under {str(root)!r} has {len(class_names)} class(es) "
            f"{class_names}; at least two classes are needed"
        )
    return AuditData(
        name=f"torchvision:{cls.__name__}",
        spec=spec,
        eval=DatasetSplit(eval_set),
        train=DatasetSplit(train_set) if len(train_set) else None,
        num_classes=len(class_names),
        class_names=class_names,
        description=f"torchvision {cls.__name__} from {root}",
        preprocess=preprocess,
    )


# --- factories ------------------------------------------------------------------------------


def _load_factory(spec: str, target: str, attr: str, *, seed: int, size: int | None) -> AuditData:
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
