"""Turn a data SPEC (``--data``) into AuditData: the built-in synthetic shapes, an ImageFolder
directory, a COCO-style JSON file, a torchvision dataset on disk, or a user factory."""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote

import numpy as np
import torch
from PIL import Image, ImageDraw

from auditkit.data.base import AuditData, Split
from auditkit.data.synthetic import BACKGROUNDS, MAX_CLASSES, MIN_CLASSES, MIN_SIZE, make_shapes
from auditkit.errors import UsageError
from auditkit.importing import NotPythonSource, SourceFileRaised, import_source_file

ACCEPTED_FORMS = (
    "synthetic:shapes[?n=..&size=..&classes=..&seed=..&spurious=..&train=..], "
    "an ImageFolder directory (DIR/<class>/* or DIR/train/<class>/* + DIR/val/<class>/*), "
    "a COCO-style .json file, torchvision:NAME[?root=DIR], "
    "path/to/file.py:factory or package.module:factory"
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
DEFAULT_IMAGE_SIZE = 64
DEFAULT_EVAL_FRACTION = 0.2
DEFAULT_TORCHVISION_ROOT = "data"
EVAL_FOLDER_NAMES = ("val", "valid", "validation", "test")
TRAIN_SPLIT_VALUES = frozenset({"train", "training"})
EVAL_SPLIT_VALUES = frozenset({"val", "valid", "validation", "test", "eval"})


def load_data(spec: str, *, seed: int = 0, size: int | None = None) -> AuditData:
    """Load the data named by ``spec``.

    Accepted forms:

    - ``synthetic:shapes[?n=..&train=..&size=..&classes=..&seed=..&spurious=..&spurious_classes=..&background=..]``:
      the built-in dataset (:func:`auditkit.data.synthetic.make_shapes`); ``seed`` defaults
      to the ``seed`` argument and ``size`` to the ``size`` argument, else 64.
    - ``DIR[?size=..&eval_fraction=..]``: an ImageFolder directory, either ``DIR/train/<class>/*``
      with ``DIR/val/<class>/*`` (or ``valid/``, ``validation/``, ``test/``), or ``DIR/<class>/*``,
      split into disjoint train and eval parts by a hash of each file's relative path (about
      ``eval_fraction`` = 20% eval). Images load lazily, as RGB in [0,1], resized to ``size`` x ``size``.
    - ``FILE.json[?size=..&root=..&eval_fraction=..]``: a COCO-style file. Each annotated image is one
      sample labelled with the category of its largest annotation, whose box (and mask, when
      every kept image has polygon segmentation) is scaled to the resized image. Images are
      found under ``root`` (default: the JSON's folder). A per-image ``split`` field
      (``"train"``/``"val"``) decides the split; otherwise a hash of the image id does.
    - ``torchvision:NAME[?root=..&size=..]``: a torchvision dataset already on disk (never
      downloaded), ``train=True``/``split="train"`` as the train split and the test split for
      evaluation; default root ``./data``; images keep their native size unless ``size`` is given.
    - ``path/to/file.py:factory`` or ``package.module:factory``: ``factory()`` (given ``seed``
      and ``size`` when it accepts them by those names) returns an AuditData, or a
      ``(train_dataset, eval_dataset, num_classes)`` tuple whose datasets yield ``(image, label)``
      pairs or dicts as described in :class:`auditkit.data.base.Split`.

    Args:
        spec: the data SPEC.
        seed: the default seed for generated data.
        size: the default image side for data that is resized; a ``?size=`` in the spec wins.

    Returns:
        The loaded AuditData.

    Raises:
        UsageError: the spec is malformed, a path is missing, a parameter is unknown or has a
            bad value, the data cannot be read, or the evaluation split is empty.
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


def _fraction_param(spec: str, params: dict[str, str], name: str, default: float, *, open_ends: bool = False) -> float:
    if name not in params:
        return default
    raw = params[name]
    expected = "a number strictly between 0 and 1" if open_ends else "a number from 0 to 1"
    try:
        value = float(raw)
    except ValueError:
        raise _bad_value(spec, name, raw, expected) from None
    inside = 0.0 < value < 1.0 if open_ends else 0.0 <= value <= 1.0
    if not inside:
        raise _bad_value(spec, name, raw, expected)
    return value


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
    """A split of image files, loaded lazily: each item is read, converted to RGB and resized
    to ``size`` x ``size`` when it is asked for.

    ``boxes`` (float [4] each, in original pixel coordinates) and ``polygons`` (COCO
    ``segmentation`` lists, original coordinates) are optional per item; when given they are
    scaled to the resized image and returned as ``box`` and ``mask``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        size: int,
        boxes: Sequence[Sequence[float]] | None = None,
        polygons: Sequence[list[list[float]]] | None = None,
    ):
        self.paths = list(paths)
        self.labels = list(labels)
        self.size = size
        self.boxes = None if boxes is None else [list(map(float, b)) for b in boxes]
        self.polygons = None if polygons is None else list(polygons)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            with Image.open(path) as raw:
                original_size = raw.size
                image = raw.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        except OSError as exc:
            raise UsageError(f"cannot read image {str(path)!r}: {exc}; expected a readable image file") from exc
        item: dict[str, Any] = {"image": pil_to_tensor(image), "label": self.labels[i]}
        sx, sy = self.size / original_size[0], self.size / original_size[1]
        if self.boxes is not None:
            x0, y0, x1, y1 = self.boxes[i]
            item["box"] = torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy], dtype=torch.float32)
        if self.polygons is not None:
            item["mask"] = _rasterise_polygons(self.polygons[i], sx, sy, self.size)
        return item


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as float [3,H,W] RGB in [0,1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _rasterise_polygons(polygons: list[list[float]], sx: float, sy: float, size: int) -> torch.Tensor:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        points = [(flat[k] * sx, flat[k + 1] * sy) for k in range(0, len(flat) - 1, 2)]
        if len(points) >= 3:
            draw.polygon(points, fill=1)
    return torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()).bool()


def _hash_fraction(key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_image_folder(spec: str, root: Path, params: dict[str, str], *, size: int | None) -> AuditData:
    _reject_unknown(spec, params, ("size", "eval_fraction"))
    side = _size_param(spec, params, size, DEFAULT_IMAGE_SIZE)
    eval_fraction = _fraction_param(spec, params, "eval_fraction", DEFAULT_EVAL_FRACTION, open_ends=True)

    train_dir = root / "train"
    eval_dir = next((root / name for name in EVAL_FOLDER_NAMES if (root / name).is_dir()), None)
    if train_dir.is_dir() or eval_dir is not None:
        layout = "train/eval folders"
        sources = [d for d in (train_dir if train_dir.is_dir() else None, eval_dir) if d is not None]
        class_names = sorted({name for d in sources for name in _class_folders(d)})
        index = {name: k for k, name in enumerate(class_names)}
        train_items = _folder_items(train_dir, index) if train_dir.is_dir() else []
        if eval_dir is not None:
            eval_items = _folder_items(eval_dir, index)
        else:
            # Only train/ exists: hold out a hashed share of it, as for a single folder.
            layout = "train folder split by path hash"
            train_items, eval_items = _hash_split(train_items, train_dir, eval_fraction)
    else:
        layout = f"class folders split by path hash ({eval_fraction:.0%} eval)"
        class_names = _class_folders(root)
        index = {name: k for k, name in enumerate(class_names)}
        train_items, eval_items = _hash_split(_folder_items(root, index), root, eval_fraction)

    if not train_items and not eval_items:
        raise UsageError(
            f"no images found in {str(root)!r}; expected {root}/<class>/*.png (or .jpg, ...) "
            f"or {root}/train/<class>/* and {root}/val/<class>/*"
        )
    if not eval_items:
        raise UsageError(
            f"data {spec!r} has no evaluation images; expected a non-empty val/ or test/ folder, "
            "or enough images for a hashed evaluation share"
        )
    return AuditData(
        name=spec,
        spec=spec,
        eval=ImageFileSplit([p for p, _ in eval_items], [c for _, c in eval_items], side),
        train=ImageFileSplit([p for p, _ in train_items], [c for _, c in train_items], side) if train_items else None,
        num_classes=len(class_names),
        class_names=class_names,
        description=f"ImageFolder {root} ({layout}), {len(class_names)} classes, resized to {side}x{side}",
    )


def _folder_items(folder: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    items = []
    for name in _class_folders(folder):
        if name in index:
            items.extend((path, index[name]) for path in _image_files(folder / name))
    return items


def _hash_split(
    items: list[tuple[Path, int]], root: Path, eval_fraction: float
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    train, evaluation = [], []
    for path, label in items:
        key = path.relative_to(root).as_posix()
        (evaluation if _hash_fraction(key) < eval_fraction else train).append((path, label))
    return train, evaluation


def _load_coco(spec: str, json_path: Path, params: dict[str, str], *, size: int | None) -> AuditData:
    _reject_unknown(spec, params, ("size", "root", "eval_fraction"))
    side = _size_param(spec, params, size, DEFAULT_IMAGE_SIZE)
    eval_fraction = _fraction_param(spec, params, "eval_fraction", DEFAULT_EVAL_FRACTION, open_ends=True)
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
        largest: dict[Any, dict[str, Any]] = {}
        for ann in document["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            area = float(ann.get("area", w * h))
            if ann["category_id"] not in class_of:
                raise UsageError(
                    f"COCO file {str(json_path)!r} has an annotation with category_id {ann['category_id']!r} "
                    "that is not in 'categories'; expected every category to be listed"
                )
            best = largest.get(ann["image_id"])
            if best is None or area > best["_area"]:
                largest[ann["image_id"]] = {**ann, "_area": area, "_box": (x, y, x + w, y + h)}
        images = list(document["images"])
        records = []
        for image in images:
            ann = largest.get(image["id"])
            if ann is None:
                continue
            records.append((image, ann, str(image["file_name"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"COCO file {str(json_path)!r} is malformed ({type(exc).__name__}: {exc}); expected images with "
            "'id' and 'file_name', annotations with 'image_id', 'category_id' and 'bbox' [x, y, w, h], "
            "categories with 'id'"
        ) from exc

    skipped = len(images) - len(records)
    if skipped:
        warnings.warn(f"COCO file {json_path}: {skipped} image(s) without annotations were left out", stacklevel=3)
    if not records:
        raise UsageError(f"COCO file {str(json_path)!r} has no annotated images; expected annotations with 'image_id'")

    # Masks only when every kept image has polygons: a batch has masks for all items or none.
    with_masks = all(isinstance(ann.get("segmentation"), list) and ann["segmentation"] for _, ann, _ in records)
    splits: dict[str, list[tuple[Path, int, tuple, list]]] = {"train": [], "eval": []}
    for image, ann, file_name in records:
        path = image_root / file_name
        if not path.is_file():
            raise UsageError(
                f"COCO file {str(json_path)!r} lists image {str(path)!r}, which does not exist; "
                "expected it under the image root (pass ?root=DIR if the images live elsewhere)"
            )
        splits[_coco_split(json_path, image, eval_fraction)].append(
            (path, class_of[ann["category_id"]], ann["_box"], ann.get("segmentation") if with_masks else None)
        )

    def to_split(entries: list[tuple[Path, int, tuple, list]]) -> ImageFileSplit:
        return ImageFileSplit(
            [e[0] for e in entries],
            [e[1] for e in entries],
            side,
            boxes=[e[2] for e in entries],
            polygons=[_as_polygon_list(e[3]) for e in entries] if with_masks else None,
        )

    if not splits["eval"]:
        raise UsageError(
            f"data {spec!r} has no evaluation images; expected images with \"split\": \"val\" "
            "or enough images for a hashed evaluation share"
        )
    return AuditData(
        name=spec,
        spec=spec,
        eval=to_split(splits["eval"]),
        train=to_split(splits["train"]) if splits["train"] else None,
        num_classes=len(class_names),
        class_names=class_names,
        has_boxes=True,
        has_masks=with_masks,
        description=(
            f"COCO-style {json_path.name}: {len(records)} images, {len(class_names)} classes, resized to {side}x{side}"
        ),
    )


def _as_polygon_list(segmentation: list) -> list[list[float]]:
    # COCO polygons are a list of flat [x0, y0, x1, y1, ...] lists; accept a single flat list too.
    if segmentation and not isinstance(segmentation[0], list):
        return [[float(v) for v in segmentation]]
    return [[float(v) for v in poly] for poly in segmentation]


def _coco_split(json_path: Path, image: dict[str, Any], eval_fraction: float) -> str:
    declared = image.get("split")
    if declared is None:
        return "eval" if _hash_fraction(f"coco-image:{image['id']}") < eval_fraction else "train"
    value = str(declared).lower()
    if value in TRAIN_SPLIT_VALUES:
        return "train"
    if value in EVAL_SPLIT_VALUES:
        return "eval"
    raise UsageError(
        f"COCO file {str(json_path)!r}: image {image['id']!r} has split {declared!r}; expected 'train' or 'val'"
    )


# --- torchvision ----------------------------------------------------------------------------


class DatasetSplit:
    """Adapts a map-style dataset to :class:`Split`: items may be ``(image, label)`` pairs
    (PIL image, uint8 or float tensor [C,H,W] or [H,W], or array) or dicts with ``image``;
    grey images become three channels, and images are resized to ``size`` when it is given."""

    def __init__(self, dataset: Any, size: int | None = None):
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        raw = self.dataset[i]
        if isinstance(raw, dict):
            item = dict(raw)
            item["image"] = self._image(raw["image"])
            if "label" in item:
                item["label"] = int(item["label"])
            return item
        image, label = raw[0], raw[1]
        return {"image": self._image(image), "label": int(label)}

    def _image(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            if self.size is not None:
                image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            return pil_to_tensor(image)
        if isinstance(image, torch.Tensor):
            tensor = image
        else:
            tensor = torch.as_tensor(np.asarray(image))
            # Arrays come channels-last, as PIL and NumPy image code writes them.
            if tensor.ndim == 3 and tensor.shape[-1] in (1, 3) and tensor.shape[0] not in (1, 3):
                tensor = tensor.permute(2, 0, 1)
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        tensor = tensor.float()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise UsageError(f"dataset image has shape {list(tensor.shape)}; expected [3,H,W], [1,H,W] or [H,W]")
        if self.size is not None and tuple(tensor.shape[1:]) != (self.size, self.size):
            tensor = torch.nn.functional.interpolate(
                tensor[None], size=(self.size, self.size), mode="bilinear", align_corners=False
            )[0]
        return tensor.clamp(0, 1).contiguous()


def _load_torchvision(spec: str, *, size: int | None) -> AuditData:
    import torchvision.datasets

    head, query = _split_query(spec)
    name = head.removeprefix("torchvision:")
    params = _parse_query(spec, query)
    _reject_unknown(spec, params, ("root", "size"))
    side = _size_param(spec, params, size, None)
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
    return AuditData(
        name=f"torchvision:{cls.__name__}",
        spec=spec,
        eval=DatasetSplit(eval_set, side),
        train=DatasetSplit(train_set, side),
        num_classes=len(class_names),
        class_names=class_names,
        description=f"torchvision {cls.__name__} from {root}" + (f", resized to {side}x{side}" if side else ""),
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
    eval_split: Split = DatasetSplit(eval_set)
    first = eval_split[0]
    return AuditData(
        name=spec,
        spec=spec,
        eval=eval_split,
        train=DatasetSplit(train_set) if train_set is not None and len(train_set) else None,
        num_classes=num_classes,
        has_labels="label" in first,
        has_boxes="box" in first,
        has_masks="mask" in first,
        description=f"datasets from factory {spec}",
    )
