"""Small PNG pictures for the reports: a Grad-CAM map over its image with the object's box and
the map's peak, and a strip of maps side by side."""
from __future__ import annotations

import io
from typing import Sequence

import torch
from PIL import Image, ImageDraw

# Pictures are scaled up to at least this side so that a 32-pixel image stays readable in the
# scorecard, and down to at most MAX_SIDE so that a photograph's overlay stays near 50 kB.
MIN_SIDE = 128
MAX_SIDE = 160


def heat_colours(values: torch.Tensor) -> torch.Tensor:
    """A blue -> cyan -> yellow -> red colour map of ``values`` [H,W] in [0,1]: float [3,H,W]."""
    v = values.clamp(0, 1)
    red = (1.5 * v - 0.5).clamp(0, 1)
    green = (1 - 0.9 * (2 * v - 1).abs()).clamp(0, 1)
    blue = (1 - 1.5 * v).clamp(0, 1)
    return torch.stack([red, green, blue])


def overlay_image(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """``image`` [3,H,W] in [0,1] with the map ``heat`` [H,W] (any scale, min-max normalized
    here) blended over it, as a PIL image scaled to the report size."""
    heat = heat.float().cpu()
    span = (heat.max() - heat.min()).clamp_min(1e-12)
    norm = (heat - heat.min()) / span
    blended = (1 - alpha) * image.float().cpu().clamp(0, 1) + alpha * heat_colours(norm)
    return _scaled(_to_pil(blended))


def draw_box(picture: Image.Image, box: Sequence[float], image_size: tuple[int, int], colour: str) -> None:
    """Outline ``box`` (x0, y0, x1, y1 in image pixels, x1/y1 exclusive) on ``picture``."""
    sx, sy = picture.width / image_size[1], picture.height / image_size[0]
    x0, y0, x1, y1 = (float(v) for v in box)
    ImageDraw.Draw(picture).rectangle([x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1], outline=colour, width=2)


def draw_point(picture: Image.Image, point: tuple[int, int], image_size: tuple[int, int], colour: str) -> None:
    """Mark pixel ``point`` (col, row) of the image with a cross."""
    sx, sy = picture.width / image_size[1], picture.height / image_size[0]
    cx, cy = (point[0] + 0.5) * sx, (point[1] + 0.5) * sy
    arm = max(4.0, picture.width / 24)
    draw = ImageDraw.Draw(picture)
    draw.line([cx - arm, cy, cx + arm, cy], fill=colour, width=2)
    draw.line([cx, cy - arm, cx, cy + arm], fill=colour, width=2)


def strip(pictures: Sequence[Image.Image], height: int = 96) -> Image.Image:
    """Pictures side by side at one height."""
    resized = [p.resize((max(1, round(p.width * height / p.height)), height), Image.BILINEAR) for p in pictures]
    out = Image.new("RGB", (sum(p.width for p in resized) + 2 * (len(resized) - 1), height), "white")
    x = 0
    for p in resized:
        out.paste(p, (x, 0))
        x += p.width + 2
    return out


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _to_pil(image: torch.Tensor) -> Image.Image:
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _scaled(picture: Image.Image) -> Image.Image:
    side = max(picture.width, picture.height)
    target = min(max(side, MIN_SIDE), MAX_SIDE)
    if target == side:
        return picture
    scale = target / side
    # Nearest when enlarging keeps small images' pixels crisp; bilinear when shrinking avoids aliasing.
    resample = Image.NEAREST if scale > 1 else Image.BILINEAR
    return picture.resize((round(picture.width * scale), round(picture.height * scale)), resample)
