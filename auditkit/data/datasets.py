"""Map-style datasets (torchvision's, a factory's) as an audit split: :class:`DatasetSplit`."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from auditkit.data.base import MAX_SIZE_SCAN
from auditkit.data.image_files import ImageFileSplit, pil_to_tensor
from auditkit.data.preprocess import Preprocess
from auditkit.errors import UsageError


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
