"""The reconstructions as one PNG: a row per image, the original first, then one reconstruction
per layer in call order."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

# Small images are enlarged (nearest neighbour, so pixels stay visible) to at least this size.
MIN_TILE = 64
GAP = 2


def reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor) -> bytes:
    """PNG bytes of a grid: row r is ``originals[r]`` then ``reconstructions[:, r]``.

    :param originals: [N,3,H,W] in [0,1].
    :param reconstructions: [L,N,3,H,W] in [0,1], one per layer.
    """
    n, _, h, w = originals.shape
    if reconstructions.ndim != 5 or tuple(reconstructions.shape[1:]) != tuple(originals.shape):
        raise ValueError(
            f"reconstructions must be [layers, {', '.join(map(str, originals.shape))}], got {list(reconstructions.shape)}"
        )
    scale = max(1, -(-MIN_TILE // min(h, w)))
    tiles = torch.cat([originals.unsqueeze(0), reconstructions], dim=0).detach().float().cpu().clamp(0, 1)
    tiles = tiles.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    cols, th, tw = tiles.shape[0], h * scale, w * scale
    canvas = np.full((n * th + (n + 1) * GAP, cols * tw + (cols + 1) * GAP, 3), 255, dtype=np.uint8)
    pixels = (tiles * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()  # [cols, rows, th, tw, 3]
    for c in range(cols):
        for r in range(n):
            y, x = GAP + r * (th + GAP), GAP + c * (tw + GAP)
            canvas[y : y + th, x : x + tw] = pixels[c, r]
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()
