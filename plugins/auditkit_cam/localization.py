"""Localization scores of saliency maps against object boxes: the pointing game (Zhang et al.
2016) with its center baseline, and the energy-based pointing game (Wang et al. 2020)."""
from __future__ import annotations

import torch

from auditkit.localization import POINTING_TOLERANCE_AT_224, box_masks, boxes_from_masks, pointing_tolerance_px  # noqa: F401
from auditkit.saliency import minmax_normalize


def box_pixel_ranges(boxes: torch.Tensor) -> torch.Tensor:
    """Inclusive pixel index ranges (col_lo, row_lo, col_hi, row_hi) [B,4] of boxes
    (x0, y0, x1, y1) with x1/y1 exclusive: pixel x is inside when its center x + 0.5 lies in
    [x0, x1), which is x0 <= x <= x1 - 1 for integer boxes."""
    lo = torch.ceil(boxes[:, :2] - 0.5)
    hi = torch.ceil(boxes[:, 2:] - 0.5) - 1
    return torch.cat([lo, hi], dim=1)


def distance_to_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in pixels from pixel ``points`` (col, row) [B,2] to the nearest
    pixel inside each box [B,4]; 0 inside."""
    r = box_pixel_ranges(boxes)
    p = points.to(boxes.dtype)
    dx = torch.clamp(torch.maximum(r[:, 0] - p[:, 0], p[:, 0] - r[:, 2]), min=0)
    dy = torch.clamp(torch.maximum(r[:, 1] - p[:, 1], p[:, 1] - r[:, 3]), min=0)
    return torch.hypot(dx, dy)


def pointing_game_hits(maps: torch.Tensor, boxes: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """Pointing game (Zhang et al. 2016): a hit when the map's maximum lies within
    ``tolerance_px`` of the box.

    :param maps: [B,H,W] at image resolution (upsample first).
    :param boxes: [B,4] (x0, y0, x1, y1), x1/y1 exclusive.
    :returns: bool [B]. The first maximum in row-major order counts; a constant map (no
        evidence anywhere, e.g. all zero after ReLU) points nowhere and is a miss.
    """
    flat = maps.flatten(1)
    idx = flat.argmax(dim=1)
    w = maps.shape[-1]
    points = torch.stack([idx % w, idx // w], dim=1)
    constant = flat.amax(dim=1) <= flat.amin(dim=1)
    return (distance_to_box(points, boxes) <= tolerance_px) & ~constant


def center_baseline_hits(boxes: torch.Tensor, height: int, width: int, tolerance_px: float) -> torch.Tensor:
    """The pointing game of a map that always points at the image center, pixel
    (col, row) = (width // 2, height // 2): bool [B]."""
    center = torch.tensor([width // 2, height // 2], device=boxes.device).expand(boxes.shape[0], 2)
    return distance_to_box(center, boxes) <= tolerance_px


def energy_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's
    energy inside the box, after min-max normalizing each map to [0,1].

    :param maps: non-negative [B,H,W] at image resolution (ReLU'd, upsampled).
    :param boxes: [B,4] (x0, y0, x1, y1), x1/y1 exclusive.
    :returns: float [B] in [0,1]; 0 for a constant map (it has no energy after normalization).
    """
    norm = minmax_normalize(maps)
    inside = (norm * box_masks(boxes, maps.shape[-2], maps.shape[-1])).flatten(1).sum(dim=1)
    total = norm.flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
