"""AuditData: the dataset under audit, as batches of images in [0,1] with labels and,
when the data has them, boxes and masks for localization checks. It also owns the two
decisions about what the audit sees: the size images are brought to (native, or resized
the standard way) and which images, if any, are held out for training."""
from __future__ import annotations

import copy
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch

from auditkit.data.preprocess import Preprocess
from auditkit.errors import UsageError
from auditkit.localization import as_box_sets

# Pixels may sit this far outside [0,1] (rounding in a user's resize or colour conversion).
PIXEL_TOLERANCE = 1e-3
# Splits that can only learn their images' sizes by loading them look at this many at most;
# a later image of another size is still caught when its batch is drawn.
MAX_SIZE_SCAN = 2048
# The share of the evaluation images held out when something must be trained and the data
# has no train split of its own.
DEFAULT_TRAIN_FRACTION = 0.2


@dataclass
class Batch:
    """One batch. ``images`` is float [B,3,H,W] in [0,1]; ``labels`` long [B]; ``boxes`` float
    [B,M,4], each image's boxes as (x0, y0, x1, y1) pixel coordinates with x1/y1 exclusive,
    NaN rows where an image has fewer than M (a [B,4] given here is taken as M = 1);
    ``masks`` bool [B,H,W], the union of each image's object masks; ``index`` long [B],
    positions in the split."""

    images: torch.Tensor
    labels: torch.Tensor | None
    index: torch.Tensor
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.boxes is not None:
            self.boxes = as_box_sets(self.boxes)

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.images), move(self.labels), move(self.index), move(self.boxes), move(self.masks))

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Split(Protocol):
    """What AuditData needs of a split: a length and items as dicts with ``image`` (float
    [3,H,W] in [0,1]) and, when known, ``label`` (int), ``boxes`` (float [M,4]; ``box``, float
    [4], is read as one box) and ``mask`` (bool [H,W]).

    Optional, used when present: ``subset(indices)`` (a split of those items, in that order),
    ``item_keys`` (a stable string per item, for hash-chosen train splits) with
    ``item_key_name`` (what the key is, e.g. "file path"), ``max_boxes`` (the most boxes an
    item has, so every batch pads to the same M), and for splits that load images of any
    size, ``native_sizes()`` ((width, height) per item, read without decoding where possible)
    with ``with_preprocess(preprocess)`` (a copy that applies a :class:`Preprocess`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


class TensorSplit:
    """A split held as tensors in memory; batches are slices (no per-item Python work).

    ``images``: float [N,3,H,W] in [0,1], or uint8 [N,3,H,W] (divided by 255 here);
    ``labels``: [N]; ``boxes``: float [N,4] (one box per image) or [N,M,4] (NaN rows where an
    image has fewer); ``masks``: bool [N,H,W]. Tensors are kept as given otherwise; batches
    carry boxes as [B,M,4].

    Raises:
        ValueError: images are not [N,3,H,W], or boxes are neither [N,4] nor [N,M,4].
    """

    item_key_name = "position"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be float [N,3,H,W], got shape {list(images.shape)}")
        self.images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        self.labels = None if labels is None else labels.long()
        if boxes is not None:
            as_box_sets(boxes)  # validates the shape
        self.boxes = None if boxes is None else boxes.float()
        self.masks = None if masks is None else masks.bool()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def item_keys(self) -> list[str]:
        return [f"item:{i}" for i in range(len(self))]

    @property
    def max_boxes(self) -> int:
        return 0 if self.boxes is None else int(as_box_sets(self.boxes).shape[1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self.images[i]}
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        if self.boxes is not None:
            item["boxes"] = as_box_sets(self.boxes[i : i + 1])[0]
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item

    def slice(self, start: int, stop: int) -> Batch:
        stop = min(stop, len(self))
        return self._batch(slice(start, stop), torch.arange(start, stop))

    def take(self, indices: Sequence[int]) -> Batch:
        """The items at ``indices`` as one batch."""
        t = torch.as_tensor(list(indices), dtype=torch.long)
        return self._batch(t, t)

    def _batch(self, at: Any, index: torch.Tensor) -> Batch:
        return Batch(
            images=self.images[at],
            labels=None if self.labels is None else self.labels[at],
            index=index,
            boxes=None if self.boxes is None else self.boxes[at],
            masks=None if self.masks is None else self.masks[at],
        )

    def subset(self, indices: Sequence[int]) -> "TensorSplit":
        """A copy holding the items at ``indices``: every tensor attribute with one row per
        item is indexed (so subclasses' per-item tensors follow)."""
        n = len(self)
        t = torch.as_tensor(list(indices), dtype=torch.long)
        out = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
                setattr(out, name, value[t])
        return out


class IndexedSplit:
    """A view of some items of another split, in the given order (for splits without
    ``subset``)."""

    def __init__(self, base: Split, indices: Sequence[int]):
        self.base = base
        self.indices = list(indices)
        self.item_key_name = getattr(base, "item_key_name", "position")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[self.indices[i]]

    @property
    def item_keys(self) -> list[str]:
        keys = _item_keys(self.base)
        return [keys[i] for i in self.indices]

    @property
    def max_boxes(self) -> int:
        return int(getattr(self.base, "max_boxes", 0))


def subset(split: Split, indices: Sequence[int]) -> Split:
    """The items of ``split`` at ``indices``, in that order, as a split of the same kind where
    the split knows how (``subset``), else as an :class:`IndexedSplit` view."""
    method = getattr(split, "subset", None)
    return method(indices) if callable(method) else IndexedSplit(split, indices)


def _item_keys(split: Split) -> list[str]:
    keys = getattr(split, "item_keys", None)
    return list(keys) if keys is not None else [f"item:{i}" for i in range(len(split))]


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


def _item_boxes(item: dict[str, Any]) -> torch.Tensor | None:
    if "boxes" in item:
        return torch.as_tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4)
    if "box" in item:
        return torch.as_tensor(item["box"], dtype=torch.float32).reshape(-1, 4)
    return None


def collate(items: Sequence[dict[str, Any]], index: Sequence[int], max_boxes: int = 0) -> Batch:
    """Stack items into a Batch; boxes are padded with NaN rows to the most boxes of any item
    (at least ``max_boxes``, at least 1).

    Raises:
        ValueError: the items' images differ in shape.
    """
    shapes = {tuple(it["image"].shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(f"images of different shapes {sorted(shapes)} cannot share a batch")
    images = torch.stack([it["image"] for it in items]).float()
    labels = torch.tensor([it["label"] for it in items]) if all("label" in it for it in items) else None
    per_item = [_item_boxes(it) for it in items]
    boxes = None
    if any(b is not None for b in per_item):
        m = max([max_boxes, 1] + [b.shape[0] for b in per_item if b is not None])
        boxes = torch.full((len(items), m, 4), float("nan"))
        for row, b in enumerate(per_item):
            if b is not None and b.shape[0]:
                boxes[row, : b.shape[0]] = b
    masks = None
    if all("mask" in it for it in items):
        masks = torch.stack([it["mask"] for it in items]).bool()
    return Batch(images, labels, torch.as_tensor(list(index)), boxes, masks)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


class PixelRangeError(UsageError):
    """Images outside the pixel contract (float in [0,1]). ``low``/``high`` are the values
    found; the message says what they look like and what to do."""

    def __init__(self, source: str, low: float, high: float, where: str = ""):
        self.source, self.low, self.high, self.where = source, low, high, where
        super().__init__(pixel_range_message(source, low, high, where))

    def for_source(self, source: str) -> "PixelRangeError":
        """The same finding, attributed to ``source`` (e.g. the data spec that produced it)."""
        return PixelRangeError(source, self.low, self.high, self.where)


def pixel_range_message(source: str, low: float, high: float, where: str = "") -> str:
    """One line: what values data ``source`` gives and what to do about them."""
    at = f" ({where})" if where else ""
    if low != low or high != high:
        return f"data {source!r} gives images with NaN values{at}; expected pixels in [0,1]"
    found = f"data {source!r} gives images with values from {_fmt(low)} to {_fmt(high)}{at}"
    if low < -PIXEL_TOLERANCE:
        return (
            f"{found}: they look already normalized (mean/std applied); expected pixels in [0,1] — "
            "remove the Normalize transform, auditkit applies the model's normalization itself"
        )
    if high > 2.0:
        return f"{found}: expected pixels in [0,1]; divide by 255 or give uint8 tensors"
    return f"{found}: expected pixels in [0,1]; rescale the images to [0,1]"


def check_pixel_range(images: torch.Tensor, source: str, where: str = "") -> None:
    """Raise :class:`PixelRangeError` (a UsageError) unless float ``images`` lie in [0,1]
    (within :data:`PIXEL_TOLERANCE`); NaN fails too. One amin/amax pass, no copy."""
    if images.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low != low or high != high or low < -PIXEL_TOLERANCE or high > 1.0 + PIXEL_TOLERANCE:
        raise PixelRangeError(source, low, high, where)


def _loads_images(split: Split | None) -> bool:
    return split is not None and callable(getattr(split, "native_sizes", None)) and callable(
        getattr(split, "with_preprocess", None)
    )


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


class AuditData:
    """The data under audit: an evaluation split (what checks measure on) and, when the
    source has one, a disjoint train split (for training baselines and proxies).

    Capabilities: ``labels`` when items carry labels, ``localization`` when the evaluation
    items carry boxes or masks.

    Image size: splits that load images of any size (image files, datasets) are brought to
    one size when the data is made: ``preprocess`` when given (the user's explicit choice,
    kept as is), else the native size when every evaluation image has the same one, else
    :meth:`Preprocess.standard` (shorter side 256, central 224 x 224) until :meth:`fit_to`
    learns what the model expects. ``preprocessing`` records what was done, for people and
    reports. ``image_shape`` is (3, H, W) of the evaluation images as the checks see them.

    Pixels: images must be float in [0,1]. The first item of each split (every image of a
    :class:`TensorSplit`) is checked here and every batch in :meth:`batches`; values outside
    are a :class:`PixelRangeError` (a UsageError), never clamped.

    Raises:
        ValueError: the evaluation split is empty, or ``preprocess`` is given for splits that
            do not load images.
        UsageError: images outside [0,1], or images that cannot be read.
    """

    def __init__(
        self,
        name: str,
        eval: Split,
        train: Split | None = None,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        spec: str | None = None,
        has_labels: bool = True,
        has_boxes: bool = False,
        has_masks: bool = False,
        description: str = "",
        preprocess: Preprocess | None = None,
        train_split_hint: str = "",
    ):
        if len(eval) == 0:
            raise ValueError(f"data {name!r} has an empty evaluation split: there is nothing to audit")
        if preprocess is not None and not _loads_images(eval):
            raise ValueError(f"data {name!r}: preprocess applies to splits that load images (files, datasets), not to {type(eval).__name__}")
        self.name = name
        self.spec = spec or name
        self.eval = eval
        self.train = train
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        self.has_labels = has_labels
        self.has_boxes = has_boxes
        self.has_masks = has_masks
        self.description = description
        self.preprocess = preprocess
        self.train_split_hint = train_split_hint or "Give a train split to evaluate every image."
        self.preprocessing: dict[str, Any] = {}
        # For generated data, a source of unlimited fresh images of the same task (e.g.
        # auditkit.data.synthetic.ShapesStream): baselines train on it. None for real data.
        self.generator: Any = None
        self._fit_args: tuple[Any, ...] = (None, None, "")
        self._settle_size()
        self._check_first_items()

    # -- capabilities ----------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        caps = set()
        if self.has_labels:
            caps.add("labels")
        if self.has_boxes or self.has_masks:
            caps.add("localization")
        return frozenset(caps)

    @property
    def has_localization(self) -> bool:
        return self.has_boxes or self.has_masks

    # -- image size ------------------------------------------------------------------------------

    def fit_to(
        self,
        input_size: Sequence[int] | None = None,
        transform: Any = None,
        reason: str = "",
    ) -> str | None:
        """Settle the image size now that the model is known, and say so when images are
        resized without the user having asked.

        The rule, first match wins: a ``preprocess`` given when the data was made is kept;
        ``transform``, the model's own evaluation preprocessing (a :class:`Preprocess`, or
        anything :meth:`Preprocess.coerce` reads, such as torchvision's
        ``weights.transforms()``), is applied, since the model's accuracy is defined with it;
        evaluation images that all share one native size keep it, unless the model takes only
        another fixed ``input_size``; then shorter-side resize + center crop to ``input_size``
        ((H, W) or (C, H, W); resize at the standard ratio 256/224); else the standard
        256 -> 224.
        The train split gets the same preprocessing (with native evaluation images, train
        images of other sizes are resized by their shorter side and center-cropped to the
        evaluation size). Updates ``image_shape`` and ``preprocessing``.

        Args:
            input_size: what the model takes, when it declares a fixed size; None if unknown.
            transform: the model's own evaluation preprocessing, or None.
            reason: why that choice is right, for the message (e.g. "as resnet50's weights
                expect"); a default is used when empty.

        Returns:
            One line for the user when images are resized by auditkit's choice (not the
            spec's), e.g. "data 'val.json': the 1,300 evaluation images have 412 different
            sizes (from 200x150 to 500x500; most common 500x375, 734 images): shorter side
            resized to 256, center-cropped to 224x224 (as resnet50 expects)"; None when images
            keep their native size or the spec chose the size.
        """
        size = None
        if input_size is not None and len(input_size) >= 2:
            size = (int(input_size[-2]), int(input_size[-1]))
        self._fit_args = (size, Preprocess.coerce(transform), reason)
        self._settle_size(*self._fit_args)
        if self.preprocessing.get("chosen_by") == "auditkit":
            return f"data {self.spec!r}: {self.preprocessing['description']}"
        return None

    def _settle_size(
        self, input_size: tuple[int, int] | None = None, transform: Preprocess | None = None, reason: str = ""
    ) -> None:
        if not _loads_images(self.eval):
            shape = tuple(int(s) for s in self.eval[0]["image"].shape)
            self.image_shape = shape
            self.preprocessing = {
                "mode": "native",
                "chosen_by": "data",
                "output_size": [shape[1], shape[2]],
                "description": f"native {shape[2]}x{shape[1]}"
                + (" (images given as tensors)" if isinstance(self.eval, TensorSplit) else ""),
            }
            return
        sizes = Counter(self.eval.native_sizes())
        n = sum(sizes.values())
        (common, n_common), = sizes.most_common(1)
        native_fits = len(sizes) == 1 and (input_size is None or (common[1], common[0]) == tuple(input_size))
        if self.preprocess is not None:
            chosen, chosen_by, why = self.preprocess, "spec", "as the data spec asks"
        elif transform is not None:
            # The model's own evaluation preprocessing (e.g. its pretrained weights' transform):
            # its accuracy is defined with it, whatever size the images come in.
            chosen, chosen_by, why = transform, "auditkit", reason or "as the model expects"
        elif native_fits:
            chosen, chosen_by, why = Preprocess.native(), "data", ""
        elif input_size is not None:
            chosen, chosen_by = Preprocess.center_crop(input_size), "auditkit"
            why = reason or "the size the model takes"
        else:
            chosen, chosen_by = Preprocess.standard(), "auditkit"
            why = "the standard ImageNet evaluation transform; the model does not say what it expects"
        self.eval = self.eval.with_preprocess(chosen)
        self.image_shape = tuple(int(s) for s in self.eval[0]["image"].shape)
        out_h, out_w = self.image_shape[1:]
        record: dict[str, Any] = {
            **chosen.to_json(),
            "chosen_by": chosen_by,
            "output_size": [out_h, out_w],
            "native_sizes": len(sizes),
        }
        if n_common > 1:
            record["most_common_native_size"] = [common[1], common[0]]
        if chosen.mode == "native":
            description = f"native {out_w}x{out_h} (all {n:,} evaluation images)"
        else:
            description = f"{chosen.describe()} ({why})"
            if len(sizes) > 1:
                by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
                spread = f"from {_size_text(by_area[0])} to {_size_text(by_area[-1])}"
                if n_common > 1:
                    spread += f"; most common {_size_text(common)}, {n_common:,} images"
                description = f"the {n:,} evaluation images have {len(sizes):,} different sizes ({spread}): {description}"
        if _loads_images(self.train):
            train_chosen = chosen
            if chosen.mode == "native" and any(s != common for s in self.train.native_sizes()):
                train_chosen = Preprocess.center_crop((out_h, out_w), resize_size=min(out_h, out_w))
                record["train"] = train_chosen.to_json()
                description += f"; train images of other sizes: {train_chosen.describe()}"
            self.train = self.train.with_preprocess(train_chosen)
        record["description"] = description
        self.preprocessing = record

    # -- pixels ----------------------------------------------------------------------------------

    def _check_first_items(self) -> None:
        for name, split in (("eval", self.eval), ("train", self.train)):
            if split is None or len(split) == 0:
                continue
            if isinstance(split, TensorSplit):
                check_pixel_range(split.images, self.spec)
            else:
                check_pixel_range(split[0]["image"], self.spec, f"{name} image 0")

    # -- splits ----------------------------------------------------------------------------------

    def split(self, name: str) -> Split:
        if name == "eval":
            return self.eval
        if name == "train":
            if self.train is None:
                raise ValueError(f"data {self.name!r} has no train split")
            return self.train
        raise ValueError(f"unknown split {name!r}; expected 'eval' or 'train'")

    def carve_train(self, fraction: float = DEFAULT_TRAIN_FRACTION, reason: str = "to train the baselines") -> str | None:
        """Hold out a share of the evaluation images as the train split, when there is none.

        The ``round(fraction * N)`` images (at least 1, at most N - 1) with the smallest hash
        of their stable key (relative file path, image id, or position: the split's
        ``item_keys``) move to ``train``; the rest stay in ``eval``, in their order. The choice
        depends only on the keys, so it is the same on every run and machine, and the two
        splits are disjoint.

        Args:
            fraction: the share to hold out, strictly between 0 and 1.
            reason: what the train images are for, as it reads after "held out", e.g. "to
                train the baselines (resnet18) and the transfer proxy".

        Returns:
            One line for the user saying how many images were held out, how they were chosen
            and how to avoid it, e.g. "data 'pets' has no train split: 260 of 1,300 images
            (20%, chosen by a hash of each file path) are held out to train the baselines; the
            checks measure on the other 1,040. Give pets/train and pets/val to evaluate every
            image."; None when a train split already exists (nothing is moved).

        Raises:
            ValueError: ``fraction`` is not strictly between 0 and 1.
            UsageError: fewer than 2 evaluation images, too few to hold any out.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
        if self.train is not None and len(self.train) > 0:
            return None
        n = len(self.eval)
        if n < 2:
            raise UsageError(
                f"data {self.spec!r} has no train split and {n} image, too few to hold any out {reason}; "
                f"{self.train_split_hint}"
            )
        n_train = self._carve(fraction)
        key_name = getattr(self.eval, "item_key_name", "position")
        return (
            f"data {self.spec!r} has no train split: {n_train:,} of {n:,} images ({fraction:.0%}, chosen by a hash "
            f"of each {key_name}) are held out {reason}; the checks measure on the other {n - n_train:,}. "
            f"{self.train_split_hint}"
        )

    def _carve(self, fraction: float) -> int:
        """Move the hash-chosen share of eval to train (see :meth:`carve_train`); returns the
        number moved."""
        n = len(self.eval)
        n_train = min(max(round(fraction * n), 1), n - 1)
        keys = _item_keys(self.eval)
        ranked = sorted(range(n), key=lambda i: (hash_fraction(keys[i]), i))
        chosen = set(ranked[:n_train])
        source = self.eval
        self.train = subset(source, [i for i in range(n) if i in chosen])
        self.eval = subset(source, [i for i in range(n) if i not in chosen])
        self._settle_size(*self._fit_args)  # the size rule reads the evaluation split: re-read it
        return n_train

    def batches(
        self, split: str = "eval", batch_size: int = 64, limit: int | None = None, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        """Yield batches (on the CPU) from ``split``, the first ``limit`` items or the given
        ``indices``.

        Raises:
            UsageError: a batch's images are outside [0,1] (:class:`PixelRangeError`) or not
                of the size the audit runs at.
        """
        data = self.split(split)
        if indices is None:
            n = len(data) if limit is None else min(limit, len(data))
            indices = range(n)
        indices = list(indices)
        max_boxes = int(getattr(data, "max_boxes", 0))
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            if isinstance(data, TensorSplit):
                contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
                batch = data.slice(idx[0], idx[0] + len(idx)) if contiguous else data.take(idx)
            else:
                items = [data[i] for i in idx]
                try:
                    batch = collate(items, idx, max_boxes)
                except ValueError as exc:
                    raise UsageError(
                        f"data {self.spec!r}: {split} images {idx[0]}-{idx[-1]}: {exc}; give ?size=N in the data "
                        "spec (or resize in the factory) so every image has one size"
                    ) from None
                del items  # the images one by one: a second copy of the batch until the next one
            where = f"{split} images {idx[0]}-{idx[-1]}"
            check_pixel_range(batch.images, self.spec, where)
            if split == "eval" and tuple(batch.images.shape[1:]) != tuple(self.image_shape):
                raise UsageError(
                    f"data {self.spec!r}: {where} have shape {list(batch.images.shape[1:])}, but the audit runs at "
                    f"{list(self.image_shape)}; give ?size=N in the data spec (or resize in the factory) "
                    "so every image has one size"
                )
            yield batch

    def fingerprint(self) -> str:
        """A content hash of both splits (images and labels), for caches keyed by the data."""
        h = hashlib.sha256(self.spec.encode())
        for split in (self.eval, self.train):
            if split is None:
                continue
            h.update(str(len(split)).encode())
            if isinstance(split, TensorSplit):
                h.update(split.images.numpy().tobytes())
                if split.labels is not None:
                    h.update(split.labels.numpy().tobytes())
            else:
                for i in range(len(split)):
                    item = split[i]
                    h.update(item["image"].numpy().tobytes())
                    h.update(str(item.get("label")).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        n_train = 0 if self.train is None else len(self.train)
        return f"AuditData({self.name!r}, eval={len(self.eval)}, train={n_train}, classes={self.num_classes})"
