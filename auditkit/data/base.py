"""AuditData: the dataset under audit, as batches of images in [0,1] with labels and,
when the data has them, boxes and masks for localization checks."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch


@dataclass
class Batch:
    """One batch. ``images`` is float [B,3,H,W] in [0,1]; ``labels`` long [B]; ``boxes`` float
    [B,4] as (x0, y0, x1, y1) pixel coordinates with x1/y1 exclusive (NaN where an image has
    no box); ``masks`` bool [B,H,W]; ``index`` long [B], positions in the split."""

    images: torch.Tensor
    labels: torch.Tensor | None
    index: torch.Tensor
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.images), move(self.labels), move(self.index), move(self.boxes), move(self.masks))

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Split(Protocol):
    """What AuditData needs of a split: a length and items as dicts with ``image`` (float
    [3,H,W] in [0,1]) and, when known, ``label`` (int), ``box`` (float [4]) and ``mask``
    (bool [H,W])."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


class TensorSplit:
    """A split held as tensors in memory; batches are slices (no per-item Python work)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be float [N,3,H,W], got shape {list(images.shape)}")
        self.images = images.float()
        self.labels = None if labels is None else labels.long()
        self.boxes = None if boxes is None else boxes.float()
        self.masks = None if masks is None else masks.bool()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self.images[i]}
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        if self.boxes is not None:
            item["box"] = self.boxes[i]
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item

    def slice(self, start: int, stop: int) -> Batch:
        sl = slice(start, stop)
        return Batch(
            images=self.images[sl],
            labels=None if self.labels is None else self.labels[sl],
            index=torch.arange(start, min(stop, len(self))),
            boxes=None if self.boxes is None else self.boxes[sl],
            masks=None if self.masks is None else self.masks[sl],
        )


def collate(items: Sequence[dict[str, Any]], index: Sequence[int]) -> Batch:
    images = torch.stack([it["image"] for it in items]).float()
    labels = torch.tensor([it["label"] for it in items]) if all("label" in it for it in items) else None
    boxes = None
    if any("box" in it for it in items):
        nan_box = torch.full((4,), float("nan"))
        boxes = torch.stack([it.get("box", nan_box) for it in items]).float()
    masks = None
    if all("mask" in it for it in items):
        masks = torch.stack([it["mask"] for it in items]).bool()
    return Batch(images, labels, torch.as_tensor(list(index)), boxes, masks)


class AuditData:
    """The data under audit: an evaluation split (what checks measure on) and, when the
    source has one, a disjoint train split (for training baselines and proxies).

    Capabilities: ``labels`` when items carry labels, ``localization`` when the evaluation
    items carry boxes or masks.
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
    ):
        if len(eval) == 0:
            raise ValueError(f"data {name!r} has an empty evaluation split: there is nothing to audit")
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
        first = eval[0]["image"]
        self.image_shape = tuple(int(s) for s in first.shape)

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

    def split(self, name: str) -> Split:
        if name == "eval":
            return self.eval
        if name == "train":
            if self.train is None:
                raise ValueError(f"data {self.name!r} has no train split")
            return self.train
        raise ValueError(f"unknown split {name!r}; expected 'eval' or 'train'")

    def batches(
        self, split: str = "eval", batch_size: int = 64, limit: int | None = None, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        """Yield batches (on the CPU) from ``split``, the first ``limit`` items or the given ``indices``."""
        data = self.split(split)
        if indices is None:
            n = len(data) if limit is None else min(limit, len(data))
            if isinstance(data, TensorSplit):
                for start in range(0, n, batch_size):
                    yield data.slice(start, min(start + batch_size, n))
                return
            indices = range(n)
        indices = list(indices)
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            if isinstance(data, TensorSplit):
                t = torch.as_tensor(idx)
                yield Batch(
                    data.images[t],
                    None if data.labels is None else data.labels[t],
                    t,
                    None if data.boxes is None else data.boxes[t],
                    None if data.masks is None else data.masks[t],
                )
            else:
                yield collate([data[i] for i in idx], idx)

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
