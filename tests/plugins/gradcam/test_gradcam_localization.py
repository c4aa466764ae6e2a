"""gradcam.localization: the metrics on maps with known answers, a hand-set colour detector
whose map is exactly the object, and a planted shortcut that must fail where an object-looking
model passes."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import auditkit
from auditkit import Outcome
from auditkit_gradcam.localization import box_iou, connected_components, largest_component_boxes
from gradcam_models import ColourEvidenceNet, two_squares

CHECK = "gradcam.localization"


# -- the check's own geometry (the shared scores are tested in tests/core/test_localization.py)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_scipy_ndimage_label(seed):
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand(3, 40, 33, generator=g) > 0.55
    labels = connected_components(fg)
    for b in range(3):
        expected, n = ndimage.label(fg[b].numpy(), structure=np.ones((3, 3)))
        ours = labels[b].numpy()
        assert len(np.unique(ours[ours > 0])) == n
        # same partition: a one-to-one map between our labels and scipy's
        pairs = {(int(a), int(e)) for a, e in zip(ours[ours > 0], expected[ours > 0])}
        assert len(pairs) == n
        assert (ours > 0).tolist() == (expected > 0).tolist()


def test_largest_component_box_thresholds_at_20_percent_of_the_max():
    maps = torch.zeros(2, 16, 16)
    maps[0, 2:6, 3:9] = 1.0  # 24 px at the max
    maps[0, 10:16, 10:16] = 0.3  # 36 px above 20%: the largest component
    maps[0, 0, 15] = 0.1  # below 20%: ignored
    maps[1, 4:8, 4:8] = 0.15  # all below 20% of 1.0 except the peak
    maps[1, 12, 12] = 1.0
    boxes = largest_component_boxes(maps, 0.2)
    assert boxes.tolist() == [[10.0, 10.0, 16.0, 16.0], [12.0, 12.0, 13.0, 13.0]]
    assert torch.isnan(largest_component_boxes(torch.zeros(1, 8, 8))).all()


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0], [math.nan] * 4])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [4.0, 4.0, 8.0, 8.0], [0.0, 0.0, 1.0, 1.0]])
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


# -- a hand-set detector of a known colour -------------------------------------------------


def _center_hits_by_hand(boxes: torch.Tensor, size: int, tol: float) -> float:
    hits = []
    for x0, y0, x1, y1 in boxes.tolist():
        dx = max(x0 - size // 2, 0, size // 2 - (x1 - 1))
        dy = max(y0 - size // 2, 0, size // 2 - (y1 - 1))
        hits.append(math.hypot(dx, dy) <= tol)
    return sum(hits) / len(hits)


def test_colour_detector_points_exactly_at_the_object_of_its_colour():
    data = two_squares(n=8)
    run = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK])
    result = run[CHECK]
    m = result.metrics
    # Grad-CAM of class k is the colour-k mask: every number is exact
    assert (m["pointing_game"], m["energy_in_box"], m["loc_acc_iou50"], m["mean_iou"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["box_area_share"] == 64 / 1024
    assert m["center_baseline"] == _center_hits_by_hand(data.eval.boxes, 32, 15 * 32 / 224)
    assert m["energy_gain"] == pytest.approx(1 - 64 / 1024)
    assert m["empty_maps"] == 0 and m["n_images"] == 8
    # the layer and the reason are in the message and the details
    assert result.details["layer"] == "evidence" and result.details["layer_source"] == "automatic"
    assert "layer evidence [3,32,32] (automatic: the last layer with a spatial output" in result.message
    assert "explaining the true label" in result.message


def test_colour_detector_looking_at_the_other_square_fails():
    data = two_squares(n=8, box_on="other")
    result = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK])[CHECK]
    m = result.metrics
    assert (m["pointing_game"], m["energy_in_box"], m["loc_acc_iou50"]) == (0.0, 0.0, 0.0)
    assert result.outcome is Outcome.FAILED
    assert "energy_gain_ci_low" in result.message and "pointing_p_value" in result.message
    assert result.thresholds == {"pointing_p_value": {"op": "max", "value": 0.05}, "energy_gain_ci_low": {"op": "min", "value": 0.05}}


def test_explaining_the_predicted_class_instead_of_the_label():
    # both squares are 64 px, so the red and blue logits tie exactly and the prediction is the
    # first of them, red, on every image
    data = two_squares(n=8, box_on="label")
    result = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"explain": "predicted"}})[CHECK]
    labels = data.eval.labels
    # maps point at the red square, which carries the box on the red-labelled images only
    assert result.metrics["pointing_game"] == float((labels == 0).float().mean())
    assert "explaining the predicted class" in result.message


# -- the planted shortcut ------------------------------------------------------------------


def test_planted_shortcut_fails_and_an_object_model_passes(marked_shapes, shortcut_model, object_model):
    # the shortcut is real: right on marked images, chance once the marker is gone
    from auditkit.data.synthetic import make_shapes

    unmarked = make_shapes(n=128, n_train=0, size=32, classes=4, seed=3, spurious=0.0, background="plain")
    with torch.no_grad():
        marked_acc = (shortcut_model(marked_shapes.eval.images).argmax(1) == marked_shapes.eval.labels).float().mean()
        unmarked_acc = (shortcut_model(unmarked.eval.images).argmax(1) == unmarked.eval.labels).float().mean()
    assert marked_acc >= 0.95 and unmarked_acc <= 0.45

    shortcut = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK])[CHECK]
    looking = auditkit.audit(object_model, marked_shapes, checks=[CHECK])[CHECK]
    assert shortcut.outcome is Outcome.FAILED, shortcut.message
    assert looking.outcome is Outcome.PASSED, looking.message
    s, o = shortcut.metrics, looking.metrics
    # the center baseline depends on the data only
    assert s["center_baseline"] == o["center_baseline"] and s["box_area_share"] == o["box_area_share"]
    assert s["pointing_game"] <= 0.1 < 0.9 <= o["pointing_game"]
    assert s["pointing_p_value"] > 0.5 and o["pointing_p_value"] < 0.01
    assert s["energy_in_box"] < s["box_area_share"] + 0.05 < o["energy_in_box"] - 0.2
    for metrics in (s, o):  # every rate comes with an interval around it
        for rate in ("pointing_game", "center_baseline", "loc_acc_iou50", "energy_in_box", "energy_gain", "pointing_gain"):
            assert metrics[f"{rate}_ci_low"] <= metrics[rate] <= metrics[f"{rate}_ci_high"]


def test_worst_localized_images_are_small_pngs_of_the_misses(marked_shapes, shortcut_model):
    result = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK], settings={CHECK: {"worst_images": 3}})[CHECK]
    images = [a for a in result.artifacts if a.kind == "image/png"]
    assert len(images) == 3
    for artifact in images:
        picture = Image.open(io.BytesIO(artifact.data))
        assert picture.format == "PNG" and picture.size == (128, 128)
        assert len(artifact.data) < 40_000
        assert "pointing miss" in artifact.caption


# -- configuration -------------------------------------------------------------------------


def test_thresholds_are_configurable(marked_shapes, shortcut_model):
    relaxed = auditkit.audit(
        shortcut_model, marked_shapes, checks=[CHECK],
        settings={CHECK: {"thresholds": {"pointing_p_value": False, "energy_gain_ci_low": {"min": -1.0}}}},
    )[CHECK]
    assert relaxed.outcome is Outcome.PASSED
    assert relaxed.thresholds == {"energy_gain_ci_low": {"op": "min", "value": -1.0}}
    assert "rule: energy_gain_ci_low >= -1" in relaxed.message


def test_mask_region_and_tolerance_settings():
    data = two_squares(n=8)
    exact = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"region": "mask", "pointing_tolerance": 0}})
    assert exact[CHECK].metrics["pointing_game"] == 1.0 and exact[CHECK].details["pointing_tolerance_px"] == 0.0
    assert exact[CHECK].details["region"] == "mask"


def test_skipped_without_boxes_or_masks(tiny_data, tiny_model):
    result = auditkit.audit(tiny_model, tiny_data, checks=[CHECK])[CHECK]
    assert result.outcome is Outcome.SKIPPED and "no boxes or masks" in result.message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"region": "polygon"}, "region must be"),
        ({"pointing_tolerance": -1}, "pointing_tolerance must be a non-negative number"),
        ({"component_threshold": 1.5}, "component_threshold must be a number in [0, 1)"),
        ({"confidence": 1.0}, "confidence must be a number in (0, 1)"),
        ({"explain": "best"}, "explain must be one of"),
        ({"layers": {"target": 3}}, "layers must map model names to module names"),
        ({"max_images": 0}, "max_images must be a positive integer"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_setting(setting, message):
    with pytest.raises(auditkit.UsageError, match="gradcam.localization") as excinfo:
        auditkit.audit(ColourEvidenceNet(), two_squares(n=2), checks=[CHECK], settings={CHECK: setting})
    assert message in str(excinfo.value)
