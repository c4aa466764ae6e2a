"""cam.consistency on hand-built GAP models whose channels fire on known regions: the CAM, the
identities, the localization scores and the mirror correlation all have exact known answers."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torch import nn

from auditkit import AuditData, Outcome, TensorSplit, Target
from auditkit_cam import class_activation_maps, pool_input_pass

SIZE = 16
RED, GREEN, BLUE = 0, 1, 2
# Class weights over the colour channels (R, G, B): class 0 is "red, and not blue",
# class 1 "blue, and not red". Small integers and powers of two keep every sum exact in float32.
HEAD_WEIGHT = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 0.0, 3.0]])
HEAD_BIAS = torch.tensor([0.5, -0.25])


class ColourGAPNet(nn.Module):
    """A 1x1 convolution copying the colour channels (channel k fires exactly where colour k
    is), global average pooling, and a linear layer with the weights above."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.fc.weight.copy_(HEAD_WEIGHT)
            self.fc.bias.copy_(HEAD_BIAS)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


class PositionalGAPNet(ColourGAPNet):
    """ColourGAPNet whose features also carry a fixed horizontal ramp, antisymmetric about the
    image's vertical midline: its evidence mirrors with the *opposite* sign."""

    def __init__(self):
        super().__init__()
        ramp = torch.arange(SIZE, dtype=torch.float32) - (SIZE - 1) / 2
        self.register_buffer("ramp", ramp.view(1, 1, 1, SIZE).expand(1, 3, SIZE, SIZE).clone())

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x) + self.ramp)))


def _square(image, colour, rows, cols):
    image[colour, rows[0] : rows[1], cols[0] : cols[1]] = 1.0


RED_BOX = (3.0, 2.0, 8.0, 6.0)  # x0, y0, x1, y1 (exclusive): rows 2-5, cols 3-7
BLUE_BOX = (9.0, 10.0, 15.0, 14.0)  # rows 10-13, cols 9-14
CENTER_BOX = (7.0, 7.0, 10.0, 10.0)  # rows 7-9, cols 7-9: holds the center pixel (8, 8)


def _colour_data(boxes: list | None = None) -> AuditData:
    """Four images with known answers (tolerance 15 * 16/224 = 1.07 px; center pixel (8, 8)):

    0: red + blue squares, label 0, box on red  -> CAM_0 peaks on red: hit, energy 1
    1: the same image,    label 1, box on blue -> CAM_1 peaks on blue: hit, energy 1
    2: the same image,    label 1, box on red  -> CAM_1 peaks on blue: miss, energy 0
    3: a red square on the center, label 0     -> hit, energy 1, and the center baseline hits
    The center baseline misses on 0-2: (8, 8) is 3.2 px from the red box, 2.2 px from the blue.
    """
    two = torch.zeros(3, SIZE, SIZE)
    _square(two, RED, (2, 6), (3, 8))
    _square(two, BLUE, (10, 14), (9, 15))
    centred = torch.zeros(3, SIZE, SIZE)
    _square(centred, RED, (7, 10), (7, 10))
    images = torch.stack([two, two, two, centred])
    labels = torch.tensor([0, 1, 1, 0])
    boxes = torch.tensor(boxes or [RED_BOX, BLUE_BOX, RED_BOX, CENTER_BOX])
    return AuditData("colours", TensorSplit(images, labels, boxes), num_classes=2, has_boxes=True)


def test_cam_of_the_hand_built_model_is_exactly_the_weighted_colour_channels():
    data = _colour_data()
    images, labels = data.eval.images, data.eval.labels
    target = Target(ColourGAPNet())
    with target:
        target.probe(images[:2])
        assert target.gap_head is not None and target.gap_head.pool == "pool"
        features_pass = pool_input_pass(target, "pool", images, labels)
    cam = class_activation_maps(features_pass.features, HEAD_WEIGHT, labels)
    expected = torch.zeros(4, SIZE, SIZE)
    # image 0, class 0: +2 on red, -1 on blue
    expected[0, 2:6, 3:8] = 2.0
    expected[0, 10:14, 9:15] = -1.0
    # images 1 and 2, class 1: -1 on red, +3 on blue
    expected[1:3, 2:6, 3:8] = -1.0
    expected[1:3, 10:14, 9:15] = 3.0
    # image 3, class 0: +2 on the central red square
    expected[3, 7:10, 7:10] = 2.0
    assert torch.equal(cam, expected)
    # logits = mean CAM + bias, exactly; Grad-CAM = ReLU(CAM) / 256, exactly
    logits = features_pass.logits.gather(1, labels[:, None])[:, 0]
    assert torch.equal(logits, expected.mean(dim=(1, 2)) + HEAD_BIAS[labels])
    assert torch.equal(features_pass.grad_cam, expected.double().clamp(min=0) / SIZE**2)


def test_the_check_gives_the_known_answers_on_the_hand_built_model(audit_cam):
    result, _ = audit_cam(ColourGAPNet(), _colour_data())
    assert result.outcome is Outcome.PASSED, result.message
    m = result.metrics
    assert m["logit_max_abs_err"] == 0.0 and m["gradcam_max_abs_err"] == 0.0
    assert m["cam_gradcam_corr"] == pytest.approx(1.0, abs=1e-12)
    assert m["flip_corr"] == pytest.approx(1.0, abs=1e-12)  # a 1x1 convolution mirrors exactly
    assert m["pointing_game"] == 0.75
    assert m["energy_in_box"] == 0.75
    assert m["center_baseline"] == 0.25
    assert m["n_localized"] == 4 and m["n_images"] == 4
    assert result.details["pointing_tolerance_px"] == pytest.approx(15 * 16 / 224)
    assert result.details["cam_class"] == "label"


def test_predicted_class_maps_point_where_the_model_looks(audit_cam):
    # Every image is predicted class 0: on the two-square image the logits are
    # 16/256 + 0.5 = 0.5625 against 52/256 - 0.25 = -0.047. With every box on the red square,
    # the label's maps miss on images 1 and 2 (CAM_1 peaks on blue), the prediction's never do.
    data = _colour_data([RED_BOX, RED_BOX, RED_BOX, CENTER_BOX])
    by_label, _ = audit_cam(ColourGAPNet(), data)
    by_prediction, _ = audit_cam(ColourGAPNet(), data, settings={"cam.consistency": {"cam_class": "predicted"}})
    assert by_label.metrics["pointing_game"] == 0.5 and by_label.metrics["energy_in_box"] == 0.5
    assert by_prediction.details["cam_class"] == "predicted"
    assert by_prediction.metrics["pointing_game"] == 1.0 and by_prediction.metrics["energy_in_box"] == 1.0


def test_without_labels_the_prediction_is_explained(audit_cam):
    data = _colour_data()
    unlabelled = AuditData("colours", TensorSplit(data.eval.images), num_classes=2, has_labels=False)
    result, _ = audit_cam(ColourGAPNet(), unlabelled)
    assert result.outcome is Outcome.PASSED
    assert result.details["cam_class"] == "predicted"


def test_mirror_correlation_is_minus_one_for_evidence_that_mirrors_with_the_opposite_sign(audit_cam):
    # Uniformly coloured images: the colour channels are constant, so CAM_c = const + w_c . ramp,
    # whose mirror is const - w_c . ramp, while the mirrored image's CAM is const + w_c . ramp.
    colours = torch.tensor([[0.2, 0.5, 0.9], [0.8, 0.1, 0.3], [0.4, 0.4, 0.4]])
    images = colours[:, :, None, None].expand(3, 3, SIZE, SIZE).clone()
    data = AuditData("uniform", TensorSplit(images, torch.tensor([0, 1, 0])), num_classes=2)
    result, _ = audit_cam(PositionalGAPNet(), data)
    assert result.outcome is Outcome.PASSED, result.message  # still an exact GAP + linear head
    assert result.metrics["flip_corr"] == pytest.approx(-1.0, abs=1e-12)
    assert "pointing_game" not in result.metrics  # no boxes, no localization metrics


def test_overlays_are_small_pngs_of_the_first_images(audit_cam):
    result, _ = audit_cam(ColourGAPNet(), _colour_data(), settings={"cam.consistency": {"overlays": 2}})
    assert [a.name for a in result.artifacts] == ["cam_overlay_0", "cam_overlay_1"]
    first = result.artifacts[0]
    assert first.kind == "image/png" and len(first.data) < 4096
    # logits 0.5625 and -0.046875: softmax gives 0.648 for class 0
    assert first.caption == "image 0: CAM for the label class 0 (predicted 0, p=0.65); white: object box"
    picture = Image.open(io.BytesIO(first.data)).convert("RGB")
    scale = 8  # 16 px enlarged to at least 128 px
    assert picture.size == (2 * SIZE * scale, SIZE * scale)
    x0, y0 = int(RED_BOX[0]) * scale, int(RED_BOX[1]) * scale
    right = SIZE * scale
    assert picture.getpixel((x0, y0)) == (255, 255, 255)  # the box outline, on both panels
    assert picture.getpixel((right + x0, y0)) == (255, 255, 255)
    inside = (x0 + 2 * scale, y0 + 2 * scale)
    assert picture.getpixel(inside) == (255, 0, 0)  # the image: the red square
    # the map is 1 on the red square after min-max: jet(1) = (0.5, 0, 0), blended half and half
    assert picture.getpixel((right + inside[0], inside[1])) == (191, 0, 0)
    # and 0 on the black background: jet(0) = (0, 0, 0.5) -> (0, 0, 0.25)
    assert picture.getpixel((right + 4, 4 * scale + 4)) == (0, 0, 64)
    no_overlays, _ = audit_cam(ColourGAPNet(), _colour_data(), settings={"cam.consistency": {"overlays": 0}})
    assert no_overlays.artifacts == ()
