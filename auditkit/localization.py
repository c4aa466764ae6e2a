"""Localization geometry and scores shared by checks that score saliency maps against
objects: boxes (x0, y0, x1, y1), x1/y1 exclusive, one or several per image, and their pixel
masks; the pointing game (Zhang et al. 2016) with its center-point baseline; the
energy-based pointing game (Wang et al. 2020). Scores take the object as a bool region
[B,H,W] (a segmentation mask, or :func:`box_masks` of an image's boxes: their union) and
maps [B,H,W] at image resolution, so an image with several objects counts a pointing-game
hit on any of them and its energy in all of them."""
from __future__ import annotations

import torch

from auditkit.saliency import minmax_normalize

# Zhang et al. (2016) count a pointing-game hit within 15 pixels of the object at 224 x 224.
POINTING_TOLERANCE_AT_224 = 15.0


def pointing_tolerance_px(height: int, width: int, at_224: float = POINTING_TOLERANCE_AT_224) -> float:
    """The pointing-game tolerance in pixels for a ``height`` x ``width`` image: ``at_224``
    pixels at 224, scaled by the shorter side / 224."""
    return at_224 * min(height, width) / 224.0


def as_box_sets(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes as float [B,M,4], M boxes per image (NaN rows where an image has fewer): [B,4]
    (one box per image) becomes [B,1,4]; [B,M,4] is returned as is.

    Raises:
        ValueError: ``boxes`` is neither [B,4] nor [B,M,4].
    """
    if boxes.ndim == 2 and boxes.shape[-1] == 4:
        return boxes[:, None, :]
    if boxes.ndim == 3 and boxes.shape[-1] == 4:
        return boxes
    raise ValueError(f"boxes must be [B,4] or [B,M,4] (x0, y0, x1, y1), got shape {list(boxes.shape)}")


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool [B,height,width]: the pixels whose centers lie in any box of each image, the union
    of its boxes. ``boxes`` is [B,4] (one box per image) or [B,M,4] (NaN rows where an image
    has fewer than M), each (x0, y0, x1, y1) in pixels, x1/y1 exclusive: pixel x is inside
    when x0 <= x + 0.5 < x1. NaN boxes add nothing; an image with none has an empty mask."""
    sets = as_box_sets(boxes)
    lo = torch.ceil(sets[..., :2] - 0.5)
    hi = torch.ceil(sets[..., 2:] - 0.5) - 1
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    union = torch.zeros(sets.shape[0], height, width, dtype=torch.bool, device=boxes.device)
    for m in range(sets.shape[1]):  # M is small; one [B,H,W] at a time keeps memory flat
        in_cols = (cols[None, :] >= lo[:, m, 0:1]) & (cols[None, :] <= hi[:, m, 0:1])
        in_rows = (rows[None, :] >= lo[:, m, 1:2]) & (rows[None, :] <= hi[:, m, 1:2])
        union |= in_rows[:, :, None] & in_cols[:, None, :]
    return union


def polygon_mask(polygons: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Bool [height,width]: the union of polygons, each float [V,2] of (x, y) vertices in pixel
    coordinates; a pixel is inside when its center (x + 0.5, y + 0.5) is (even-odd rule), the
    same convention as :func:`box_masks`, so a rectangle's polygon gives its box's mask.
    Polygons of fewer than 3 vertices add nothing."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    px = torch.arange(width, dtype=torch.float64) + 0.5
    py = torch.arange(height, dtype=torch.float64) + 0.5
    for polygon in polygons:
        xy = torch.as_tensor(polygon, dtype=torch.float64).reshape(-1, 2)
        if xy.shape[0] < 3:
            continue
        inside = torch.zeros(height, width, dtype=torch.bool)
        x0, y0 = xy[:, 0], xy[:, 1]
        x1, y1 = xy.roll(-1, dims=0)[:, 0], xy.roll(-1, dims=0)[:, 1]
        for k in range(xy.shape[0]):
            crosses = (y0[k] > py) != (y1[k] > py)  # [H]: the edge spans this row's center line
            if not bool(crosses.any()):
                continue
            at_x = x0[k] + (py - y0[k]) * (x1[k] - x0[k]) / (y1[k] - y0[k])
            inside ^= crosses[:, None] & (at_x[:, None] > px[None, :])
        mask |= inside
    return mask


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x0, y0, x1, y1), x1/y1 exclusive, of bool masks [B,H,W]; NaN for empty masks."""
    _, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.full_like(boxes, float("nan")))


def is_constant(maps: torch.Tensor) -> torch.Tensor:
    """Bool [B]: maps that are constant (e.g. all zero after the ReLU): no evidence anywhere."""
    flat = maps.flatten(1)
    return flat.amax(dim=1) <= flat.amin(dim=1)


def peak_points(maps: torch.Tensor) -> torch.Tensor:
    """(col, row) [B,2] of each map's maximum (the first in row-major order)."""
    idx = maps.flatten(1).argmax(dim=1)
    w = maps.shape[-1]
    return torch.stack([idx % w, idx // w], dim=1)


def distance_to_region(points: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in pixels from ``points`` (col, row) [B,2] to the nearest pixel of
    each bool ``region`` [B,H,W]; 0 inside, inf for an empty region."""
    _, h, w = region.shape
    rows = torch.arange(h, device=region.device, dtype=torch.float32)
    cols = torch.arange(w, device=region.device, dtype=torch.float32)
    p = points.to(device=region.device, dtype=torch.float32)
    d2 = (rows[None, :, None] - p[:, 1, None, None]) ** 2 + (cols[None, None, :] - p[:, 0, None, None]) ** 2
    d2 = torch.where(region, d2, torch.full_like(d2, float("inf")))
    return d2.flatten(1).amin(dim=1).sqrt()


def pointing_hits(maps: torch.Tensor, region: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """Pointing game (Zhang et al. 2016): bool [B], True when the map's maximum lies within
    ``tolerance_px`` of the region. A constant map (no evidence, e.g. all zero after the ReLU)
    points nowhere and is a miss."""
    return (distance_to_region(peak_points(maps), region) <= tolerance_px) & ~is_constant(maps)


def center_hits(region: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """The pointing game of a map that always points at the image center, pixel
    (col, row) = (W // 2, H // 2): bool [B]."""
    b, h, w = region.shape
    center = torch.tensor([w // 2, h // 2], device=region.device).expand(b, 2)
    return distance_to_region(center, region) <= tolerance_px


def energy_in_region(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al. 2020): the share of each min-max normalized
    map's mass inside the region, float [B] in [0,1]; 0 for a constant map (it has no mass)."""
    norm = minmax_normalize(maps)
    inside = (norm * region).flatten(1).sum(dim=1)
    total = norm.flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
