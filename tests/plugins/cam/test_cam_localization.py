"""The localization scores used on CAM: exact small cases and brute-force reference versions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from auditkit_cam.localization import (
    box_masks,
    box_pixel_ranges,
    boxes_from_masks,
    center_baseline_hits,
    distance_to_box,
    energy_in_box,
    pointing_game_hits,
    pointing_tolerance_px,
)


def test_tolerance_is_15_px_at_224_scaled_by_the_shorter_side():
    assert pointing_tolerance_px(224, 224) == 15.0
    assert pointing_tolerance_px(64, 64) == pytest.approx(15 * 64 / 224)
    assert pointing_tolerance_px(112, 448) == 7.5


def test_box_pixels_follow_pixel_centres_with_exclusive_ends():
    ranges = box_pixel_ranges(torch.tensor([[3.0, 2.0, 8.0, 6.0], [3.4, 2.6, 7.5, 6.6]]))
    assert ranges.tolist() == [[3, 2, 7, 5], [3, 3, 6, 6]]
    mask = box_masks(torch.tensor([[3.0, 2.0, 8.0, 6.0]]), 10, 12)[0]
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[2:6, 3:8] = True
    assert torch.equal(mask, expected)


def test_boxes_from_masks_round_trip_and_empty_masks_have_no_box():
    boxes = torch.tensor([[3.0, 2.0, 8.0, 6.0], [0.0, 0.0, 12.0, 10.0], [11.0, 9.0, 12.0, 10.0]])
    assert torch.equal(boxes_from_masks(box_masks(boxes, 10, 12)), boxes)
    assert torch.isnan(boxes_from_masks(torch.zeros(1, 10, 12, dtype=torch.bool))).all()


def test_distance_to_box():
    box = torch.tensor([[3.0, 2.0, 8.0, 6.0]]).expand(4, 4)  # cols 3-7, rows 2-5
    points = torch.tensor([[5, 3], [8, 3], [8, 6], [0, 9]])
    assert distance_to_box(points, box).tolist() == pytest.approx([0.0, 1.0, math.sqrt(2), math.hypot(3, 4)])


def test_pointing_game_exact_cases():
    box = torch.tensor([[3.0, 2.0, 8.0, 6.0]])
    maps = torch.zeros(4, 10, 12)
    maps[0, 4, 5] = 1.0  # inside
    maps[1, 4, 9] = 1.0  # 2 px right of the box
    maps[2, 7, 9] = 1.0  # (2, 2) away: 2.83 px
    # maps[3] is constant: points nowhere
    hits = pointing_game_hits(maps, box.expand(4, 4), tolerance_px=2.0)
    assert hits.tolist() == [True, True, False, False]
    assert pointing_game_hits(maps, box.expand(4, 4), tolerance_px=1.99).tolist() == [True, False, False, False]


def test_center_baseline_points_at_the_center_pixel():
    # 10 x 12 image: center pixel (col 6, row 5)
    boxes = torch.tensor([[6.0, 5.0, 7.0, 6.0], [8.0, 5.0, 9.0, 6.0], [0.0, 0.0, 3.0, 3.0]])
    assert center_baseline_hits(boxes, 10, 12, tolerance_px=2.0).tolist() == [True, True, False]


def test_energy_in_box_exact():
    box = torch.tensor([[0.0, 0.0, 2.0, 3.0]])  # 6 pixels
    m = torch.zeros(1, 4, 4)
    m[0, :3, :2] = 3.0
    m[0, 3, :] = 1.5  # 4 pixels outside at half the maximum
    assert energy_in_box(m, box).tolist() == pytest.approx([6 / (6 + 2)])
    # min-max normalization first: a map offset by a constant has the same energy
    assert energy_in_box(m + 7.0, box).tolist() == pytest.approx([6 / (6 + 2)])
    assert energy_in_box(torch.full((1, 4, 4), 2.0), box).tolist() == [0.0]


def _brute_pointing(maps: np.ndarray, boxes: np.ndarray, tol: float) -> list[bool]:
    hits = []
    for m, (x0, y0, x1, y1) in zip(maps, boxes):
        if m.max() == m.min():
            hits.append(False)
            continue
        r, c = np.unravel_index(np.argmax(m), m.shape)
        near = False
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                inside = x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1
                if inside and math.hypot(x - c, y - r) <= tol:
                    near = True
        hits.append(near)
    return hits


def _brute_energy(maps: np.ndarray, boxes: np.ndarray) -> list[float]:
    out = []
    for m, (x0, y0, x1, y1) in zip(maps, boxes):
        n = (m - m.min()) / max(m.max() - m.min(), 1e-12)
        inside = sum(n[y, x] for y in range(m.shape[0]) for x in range(m.shape[1])
                     if x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1)
        out.append(inside / n.sum() if n.sum() > 0 else 0.0)
    return out


def test_pointing_and_energy_agree_with_brute_force_references():
    g = torch.Generator().manual_seed(0)
    n, h, w = 32, 20, 24
    maps = torch.rand(n, h, w, generator=g, dtype=torch.float64) ** 4
    corners = torch.rand(n, 2, generator=g) * torch.tensor([w - 4.0, h - 4.0])
    sizes = 1 + torch.rand(n, 2, generator=g) * 10
    boxes = torch.cat([corners, corners + sizes], dim=1).double()
    tol = pointing_tolerance_px(h, w, 30.0)
    hits = pointing_game_hits(maps, boxes, tol)
    assert hits.tolist() == _brute_pointing(maps.numpy(), boxes.numpy(), tol)
    assert 0 < int(hits.sum()) < n  # both outcomes are exercised
    expected = _brute_energy(maps.numpy(), boxes.numpy())
    np.testing.assert_allclose(energy_in_box(maps, boxes).numpy(), expected, rtol=1e-9)
