"""Image files on disk, shared by the ImageFolder and COCO formats: a lazily loaded split of
files, and the load-time check that decodes every file once so damaged ones are named early."""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, JpegImagePlugin, UnidentifiedImageError

from auditkit.data.preprocess import Preprocess
from auditkit.data.synthetic import MIN_CLASSES
from auditkit.errors import UsageError
from auditkit.localization import polygon_mask

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
# The warning about unreadable images names this many files; the rest are counted.
NAMED_UNREADABLE = 5


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
                    raise too_large_error([(path, declared_size(path))]) from exc
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
            raise too_large_error([(path, declared_size(path))]) from exc
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
        return declared_size(path), "too large"
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


def declared_size(path: Path) -> tuple[int, int] | None:
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


# files handed to each decoding thread at a time (check_image_files): the futures in flight,
# not the number of files, set the load's memory
FILES_PER_WORKER_AT_ONCE = 64


def check_image_files(paths: Sequence[Path]) -> tuple[list[tuple[int, int] | None], list[tuple[Path, str]]]:
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
            # a window of files at a time: pool.map submits every file at once, and a future
            # per file (about 2 KB each) made the load's peak grow with the number of images
            window = FILES_PER_WORKER_AT_ONCE * workers
            results = []
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for start in range(0, len(paths), window):
                    part = paths[start:start + window]
                    results.extend(pool.map(_check_image_file, part, [limit] * len(part)))

    too_large = [(path, size) for path, (size, reason) in zip(paths, results) if reason == "too large"]
    if too_large:
        raise too_large_error(too_large)
    unreadable = [(path, reason) for path, (_, reason) in zip(paths, results) if reason is not None]
    return [size if reason is None else None for size, reason in results], unreadable


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def unreadable_summary(unreadable: list[tuple[Path, str]], total: int, root: Path) -> str:
    """"2 of 14 images cannot be read (1 truncated, 1 not an image): cat/a.jpg (truncated),
    cat/b.jpg (not an image)", naming the first :data:`NAMED_UNREADABLE` relative to ``root``."""
    counts = Counter(reason for _, reason in unreadable)
    by_reason = ", ".join(f"{n:,} {reason}" for reason, n in counts.most_common())
    named = ", ".join(f"{_relative_name(p, root)} ({reason})" for p, reason in unreadable[:NAMED_UNREADABLE])
    more = len(unreadable) - NAMED_UNREADABLE
    if more > 0:
        named += f" and {more:,} more"
    return f"{len(unreadable):,} of {total:,} images cannot be read ({by_reason}): {named}"


def too_large_error(files: list[tuple[Path, tuple[int, int] | None]]) -> UsageError:
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


def require_two_classes(labels: Sequence[int], class_names: Sequence[str], source: str, expected: str) -> None:
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


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

