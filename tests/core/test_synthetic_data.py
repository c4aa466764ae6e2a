"""Tests for the built-in synthetic:shapes dataset (auditkit.data.synthetic)."""
from __future__ import annotations

import math
import time

import pytest
import torch

from auditkit.data.base import TensorSplit
from auditkit.data.synthetic import (
    MARKER_COLOURS,
    SHAPE_NAMES,
    ShapesSplit,
    make_shapes,
    marker_geometry,
)
from auditkit.errors import UsageError


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(n=64, seed=0)


@pytest.fixture(scope="module")
def marked():
    # Every class may carry the marker, about half the images do.
    return make_shapes(n=400, n_train=0, classes=8, seed=3, spurious=0.5)


def test_shapes_dtypes_and_ranges(shapes):
    assert shapes.name == "synthetic:shapes"
    assert shapes.spec == "synthetic:shapes?n=64&train=256&size=64&classes=4&seed=0"
    assert shapes.num_classes == 4
    assert shapes.class_names == ["circle", "square", "triangle", "cross"]
    assert shapes.has_boxes and shapes.has_masks
    assert shapes.capabilities == frozenset({"labels", "localization"})
    assert shapes.image_shape == (3, 64, 64)
    for split, n in ((shapes.eval, 64), (shapes.train, 256)):
        assert isinstance(split, ShapesSplit) and isinstance(split, TensorSplit)
        assert split.images.shape == (n, 3, 64, 64) and split.images.dtype == torch.float32
        assert split.labels.shape == (n,) and split.labels.dtype == torch.long
        assert split.boxes.shape == (n, 4) and split.masks.shape == (n, 64, 64)
        assert split.masks.dtype == torch.bool
        assert float(split.images.min()) >= 0.0 and float(split.images.max()) <= 1.0
        assert split.markers.shape == (n,) and not split.markers.any()
        assert torch.isnan(split.marker_boxes).all()


def test_same_seed_same_tensors_other_seed_differs():
    first, second = make_shapes(n=16, n_train=8, seed=5), make_shapes(n=16, n_train=8, seed=5)
    other = make_shapes(n=16, n_train=8, seed=6)
    for name in ("images", "labels", "boxes", "masks"):
        assert torch.equal(getattr(first.eval, name), getattr(second.eval, name))
        assert torch.equal(getattr(first.train, name), getattr(second.train, name))
    assert not torch.equal(first.eval.masks, other.eval.masks)
    assert (first.eval.images - other.eval.images).abs().mean() > 0.1


def test_eval_and_train_never_share_an_image(shapes):
    eval_flat = shapes.eval.images.flatten(1)
    train_flat = shapes.train.images.flatten(1)
    nearest = torch.cdist(eval_flat, train_flat).min()
    # Two independent images differ by far more than pixel noise (0.02 * sqrt(12288) ~ 2.2).
    assert nearest > 5.0


def test_eval_split_does_not_depend_on_train_size():
    small, large = make_shapes(n=8, n_train=4, seed=1), make_shapes(n=8, n_train=40, seed=1)
    assert torch.equal(small.eval.images, large.eval.images)
    assert len(small.train) == 4 and len(large.train) == 40
    assert make_shapes(n=8, n_train=0).train is None


def test_boxes_are_tight_around_masks(shapes):
    for split in (shapes.eval, shapes.train):
        for mask, box in zip(split.masks, split.boxes):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(xs) > 0
            expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert torch.equal(box, expected)
            x0, y0, x1, y1 = box.long().tolist()
            inside = torch.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            assert not (mask & ~inside).any()


def test_objects_are_large_enough_for_localization(shapes):
    boxes = torch.cat([shapes.eval.boxes, shapes.train.boxes])
    longest_side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 64
    assert float(longest_side.min()) >= 0.25
    assert float(longest_side.max()) <= 0.55
    # Objects lie fully inside the image, never cut by an edge.
    assert float(boxes[:, :2].min()) >= 1 and float(boxes[:, 2:].max()) <= 63


def test_masks_mark_exactly_the_drawn_object():
    # On plain backgrounds everything outside the mask is one colour plus pixel noise,
    # and the object differs clearly from it: the mask is where the object was drawn.
    data = make_shapes(n=32, n_train=0, classes=8, background="plain", seed=2)
    images, masks = data.eval.images, data.eval.masks
    for image, mask in zip(images, masks):
        outside = image[:, ~mask]
        inside = image[:, mask]
        assert float(outside.std(dim=1).max()) < 0.04
        assert float((inside.mean(dim=1) - outside.mean(dim=1)).norm()) > 0.2


def test_labels_are_balanced_and_cover_all_classes():
    data = make_shapes(n=50, n_train=203, classes=8, seed=4)
    for split in (data.eval, data.train):
        counts = torch.bincount(split.labels, minlength=8)
        assert int(counts.max() - counts.min()) <= 1
    assert data.class_names == list(SHAPE_NAMES)
    # Labels are shuffled, not in class order.
    assert not torch.equal(data.eval.labels, torch.arange(50) % 8)


def test_each_class_has_its_own_shape():
    data = make_shapes(n=240, n_train=0, classes=8, seed=0)
    boxes, masks, labels = data.eval.boxes, data.eval.masks, data.eval.labels
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    fill = masks.sum(dim=(1, 2)) / box_area
    mean_fill = torch.stack([fill[labels == c].mean() for c in range(8)])
    # A circle fills pi/4 of its box; a ring and a star much less; classes differ.
    assert abs(float(mean_fill[SHAPE_NAMES.index("circle")]) - math.pi / 4) < 0.05
    assert float(mean_fill[SHAPE_NAMES.index("ring")]) < 0.6
    assert float(mean_fill[SHAPE_NAMES.index("star")]) < 0.5
    assert len({round(float(f), 2) for f in mean_fill}) >= 6


def test_marker_rate_follows_spurious_probability(marked):
    rate = float(marked.eval.markers.float().mean())
    assert 0.4 < rate < 0.6
    assert "spurious=0.5" in marked.spec
    assert make_shapes(n=32, n_train=0, spurious=1.0).eval.markers.all()
    assert not make_shapes(n=32, n_train=0, spurious=0.0).eval.markers.any()


def test_marker_never_overlaps_the_object_box_and_is_not_in_the_mask(marked):
    split = marked.eval
    assert split.markers.sum() > 100
    for has_marker, marker_box, box, mask in zip(split.markers, split.marker_boxes, split.boxes, split.masks):
        if not has_marker:
            assert torch.isnan(marker_box).all()
            continue
        mx0, my0, mx1, my1 = marker_box.long().tolist()
        x0, y0, x1, y1 = box.tolist()
        assert mx1 <= x0 or x1 <= mx0 or my1 <= y0 or y1 <= my0
        assert not mask[my0:my1, mx0:mx1].any()


def test_marker_colour_and_corner_are_functions_of_the_class(marked):
    split = marked.eval
    side, margin, _ = marker_geometry(64)
    expected_x0 = {0: margin, 1: 64 - margin - side, 2: 64 - margin - side, 3: margin}
    expected_y0 = {0: margin, 1: margin, 2: 64 - margin - side, 3: 64 - margin - side}
    for i in torch.nonzero(split.markers).flatten().tolist():
        label = int(split.labels[i])
        mx0, my0, mx1, my1 = split.marker_boxes[i].long().tolist()
        assert (mx0, my0) == (expected_x0[label % 4], expected_y0[label % 4])
        assert (mx1 - mx0, my1 - my0) == (side, side)
        patch = split.images[i, :, my0:my1, mx0:mx1]
        assert torch.equal(patch, MARKER_COLOURS[label][:, None, None].expand_as(patch))


def test_markers_only_on_spurious_classes():
    data = make_shapes(n=200, n_train=0, classes=4, spurious=1.0, spurious_classes=[1, 3], seed=7)
    labels, markers = data.eval.labels, data.eval.markers
    assert torch.equal(markers, (labels == 1) | (labels == 3))
    assert "spurious_classes=1,3" in data.spec


def test_markers_do_not_change_the_labels():
    # The same seed draws the same random numbers with or without markers: labels agree.
    plain, marked = make_shapes(n=32, n_train=0, seed=9), make_shapes(n=32, n_train=0, seed=9, spurious=1.0)
    assert torch.equal(plain.eval.labels, marked.eval.labels)


def test_small_images_still_have_room_for_markers():
    data = make_shapes(n=64, n_train=0, size=16, spurious=1.0, seed=1)
    assert data.eval.markers.all()
    for marker_box, box in zip(data.eval.marker_boxes, data.eval.boxes):
        mx0, my0, mx1, my1 = marker_box.tolist()
        x0, y0, x1, y1 = box.tolist()
        assert mx1 <= x0 or x1 <= mx0 or my1 <= y0 or y1 <= my0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n": 0}, "n=0"),
        ({"n_train": -1}, "n_train=-1"),
        ({"size": 8}, "size=8"),
        ({"classes": 9}, "classes=9"),
        ({"classes": 1}, "classes=1"),
        ({"spurious": 1.5}, "spurious=1.5"),
        ({"spurious_classes": [4]}, "spurious_classes"),
        ({"background": "stars"}, "background='stars'"),
    ],
)
def test_bad_arguments_raise_usage_error(kwargs, fragment):
    with pytest.raises(UsageError, match="expected") as info:
        make_shapes(n=kwargs.pop("n", 4), **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_generation_is_vectorised():
    make_shapes(n=8)  # warm up torch's kernels
    # CPU time, not wall time, so a busy machine does not fail the test. Typically ~0.3 s;
    # a per-pixel Python loop over these 1.3 million pixels would take minutes.
    start = time.process_time()
    make_shapes(n=64, n_train=256)
    assert time.process_time() - start < 10.0
