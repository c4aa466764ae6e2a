"""occlusion.localization: the toolkit's localization rule on occlusion maps, with known answers
(a colour detector that looks at the labelled square or not; the planted corner-marker
shortcut, trained and the demo's own), Grad-CAM agreement, and its settings."""
from __future__ import annotations

import pytest
import torch

import auditkit
from auditkit import Outcome
from auditkit.toolkit import LOCALIZATION_DIRECTIONS, LOCALIZATION_METRICS, LOCALIZATION_THRESHOLDS, box_masks
from auditkit_gradcam.localization import GradCamLocalization
from auditkit_occlusion.localization import OcclusionLocalization
from gradcam_models import ColourEvidenceNet, two_squares

CHECK = "occlusion.localization"
GRADCAM = "gradcam.localization"


def test_same_rule_and_names_as_gradcam_localization():
    assert OcclusionLocalization.thresholds == GradCamLocalization.thresholds == LOCALIZATION_THRESHOLDS
    assert OcclusionLocalization.min_sample == GradCamLocalization.min_sample == 5
    assert set(LOCALIZATION_METRICS) <= set(OcclusionLocalization.metrics)
    assert GradCamLocalization.metrics == LOCALIZATION_METRICS and GradCamLocalization.directions == LOCALIZATION_DIRECTIONS
    for metric in LOCALIZATION_METRICS:
        assert OcclusionLocalization.direction(metric) == GradCamLocalization.direction(metric), metric
    assert OcclusionLocalization.direction("gradcam_agreement_ci_low") == "higher"
    assert OcclusionLocalization.direction("n_queries") is None and OcclusionLocalization.declares("n_queries")


# -- a hand-set detector of a known colour -------------------------------------------------


def test_colour_detector_passes_on_its_square_and_fails_on_the_other():
    # class k's score is the share of colour-k pixels: hiding the labelled square lowers it
    on = auditkit.audit(ColourEvidenceNet(), two_squares(n=16), checks=[CHECK])[CHECK]
    off = auditkit.audit(ColourEvidenceNet(), two_squares(n=16, box_on="other"), checks=[CHECK])[CHECK]
    assert on.outcome is Outcome.PASSED, on.message
    assert off.outcome is Outcome.FAILED, off.message
    m, o = on.metrics, off.metrics
    assert m["pointing_game"] == 1.0 and o["pointing_game"] == 0.0
    assert m["energy_in_box"] > 0.75 and o["energy_in_box"] == 0.0  # hiding the other square only raises the score
    assert m["loc_acc_iou50"] >= 0.75 and m["empty_maps"] == 0
    # 225 occluded copies per image; the images themselves were scored by the shared clean pass
    assert m["n_queries"] == o["n_queries"] == 16 * 225
    assert "explaining the true label on 16 images with 3,600 queries" in on.message


# -- the planted shortcut ------------------------------------------------------------------


def _peaks_on_the_marker(recorded: dict, marker_boxes: torch.Tensor) -> torch.Tensor:
    """Bool [N]: each recorded occlusion map peaks within one window of the image's corner marker."""
    maps, window = recorded["maps"], recorded["grid"].window
    marker = box_masks(marker_boxes, *maps.shape[-2:]).float()[:, None]
    near = torch.nn.functional.max_pool2d(marker, 2 * window + 1, stride=1, padding=window)[:, 0] > 0
    return near.flatten(1)[torch.arange(len(maps)), maps.flatten(1).argmax(1)]


def test_planted_shortcut_fails_as_it_fails_grad_cam_localization(marked_shapes, shortcut_model, map_recorder):
    run = auditkit.audit(shortcut_model, marked_shapes, checks=[CHECK, GRADCAM], settings={GRADCAM: {"max_images": 32}})
    occlusion, gradcam = run[CHECK], run[GRADCAM]
    assert occlusion.outcome is Outcome.FAILED, occlusion.message
    assert gradcam.outcome is Outcome.FAILED, gradcam.message
    m = occlusion.metrics
    assert m["pointing_game"] <= 0.1 and m["pointing_p_value"] > 0.5
    assert m["energy_gain_ci_low"] < 0.05
    # the evidence is the corner marker: hiding it is what lowers the score
    on_marker = _peaks_on_the_marker(map_recorder.take(), marked_shapes.eval.marker_boxes[:32])
    assert on_marker.float().mean() >= 0.9


@pytest.mark.slow
def test_the_demo_model_fails_occlusion_localization_on_the_demo_data(map_recorder):
    from auditkit.data.loaders import load_data
    from auditkit.demo import DEMO_DATA, DEMO_MAX_IMAGES, train_demo_model

    model, _ = train_demo_model(torch.device("cpu"), lambda iterable, **_: iterable)
    data = load_data(DEMO_DATA)
    run = auditkit.audit(model, data, checks=[CHECK, GRADCAM], max_images=DEMO_MAX_IMAGES)
    assert run[CHECK].outcome is Outcome.FAILED, run[CHECK].message
    assert run[GRADCAM].outcome is Outcome.FAILED, run[GRADCAM].message
    m = run[CHECK].metrics
    assert m["pointing_game"] < m["center_baseline"] - 0.25 and m["pointing_p_value"] > 0.5
    # on the images that carry the marker, hiding the marker is what lowers the score most
    n = int(run[CHECK].metrics["n_images"])
    marked = data.eval.markers[:n]
    on_marker = _peaks_on_the_marker(map_recorder.take(), data.eval.marker_boxes[:n])
    assert marked.sum() >= 5 and on_marker[marked].float().mean() >= 0.8  # measured: 9 of 9


# -- Grad-CAM agreement --------------------------------------------------------------------


def test_gradcam_agreement_on_white_boxes_only():
    data = two_squares(n=8)
    net = ColourEvidenceNet()
    white = auditkit.audit(net, data, checks=[CHECK])[CHECK]
    m = white.metrics
    # Grad-CAM of the colour detector is the colour mask; occlusion agrees, short of the ties
    assert 0.4 < m["gradcam_agreement_ci_low"] <= m["gradcam_agreement"] <= m["gradcam_agreement_ci_high"] < 0.8
    assert m["gradcam_agreement_images"] == 8
    assert white.details["gradcam_agreement"]["layer"] == "evidence"
    assert "Grad-CAM agreement at layer evidence: mean rank correlation" in white.message

    off = auditkit.audit(net, data, checks=[CHECK], settings={CHECK: {"gradcam_agreement": False}})[CHECK]
    assert not any(k.startswith("gradcam_agreement") for k in off.metrics)
    assert {k: v for k, v in m.items() if not k.startswith("gradcam_agreement")} == off.metrics

    black = auditkit.audit(lambda x: torch.softmax(net(x), 1), data, checks=[CHECK])[CHECK]
    assert "gradcam_agreement" not in black.metrics and "Grad-CAM" not in black.message


def test_agreement_layer_is_the_one_the_gradcam_checks_choose_and_can_be_set():
    data = two_squares(n=8)
    run = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK, GRADCAM])
    assert run[CHECK].details["gradcam_agreement"]["layer"] == run[GRADCAM].details["layer"] == "evidence"
    # a layer that does not fit the model is found when the check meets the model, as in gradcam's checks
    wrong = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"layer": "evidenc"}})[CHECK]
    assert wrong.outcome is Outcome.ERROR and "has no layer 'evidenc' (similar: evidence" in wrong.message


# -- configuration -------------------------------------------------------------------------


def test_skipped_without_boxes_or_masks(tiny_data, tiny_model):
    result = auditkit.audit(tiny_model, tiny_data, checks=[CHECK])[CHECK]
    assert result.outcome is Outcome.SKIPPED and "no boxes or masks" in result.message


def test_explaining_the_predicted_class():
    # both squares are 64 px, so red and blue tie and the prediction is red on every image
    data = two_squares(n=8)
    result = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"explain": "predicted"}})[CHECK]
    assert result.metrics["pointing_game"] == float((data.eval.labels == 0).float().mean())
    assert "explaining the predicted class" in result.message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"window": 0}, "window must be a fraction of the image's shorter side in (0, 1], got 0"),
        ({"window": 1.5}, "window must be a fraction of the image's shorter side in (0, 1], got 1.5"),
        ({"stride": 0.0}, "stride must be a fraction of the window in (0, 1], got 0.0"),
        ({"baseline": "grey"}, "baseline must be"),
        ({"baseline": 2}, "baseline must be 'mean' or a grey level in [0, 1], got 2"),
        ({"explain": "both"}, "explain must be one of"),
        ({"max_images": 0}, "max_images must be a positive integer or unset, got 0"),
        ({"perturbations_per_eval": 0}, "perturbations_per_eval must be a positive integer, got 0"),
        ({"gradcam_agreement": "yes"}, "gradcam_agreement must be"),
        ({"region": "polygon"}, "region must be"),
        ({"confidence": 1.0}, "confidence must be a number in (0, 1), got 1.0"),
        ({"windw": 0.1}, "unknown setting 'windw' (did you mean 'window'?)"),
        ({"thresholds": {"n_querys": {"max": 10}}}, "did you mean 'n_queries'?"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(setting, message):
    with pytest.raises(auditkit.UsageError, match="occlusion.localization") as excinfo:
        auditkit.audit(ColourEvidenceNet(), two_squares(n=2), checks=[CHECK], settings={CHECK: setting})
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_region_mask_needs_masks():
    data = two_squares(n=8)
    data.has_masks = False
    result = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"region": "mask"}})[CHECK]
    assert result.outcome is Outcome.ERROR and "region = 'mask' needs masks" in result.message
    assert result.metrics == {}  # refused before the first query
