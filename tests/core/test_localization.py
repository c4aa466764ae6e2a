"""The shared localization scores (auditkit.localization), used by gradcam.localization on
object masks and by cam.consistency on boxes: exact small cases, images with several boxes,
and brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from auditkit.localization import (
    as_box_sets,
    box_masks,
    boxes_from_masks,
    center_hits,
    distance_to_region,
    energy_in_region,
    pointing_hits,
    pointing_tolerance_px,
    polygon_mask,
)


def pointing_game_hits(maps, boxes, tolerance_px):
    return pointing_hits(maps, box_masks(boxes, *maps.shape[-2:]), tolerance_px)


def energy_in_box(maps, boxes):
    return energy_in_region(maps, box_masks(boxes, *maps.shape[-2:]))


def test_tolerance_is_15_px_at_224_scaled_by_the_shorter_side():
    assert pointing_tolerance_px(224, 224) == 15.0
    assert pointing_tolerance_px(64, 64) == pytest.approx(15 * 64 / 224)
    assert pointing_tolerance_px(112, 448) == 7.5


def test_boxes_from_masks_round_trip_and_empty_masks_have_no_box():
    boxes = torch.tensor([[3.0, 2.0, 8.0, 6.0], [0.0, 0.0, 12.0, 10.0], [11.0, 9.0, 12.0, 10.0]])
    assert torch.equal(boxes_from_masks(box_masks(boxes, 10, 12)), boxes)
    assert torch.isnan(boxes_from_masks(torch.zeros(1, 10, 12, dtype=torch.bool))).all()


def test_distance_to_region():
    region = box_masks(torch.tensor([[3.0, 2.0, 8.0, 6.0]]).expand(5, 4), 10, 12)  # cols 3-7, rows 2-5
    region[4] = False
    points = torch.tensor([[5, 3], [8, 3], [8, 6], [0, 9], [5, 3]])
    expected = [0.0, 1.0, math.sqrt(2), math.hypot(3, 4), math.inf]
    assert distance_to_region(points, region).tolist() == pytest.approx(expected)


def test_box_masks_use_pixel_centers_and_exclusive_ends():
    masks = box_masks(torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.4, 0.0, 1.6, 1.0], [0.6, 0.0, 1.4, 1.0], [math.nan] * 4]), 4, 6)
    assert masks[0].nonzero().tolist() == [[r, c] for r in (1, 2) for c in (2, 3, 4)]
    assert masks[1].nonzero().tolist() == [[0, 0], [0, 1]]  # centers 0.5 and 1.5 lie in [0.4, 1.6)
    assert not masks[2].any() and not masks[3].any()  # no center in [0.6, 1.4); a NaN box is empty


def test_pointing_game_hit_miss_tolerance_and_empty_maps():
    region = box_masks(torch.tensor([[10.0, 10.0, 20.0, 20.0]] * 4), 32, 32)
    maps = torch.zeros(4, 32, 32)
    maps[0, 15, 15] = 1.0  # inside
    maps[1, 15, 23] = 1.0  # 4 px right of the last column (19): outside a 3 px tolerance
    maps[2, 15, 22] = 1.0  # 3 px right: exactly at the tolerance
    # maps[3] stays all zero: no evidence, a miss even though its argmax (0, 0) is arbitrary
    assert pointing_hits(maps, region, 3.0).tolist() == [True, False, True, False]
    assert pointing_hits(maps, region, 5.0).tolist() == [True, True, True, False]


def test_center_baseline_points_at_pixel_w_half_h_half():
    region = box_masks(torch.tensor([[16.0, 16.0, 20.0, 20.0], [20.0, 16.0, 24.0, 20.0], [0.0, 0.0, 4.0, 4.0]]), 32, 32)
    # (16, 16) is the first box's top-left pixel; the second box starts 4 px to its right
    assert center_hits(region, 3.0).tolist() == [True, False, False]
    assert center_hits(region, 4.0).tolist() == [True, True, False]


def test_energy_in_region_is_the_share_of_normalized_mass():
    region = box_masks(torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3), 4, 4)
    maps = torch.zeros(3, 4, 4)
    maps[0, :2, :2] = 1.0
    maps[1] = 1.0
    maps[1, 0, 0] = 3.0  # min-max normalized: 1 at (0,0), 0 elsewhere
    maps[2, 0, 0] = 2.0
    maps[2, 3, 3] = 2.0
    assert energy_in_region(maps, region).tolist() == [1.0, 1.0, 0.5]
    assert energy_in_region(torch.full((1, 4, 4), 7.0), region[:1]).tolist() == [0.0]


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


# --- several boxes per image ------------------------------------------------------------------


def test_box_masks_of_several_boxes_are_their_union_and_nan_rows_add_nothing():
    nan = [math.nan] * 4
    boxes = torch.tensor([
        [[0.0, 0.0, 2.0, 2.0], [3.0, 1.0, 5.0, 3.0]],  # two disjoint boxes
        [[1.0, 1.0, 4.0, 3.0], nan],                  # one box and a padding row
        [nan, nan],                                   # no box at all
    ])
    masks = box_masks(boxes, 4, 6)
    expected = torch.zeros(3, 4, 6, dtype=torch.bool)
    expected[0, 0:2, 0:2] = True
    expected[0, 1:3, 3:5] = True
    expected[1, 1:3, 1:4] = True
    assert torch.equal(masks, expected)
    # [B,4] is one box per image: the same as [B,1,4]
    single = boxes[:2, 0]
    assert torch.equal(box_masks(single, 4, 6), box_masks(single[:, None], 4, 6))
    assert as_box_sets(single).shape == (2, 1, 4) and as_box_sets(boxes) is boxes
    with pytest.raises(ValueError, match="boxes must be"):
        as_box_sets(torch.zeros(2, 5))


def test_pointing_game_counts_any_box_and_energy_is_measured_in_the_union():
    # A 10x10 image with a large box (cols 0-5, rows 0-5: 36 px) and a small box (cols 7-8,
    # rows 7-8: 4 px). The map peaks in the small box; the large box holds a weaker plateau.
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 6.0], [7.0, 7.0, 9.0, 9.0]]])
    maps = torch.zeros(1, 10, 10)
    maps[0, 7:9, 7:9] = 4.0   # peak: inside the small box
    maps[0, 0:6, 0:6] = 1.0   # plateau: inside the large box
    maps[0, 9, 0] = 2.0       # outside both boxes
    tol = 0.0
    all_boxes = box_masks(boxes, 10, 10)
    largest_only = box_masks(boxes[:, 0], 10, 10)
    assert pointing_hits(maps, all_boxes, tol).tolist() == [True]
    assert pointing_hits(maps, largest_only, tol).tolist() == [False]
    # Min-max normalized (min 0, max 4): small box 4 px x 1, large box 36 px x 0.25, the
    # outside pixel 0.5. Union energy = (4 + 9) / (4 + 9 + 0.5); the largest box alone, 9 / 13.5.
    assert energy_in_region(maps, all_boxes).tolist() == pytest.approx([13 / 13.5])
    assert energy_in_region(maps, largest_only).tolist() == pytest.approx([9 / 13.5])
    # The pointing distance is to the nearest box: (8, 8) lies in the small one.
    assert distance_to_region(torch.tensor([[8, 8]]), all_boxes).tolist() == [0.0]
    assert distance_to_region(torch.tensor([[8, 8]]), largest_only).tolist() == pytest.approx([math.hypot(3, 3)])


def _brute_polygon(points: list[tuple[float, float]], h: int, w: int) -> torch.Tensor:
    out = torch.zeros(h, w, dtype=torch.bool)
    for r in range(h):
        for c in range(w):
            x, y = c + 0.5, r + 0.5
            inside = False
            for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
                if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
            out[r, c] = inside
    return out


def test_polygon_mask_uses_pixel_centers_like_box_masks():
    rectangle = torch.tensor([[2.0, 1.0], [6.0, 1.0], [6.0, 4.0], [2.0, 4.0]])
    expected = box_masks(torch.tensor([[2.0, 1.0, 6.0, 4.0]]), 8, 12)[0]
    assert torch.equal(polygon_mask([rectangle], 8, 12), expected)
    fractional = torch.tensor([[1.8, 0.7], [5.2, 0.7], [5.2, 3.1], [1.8, 3.1]])
    assert torch.equal(polygon_mask([fractional], 8, 12), box_masks(torch.tensor([[1.8, 0.7, 5.2, 3.1]]), 8, 12)[0])
    triangle = [(0.5, 0.2), (11.3, 3.7), (4.1, 7.9)]
    assert torch.equal(polygon_mask([torch.tensor(triangle)], 8, 12), _brute_polygon(triangle, 8, 12))
    union = polygon_mask([rectangle, torch.tensor(triangle), torch.tensor([[0.0, 0.0], [1.0, 1.0]])], 8, 12)
    assert torch.equal(union, expected | _brute_polygon(triangle, 8, 12))  # a 2-vertex polygon adds nothing
