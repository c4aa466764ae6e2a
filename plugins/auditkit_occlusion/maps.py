"""Occlusion maps through a model's answers only (Zeiler and Fergus 2014): slide a window of a
baseline colour over the image and record how much the explained class's score drops. The
maps are captum's ``Occlusion``; this module sizes its window grid, counts what it costs, picks
the baseline colour, and lets the unoccluded images' scores come from a pass already made."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class OcclusionGrid:
    """Where the occluding window goes on an ``height`` x ``width`` image: a square of
    ``window`` pixels (over every channel), moved ``stride`` pixels at a time from the top-left
    corner, as captum places it (the last window of a row or column may be cut off by the
    image's edge, so every pixel is covered)."""

    height: int
    width: int
    window: int
    stride: int

    @property
    def rows(self) -> int:
        return math.ceil((self.height - self.window) / self.stride) + 1

    @property
    def cols(self) -> int:
        return math.ceil((self.width - self.window) / self.stride) + 1

    @property
    def positions(self) -> int:
        """Occluded copies of each image."""
        return self.rows * self.cols

    @property
    def queries_per_image(self) -> int:
        """Images sent to the model per explained image: every occluded copy, and the image
        itself once (the score the drops are measured from), unless its score is already
        known (:func:`with_known_scores`)."""
        return self.positions + 1

    def describe(self) -> str:
        """``28x28 windows, stride 14 -> 225 positions``."""
        return f"{self.window}x{self.window} windows, stride {self.stride} -> {self.positions:,} positions"


def occlusion_grid(height: int, width: int, window: float, stride: float) -> OcclusionGrid:
    """The grid for an ``height`` x ``width`` image: a window of ``window`` times the shorter
    side, rounded (at least 1 pixel), moved by ``stride`` times the window, rounded (at least
    1 pixel). With the defaults (1/8, 1/2), 15 x 15 = 225 positions at any square size whose
    side is a multiple of 16 (4 px windows at 32 px, 28 px at 224)."""
    side = max(1, round(window * min(height, width)))
    step = max(1, round(stride * side))
    return OcclusionGrid(int(height), int(width), int(side), int(step))


def baseline_colours(images: torch.Tensor, baseline: float | str) -> torch.Tensor:
    """The colour an occluded window is filled with, per image and channel, [B,C,1,1]: the
    image's own mean colour (``"mean"``) or one grey level in [0,1] for every image."""
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True)
    return torch.full((*images.shape[:2], 1, 1), float(baseline), dtype=images.dtype, device=images.device)


def with_known_scores(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, scores: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` (images [N,C,H,W] -> scores [N,K]), except that asked about ``images``
    itself, the very tensor, it answers ``scores`` [B,K] without calling ``forward``: how the
    occlusion maps take the unoccluded images' scores (captum's ``Occlusion`` asks for them
    first, as the reference every drop is measured from) from the shared clean pass. The
    maps are unchanged wherever ``scores`` are what ``forward(images)`` returns."""

    def answer(x: torch.Tensor) -> torch.Tensor:
        return scores if x is images else forward(x)

    return answer


def occlusion_maps(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    classes: torch.Tensor,
    grid: OcclusionGrid,
    baselines: torch.Tensor | float,
    perturbations_per_eval: int,
) -> torch.Tensor:
    """Occlusion maps [B,H,W] of ``images`` [B,C,H,W] for ``classes`` (long [B]): at each
    pixel, the mean drop of the class's score (``forward(x)[:, class]``, scores [N,K]) over the
    windows that cover it; positive where hiding the pixel lowers the score. Computed by
    ``captum.attr.Occlusion`` with ``perturbations_per_eval`` occluded copies of each image
    per call of ``forward`` (a call carries B x that many images) and the window spanning
    every channel, so every channel's attribution is the same map. ``forward`` is called
    ``grid.queries_per_image`` times per image in all.
    """
    from captum.attr import Occlusion  # imported here: only this check needs captum

    channels = int(images.shape[1])
    attributions = Occlusion(forward).attribute(
        images,
        sliding_window_shapes=(channels, grid.window, grid.window),
        strides=(channels, grid.stride, grid.stride),
        baselines=baselines,
        target=classes,
        perturbations_per_eval=perturbations_per_eval,
    )
    return attributions[:, 0]
