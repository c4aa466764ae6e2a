"""What the white-box checks keep for the reports: adversarial examples as small PNG strips and
robust accuracy curves with their confidence bands."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from auditkit.toolkit import Curve, CurvePoint

# Tiles are scaled to about this many pixels a side: big enough to see a 32x32 image,
# small enough that a scorecard with a dozen examples stays light.
_TILE = 96
_GAP = 4


def example_strip(original: torch.Tensor, adversarial: torch.Tensor) -> tuple[bytes, float]:
    """A PNG strip of three tiles, original | adversarial | perturbation amplified, from
    images [3,H,W] in [0,1]. The perturbation is shown as 0.5 + gain * delta, with the gain
    (returned) chosen so the largest change spans half the grey range."""
    delta = (adversarial - original).float()
    peak = float(delta.abs().max())
    gain = 0.5 / peak if peak > 0 else 1.0
    tiles = [original.float(), adversarial.float(), (0.5 + gain * delta).clamp(0, 1)]
    arrays = [(t.detach().cpu().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in tiles]
    h, w = arrays[0].shape[:2]
    scale = _TILE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    pictures = [Image.fromarray(a).resize(size, resample) for a in arrays]
    strip = Image.new("RGB", (3 * size[0] + 2 * _GAP, size[1]), (255, 255, 255))
    for i, picture in enumerate(pictures):
        strip.paste(picture, (i * (size[0] + _GAP), 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), gain


def accuracy_curve(
    norm: str, label: str, eps: list[float], acc: list[float], lo: list[float], hi: list[float]
) -> Curve:
    """Robust accuracy against the ``norm`` budget with its 95% Wilson band, for the reports."""
    return Curve(
        name=f"robust_acc_{norm}",
        metric="robust_acc",
        norm=norm,
        points=tuple(CurvePoint(float(e), float(a), float(low), float(high)) for e, a, low, high in zip(eps, acc, lo, hi)),
        label=label,
        x_label="epsilon",
        y_label="robust accuracy",
        caption=f"{label}: robust accuracy vs epsilon, 95% Wilson interval",
    )
