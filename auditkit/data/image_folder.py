"""Data format: an ImageFolder directory, ``DIR/<class>/*`` or ``DIR/train/<class>/*`` with
``DIR/val/<class>/*``, with ``?size=``, ``?crop=&resize=`` and ``?train_fraction=``."""
from __future__ import annotations

import warnings
from pathlib import Path

from auditkit.data.base import AuditData
from auditkit.data.image_files import (
    ImageFileSplit,
    check_image_files,
    class_folders,
    image_files,
    require_two_classes,
    unreadable_summary,
)
from auditkit.data.spec import data_format, located_path, parse_query, preprocess_param, reject_unknown, train_fraction_param
from auditkit.errors import UsageError

EVAL_FOLDER_NAMES = ("val", "valid", "validation", "test")


def owns(spec: str) -> bool:
    located = located_path(spec)
    return located is not None and located[0].is_dir()


def load(spec: str, *, seed: int, size: int | None) -> AuditData:
    root, query = located_path(spec)
    params = parse_query(spec, query)
    reject_unknown(spec, params, ("size", "resize", "crop", "eval_fraction", "train_fraction"))
    preprocess = preprocess_param(spec, params, size)
    train_fraction = train_fraction_param(spec, params)

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
        class_names, index = _class_index(sorted({name for d in (train_dir, eval_dir) for name in class_folders(d)}))
        train_items = _folder_items(train_dir, index)
        eval_folder = eval_dir
    elif train_dir.is_dir() or eval_dir is not None:
        # One split folder only: it is the data to audit, all of it.
        eval_folder = eval_dir if eval_dir is not None else train_dir
        layout = f"{eval_folder.name}/ folder only, every image evaluated"
        class_names, index = _class_index(class_folders(eval_folder))
    else:
        layout = "class folders, every image evaluated"
        eval_folder = root
        class_names, index = _class_index(class_folders(root))
    eval_items = _folder_items(eval_folder, index)

    if not train_items and not eval_items:
        raise UsageError(
            f"no images found in {str(root)!r}; expected {root}/<class>/*.png (or .jpg, ...) "
            f"or {root}/train/<class>/* and {root}/val/<class>/*"
        )
    if not eval_items:
        raise UsageError(f"data {spec!r} has no evaluation images; expected a non-empty val/ or test/ folder")

    # Decode every file once now: damaged files are left out (one warning), not found by a check.
    sizes, unreadable = check_image_files([p for p, _ in train_items + eval_items])
    train_sizes, eval_sizes = sizes[: len(train_items)], sizes[len(train_items) :]
    readable_eval = [(p, c, s) for (p, c), s in zip(eval_items, eval_sizes) if s is not None]
    if not readable_eval:
        raise UsageError(
            f"cannot read any evaluation image in {str(eval_folder)!r}: "
            f"{unreadable_summary(unreadable, len(sizes), root)}; expected image files that PIL can decode"
        )
    if unreadable:
        warnings.warn(
            f"ImageFolder {root}: {unreadable_summary(unreadable, len(sizes), root)}; they are left out of the audit"
        )
    train_items = [(p, c, s) for (p, c), s in zip(train_items, train_sizes) if s is not None]
    eval_items = readable_eval
    require_two_classes(
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
    for name in class_folders(folder):
        if name in index:
            items.extend((path, index[name]) for path in image_files(folder / name))
    return items


auditkit_load_data = data_format(owns, load)
