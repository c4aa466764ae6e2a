"""Small PNG pictures of class activation maps for the reports: the image beside the image
with its map blended over it in a jet colour scale, the object box outlined."""
from __future__ import annotations

import io
import math

import torch
from PIL import Image, ImageDraw

from auditkit.toolkit import minmax_normalize, upsample

# Small inputs are enlarged (nearest neighbour) so the map stays readable in a scorecard.
MIN_PANEL_SIDE = 128
HEAT_OPACITY = 0.5


def jet(values: torch.Tensor) -> torch.Tensor:
    """Map values in [0,1] [H,W] to RGB [3,H,W] in the jet colour scale (blue -> red)."""
    v = values.clamp(0, 1)
    return torch.stack([(1.5 - (4 * v - c).abs()).clamp(0, 1) for c in (3.0, 2.0, 1.0)])


def cam_overlay_png(image: torch.Tensor, cam: torch.Tensor, box: torch.Tensor | None = None) -> bytes:
    """PNG bytes: ``image`` beside ``image`` with ReLU(``cam``) blended over it.

    :param image: float [3,H,W] in [0,1].
    :param cam: raw map [h,w] at feature resolution; ReLU'd, upsampled bilinearly to H x W
        and min-max normalized before colouring.
    :param box: (x0, y0, x1, y1) x1/y1 exclusive, or several [M,4], outlined in white on both
        panels; None or NaN rows for no box.
    """
    image = image.detach().float().cpu().clamp(0, 1)
    height, width = image.shape[-2:]
    heat = minmax_normalize(upsample(cam.detach().float().cpu().clamp_min(0)[None], (height, width)))[0]
    blend = (1 - HEAT_OPACITY) * image + HEAT_OPACITY * jet(heat)
    panels = torch.cat([image, blend], dim=2)
    array = (panels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    picture = Image.fromarray(array)
    scale = max(1, math.ceil(MIN_PANEL_SIDE / min(height, width)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    boxes = () if box is None else box.detach().cpu().reshape(-1, 4)
    for row in boxes:
        if not bool(torch.isfinite(row).all()):
            continue
        draw = ImageDraw.Draw(picture)
        x0, y0, x1, y1 = (float(v) * scale for v in row)
        for offset in (0, width * scale):
            draw.rectangle([x0 + offset, y0, x1 + offset - 1, y1 - 1], outline=(255, 255, 255))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
