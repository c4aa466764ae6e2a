"""How images of different sizes become one size a model can batch: kept at their native
size, resized to a given size (``?size=N``), or resized by the shorter side and
center-cropped (torchvision's ImageNet evaluation transform). Boxes and masks move with
exactly the geometry the image moves with. Used lazily, per item, by the data splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# torchvision's ImageNet evaluation transform: shorter side to 256, then the central 224 x 224.
STANDARD_RESIZE = 256
STANDARD_CROP = 224
MODES = ("native", "resize", "resize_center_crop")
_INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """(height, width) from an int (a square) or a sequence of one or two ints."""
    values = [value] if isinstance(value, int) else list(value)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {value!r}")
    return int(values[0]), int(values[1])


@dataclass(frozen=True)
class Geometry:
    """Where the pixels of one image go.

    The image, ``width`` x ``height`` pixels, is resized to ``resized_width`` x
    ``resized_height``; then the window of ``out_width`` x ``out_height`` pixels whose top-left
    corner is at (``left``, ``top``) of the resized image is kept (a window that reaches past
    the resized image is padded with zeros). A point (x, y) in the original pixel coordinates
    (continuous, the top-left corner of the image at (0, 0)) moves to
    (x * scale_x - left, y * scale_y - top).
    """

    width: int
    height: int
    resized_width: int
    resized_height: int
    left: int
    top: int
    out_width: int
    out_height: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    @property
    def is_identity(self) -> bool:
        return (self.resized_width, self.resized_height, self.left, self.top, self.out_width, self.out_height) == (
            self.width, self.height, 0, 0, self.width, self.height
        )

    def points(self, xy: torch.Tensor) -> torch.Tensor:
        """Points (x, y) [...,2] in original pixel coordinates, moved to the output image."""
        xy = torch.as_tensor(xy, dtype=torch.float64)
        scale = torch.tensor([self.scale_x, self.scale_y], dtype=torch.float64)
        offset = torch.tensor([self.left, self.top], dtype=torch.float64)
        return xy * scale - offset

    def boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (x0, y0, x1, y1) [M,4] in original pixel coordinates (x1/y1 exclusive), moved to
        the output image and clipped to it; float32 [M',4], M' <= M. A box left with no area
        (it lies outside the kept window) is dropped, as are NaN rows."""
        boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        moved = self.points(boxes.reshape(-1, 2)).reshape(-1, 4)
        limit = torch.tensor([self.out_width, self.out_height] * 2, dtype=torch.float64)
        clipped = torch.minimum(moved.clamp_min(0), limit)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])  # False for NaN rows
        return clipped[keep].float()


@dataclass(frozen=True)
class Preprocess:
    """How the images of a split are brought to one size, applied lazily to each item.

    - ``mode="native"``: every image keeps its size (they must then share one to batch).
    - ``mode="resize"``: every image is resized to ``size`` = (height, width) pixels, aspect
      ratio not kept (the data spec's ``?size=N``, a square).
    - ``mode="resize_center_crop"``: the shorter side is resized to ``resize_size`` pixels,
      aspect ratio kept (the longer side truncated to an integer, as torchvision computes it),
      then the central ``crop_size`` = (height, width) window is kept: torchvision's
      ``Resize(resize_size)`` + ``CenterCrop(crop_size)``, the standard ImageNet evaluation
      transform at 256 and 224.

    Resizing is antialiased (``interpolation`` ``"bilinear"`` or ``"bicubic"``; bicubic
    overshoot is clipped back to [0,1]); masks are resized with nearest neighbours. Sizes in
    the text of :meth:`describe` are width x height.

    Raises:
        ValueError: an unknown mode or interpolation, or sizes missing or not positive.
    """

    mode: str = "native"
    size: tuple[int, int] | None = None
    resize_size: int | None = None
    crop_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; expected one of {', '.join(_INTERPOLATIONS)}")
        if self.mode == "resize":
            if self.size is None:
                raise ValueError("mode 'resize' needs size")
            object.__setattr__(self, "size", _pair(self.size, "size"))
        if self.mode == "resize_center_crop":
            if self.crop_size is None or self.resize_size is None:
                raise ValueError("mode 'resize_center_crop' needs resize_size and crop_size")
            if isinstance(self.resize_size, bool) or not isinstance(self.resize_size, int) or self.resize_size < 1:
                raise ValueError(f"resize_size must be a positive int, got {self.resize_size!r}")
            object.__setattr__(self, "crop_size", _pair(self.crop_size, "crop_size"))

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def native(cls) -> "Preprocess":
        """Every image at its native size."""
        return cls("native")

    @classmethod
    def resized(cls, size: int | Sequence[int]) -> "Preprocess":
        """Every image resized to ``size`` (an int: a square side; or (height, width))."""
        return cls("resize", size=_pair(size, "size"))

    @classmethod
    def center_crop(
        cls, crop_size: int | Sequence[int], resize_size: int | None = None, interpolation: str = "bilinear"
    ) -> "Preprocess":
        """Shorter side to ``resize_size``, then the central ``crop_size`` (an int: a square; or
        (height, width)). ``resize_size`` defaults to the standard ratio 256/224 of the crop's
        shorter side, rounded."""
        crop = _pair(crop_size, "crop_size")
        if resize_size is None:
            resize_size = round(min(crop) * STANDARD_RESIZE / STANDARD_CROP)
        return cls("resize_center_crop", resize_size=int(resize_size), crop_size=crop, interpolation=interpolation)

    @classmethod
    def standard(cls) -> "Preprocess":
        """torchvision's ImageNet evaluation transform: shorter side to 256, central 224 x 224."""
        return cls.center_crop(STANDARD_CROP, STANDARD_RESIZE)

    @classmethod
    def coerce(cls, value: Any) -> "Preprocess | None":
        """A Preprocess from what a model declares it expects, or None when ``value`` says nothing
        usable: a Preprocess as is; an object or dict with ``crop_size`` and optionally
        ``resize_size`` (torchvision's ``weights.transforms()``, ``ImageClassification``, whose
        sizes are one-element lists) and ``interpolation``; a dict with timm's ``input_size``
        (C, H, W) and ``crop_pct``."""
        if value is None or isinstance(value, Preprocess):
            return value

        def field(name: str) -> Any:
            return value.get(name) if isinstance(value, dict) else getattr(value, name, None)

        interpolation = field("interpolation")
        interpolation = getattr(interpolation, "value", interpolation)
        interpolation = interpolation if interpolation in _INTERPOLATIONS else "bilinear"
        try:
            crop, resize = field("crop_size"), field("resize_size")
            if crop is not None:
                if isinstance(resize, (list, tuple)):
                    resize = resize[0] if len(resize) == 1 else None
                return cls.center_crop(crop, None if resize is None else int(resize), interpolation)
            input_size, crop_pct = field("input_size"), field("crop_pct")
            if input_size is not None and len(input_size) >= 2:
                h, w = int(input_size[-2]), int(input_size[-1])
                resize = None if not crop_pct else int(min(h, w) / float(crop_pct))
                return cls.center_crop((h, w), resize, interpolation)
        except (TypeError, ValueError):
            return None
        return None

    # -- geometry --------------------------------------------------------------------------------

    def geometry(self, width: int, height: int) -> Geometry:
        """Where the pixels of a ``width`` x ``height`` image go under this preprocessing."""
        if self.mode == "native":
            return Geometry(width, height, width, height, 0, 0, width, height)
        if self.mode == "resize":
            h, w = self.size
            return Geometry(width, height, w, h, 0, 0, w, h)
        # Resize(int): torchvision's output size for a shorter-side resize.
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        crop_h, crop_w = self.crop_size
        # CenterCrop: torchvision's anchor, int(round(...)) of the half difference.
        top = int(round((new_h - crop_h) / 2.0))
        left = int(round((new_w - crop_w) / 2.0))
        return Geometry(width, height, new_w, new_h, left, top, crop_w, crop_h)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the output for a ``width`` x ``height`` image."""
        g = self.geometry(width, height)
        return g.out_height, g.out_width

    # -- application -----------------------------------------------------------------------------

    def apply_image(self, image: torch.Tensor, geometry: Geometry | None = None) -> torch.Tensor:
        """float [C,H,W] -> float [C,H',W'] under ``geometry`` (default: this image's)."""
        g = geometry or self.geometry(int(image.shape[-1]), int(image.shape[-2]))
        if g.is_identity:
            return image
        out = image
        if (g.resized_width, g.resized_height) != (g.width, g.height):
            out = TF.resize(
                out, [g.resized_height, g.resized_width], interpolation=_INTERPOLATIONS[self.interpolation], antialias=True
            )
            if self.interpolation == "bicubic":
                out = out.clamp(0, 1)  # cubic resampling overshoots; the source pixels were in [0,1]
        if (g.left, g.top, g.out_width, g.out_height) != (0, 0, g.resized_width, g.resized_height):
            out = TF.crop(out, g.top, g.left, g.out_height, g.out_width)
        return out.contiguous()

    def apply_mask(self, mask: torch.Tensor, geometry: Geometry | None = None) -> torch.Tensor:
        """bool [H,W] -> bool [H',W'] under ``geometry``, nearest-neighbour resized."""
        g = geometry or self.geometry(int(mask.shape[-1]), int(mask.shape[-2]))
        if g.is_identity:
            return mask.bool()
        out = mask.to(torch.uint8)[None]
        if (g.resized_width, g.resized_height) != (g.width, g.height):
            out = TF.resize(out, [g.resized_height, g.resized_width], interpolation=InterpolationMode.NEAREST)
        out = TF.crop(out, g.top, g.left, g.out_height, g.out_width)
        return out[0].bool()

    def apply(
        self, image: torch.Tensor, boxes: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One item: image float [C,H,W], boxes [M,4] (x0, y0, x1, y1, pixels, x1/y1 exclusive)
        and mask bool [H,W], all moved by the same geometry; boxes come back clipped to the
        output, those left with no area dropped (:meth:`Geometry.boxes`)."""
        g = self.geometry(int(image.shape[-1]), int(image.shape[-2]))
        return (
            self.apply_image(image, g),
            None if boxes is None else g.boxes(boxes),
            None if mask is None else self.apply_mask(mask, g),
        )

    # -- description -----------------------------------------------------------------------------

    def describe(self) -> str:
        """One phrase for people, sizes as width x height: ``"native size"``, ``"resized to
        64x64"``, ``"shorter side resized to 256, center-cropped to 224x224"``."""
        if self.mode == "native":
            return "native size"
        if self.mode == "resize":
            return f"resized to {self.size[1]}x{self.size[0]}"
        crop = f"{self.crop_size[1]}x{self.crop_size[0]}"
        bicubic = ", bicubic" if self.interpolation == "bicubic" else ""
        return f"shorter side resized to {self.resize_size}, center-cropped to {crop}{bicubic}"

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, as JSON values (sizes as [height, width])."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "resize":
            out["size"] = list(self.size)
        if self.mode == "resize_center_crop":
            out["resize_size"] = self.resize_size
            out["crop_size"] = list(self.crop_size)
        if self.mode != "native":
            out["interpolation"] = self.interpolation
        return out
