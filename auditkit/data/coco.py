"""Data format: a COCO-style ``.json`` detection file: one sample per annotated image, labelled
by its largest object, with that category's boxes (and polygon masks when every one has them)."""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from auditkit.data.base import AuditData
from auditkit.data.image_files import ImageFileSplit, check_image_files, require_two_classes, unreadable_summary
from auditkit.data.spec import data_format, located_path, parse_query, preprocess_param, reject_unknown, train_fraction_param
from auditkit.errors import UsageError

TRAIN_SPLIT_VALUES = frozenset({"train", "training"})
EVAL_SPLIT_VALUES = frozenset({"val", "valid", "validation", "test", "eval"})


def owns(spec: str) -> bool:
    located = located_path(spec)
    return located is not None and located[0].is_file() and located[0].suffix.lower() == ".json"


def load(spec: str, *, seed: int, size: int | None) -> AuditData:
    json_path, query = located_path(spec)
    params = parse_query(spec, query)
    reject_unknown(spec, params, ("size", "resize", "crop", "root", "eval_fraction", "train_fraction"))
    preprocess = preprocess_param(spec, params, size)
    train_fraction = train_fraction_param(spec, params)
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
    sizes, unreadable = check_image_files(paths)
    if unreadable:
        summary = unreadable_summary(unreadable, len(paths), image_root)
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
    require_two_classes(
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


auditkit_load_data = data_format(owns, load)
