"""Localization geometry shared by checks that score saliency maps against objects: boxes
(x0, y0, x1, y1), x1/y1 exclusive, their pixel masks, and the pointing-game tolerance."""
from __future__ import annotations

import torch

# Zhang et al. (2016) count a pointing-game hit within 15 pixels of the object at 224 x 224.
POINTING_TOLERANCE_AT_224 = 15.0


def pointing_tolerance_px(height: int, width: int, at_224: float = POINTING_TOLERANCE_AT_224) -> float:
    """The pointing-game tolerance in pixels for a ``height`` x ``width`` image: ``at_224``
    pixels at 224, scaled by the shorter side / 224."""
    return at_224 * min(height, width) / 224.0


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool [B,height,width]: the pixels whose centers lie in each box (x0, y0, x1, y1),
    x1/y1 exclusive (pixel x is inside when x0 <= x + 0.5 < x1). NaN boxes give empty masks."""
    lo = torch.ceil(boxes[:, :2] - 0.5)
    hi = torch.ceil(boxes[:, 2:] - 0.5) - 1
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    in_cols = (cols[None, :] >= lo[:, 0:1]) & (cols[None, :] <= hi[:, 0:1])
    in_rows = (rows[None, :] >= lo[:, 1:2]) & (rows[None, :] <= hi[:, 1:2])
    return in_rows[:, :, None] & in_cols[:, None, :]


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
