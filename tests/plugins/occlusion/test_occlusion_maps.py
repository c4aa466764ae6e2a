"""Occlusion maps: the window grid and its cost, the maps against a loop written out by hand,
and the check's maps against captum's Occlusion called directly, for a white box and the
same weights behind a black box."""
from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import auditkit
from auditkit import BlackBoxTarget, Outcome
from auditkit_occlusion.maps import baseline_colours, occlusion_grid, occlusion_maps
from gradcam_models import ColourEvidenceNet, two_squares

CHECK = "occlusion.localization"


# -- the grid and its cost -------------------------------------------------------------------


def test_default_grid_is_an_eighth_of_the_side_moved_by_half_a_window():
    for side, window, stride in ((32, 4, 2), (64, 8, 4), (224, 28, 14)):
        grid = occlusion_grid(side, side, 1 / 8, 1 / 2)
        assert (grid.window, grid.stride, grid.rows, grid.cols) == (window, stride, 15, 15)
        assert grid.positions == 225 and grid.queries_per_image == 226
    assert occlusion_grid(224, 224, 1 / 8, 1 / 2).describe() == "28x28 windows, stride 14 -> 225 positions"


def test_grid_on_a_non_square_image_covers_every_pixel_with_cut_off_last_windows():
    grid = occlusion_grid(683, 1024, 1 / 8, 1 / 2)
    assert (grid.window, grid.stride) == (85, 42)  # round(683 / 8) = 85; round(42.5) = 42
    # captum's count: windows at 0, 42, ... until one reaches the edge (the last is cut off)
    assert grid.rows == 16 and 15 * 42 + 85 >= 683 > 14 * 42 + 85
    assert grid.cols == 24 and 23 * 42 + 85 >= 1024 > 22 * 42 + 85
    assert occlusion_grid(32, 32, 1.0, 1.0).positions == 1
    assert occlusion_grid(3, 3, 0.1, 0.1).window == 1  # never below one pixel


def test_baseline_colours_are_the_image_mean_or_one_grey():
    images = torch.rand(2, 3, 5, 7)
    assert torch.equal(baseline_colours(images, "mean"), images.mean(dim=(2, 3), keepdim=True))
    assert torch.equal(baseline_colours(images, 0.25), torch.full((2, 3, 1, 1), 0.25))


# -- the maps --------------------------------------------------------------------------------


def _tiny_net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes),
    ).eval()


def test_maps_are_the_mean_score_drop_over_the_windows_covering_each_pixel():
    net = _tiny_net()
    scores = lambda x: torch.softmax(net(x), dim=1)  # noqa: E731
    images, classes = torch.rand(3, 3, 10, 10), torch.tensor([0, 2, 1])
    grid = occlusion_grid(10, 10, 0.4, 0.5)  # 4 px windows, stride 2: 4 x 4 positions
    fill = baseline_colours(images, "mean")
    maps = occlusion_maps(scores, images, classes, grid, fill, perturbations_per_eval=5)

    rows = torch.arange(3)
    total, count = torch.zeros(3, 10, 10), torch.zeros(10, 10)
    with torch.no_grad():
        reference = scores(images)[rows, classes]
        for y in range(0, 7, 2):
            for x in range(0, 7, 2):
                hidden = images.clone()
                hidden[:, :, y : y + 4, x : x + 4] = fill.expand_as(images)[:, :, y : y + 4, x : x + 4]
                total[:, y : y + 4, x : x + 4] += (reference - scores(hidden)[rows, classes])[:, None, None]
                count[y : y + 4, x : x + 4] += 1
    assert torch.allclose(maps, total / count, atol=1e-7)


@pytest.mark.parametrize("baseline", ["mean", 0.5])
def test_white_and_black_box_maps_equal_captum_occlusion_called_directly(map_recorder, baseline):
    net = _tiny_net(classes=3)
    data = two_squares(n=8)
    settings = {CHECK: {"baseline": baseline, "perturbations_per_eval": 7, "bootstrap_resamples": 200}}
    recorder = map_recorder

    white = auditkit.audit(net, data, checks=[CHECK], settings=settings)[CHECK]
    white_maps = recorder.take()
    black = auditkit.audit(lambda x: torch.softmax(net(x), dim=1), data, checks=[CHECK], settings=settings)[CHECK]
    black_maps = recorder.take()

    grid = white_maps["grid"]
    assert (grid.window, grid.stride) == (4, 2)
    # captum on the same network, images, classes and settings, with nothing of auditkit between
    direct = Occlusion(lambda x: torch.softmax(net(x), dim=1)).attribute(
        data.eval.images, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2),
        baselines=data.eval.images.mean(dim=(2, 3), keepdim=True) if baseline == "mean" else baseline,
        target=data.eval.labels, perturbations_per_eval=7,
    )
    assert torch.equal(white_maps["images"], data.eval.images) and torch.equal(white_maps["classes"], data.eval.labels)
    assert (white_maps["maps"] - direct[:, 0]).abs().max() <= 1e-6
    assert (black_maps["maps"] - direct[:, 0]).abs().max() <= 1e-6
    assert torch.equal(direct[:, 0], direct[:, 2])  # the window spans every channel: one map

    # the same weights give the same result, white box or black box
    assert white.outcome == black.outcome and white.outcome is not Outcome.ERROR
    shared = {k: v for k, v in white.metrics.items() if not k.startswith("gradcam_agreement")}
    assert shared == black.metrics
    assert "gradcam_agreement" in white.metrics and "gradcam_agreement" not in black.metrics


def test_batching_perturbations_changes_neither_maps_nor_queries(map_recorder):
    data = two_squares(n=6)
    recorder = map_recorder
    runs, maps = {}, {}
    for p in (1, 225):
        runs[p] = auditkit.audit(ColourEvidenceNet(), data, checks=[CHECK], settings={CHECK: {"perturbations_per_eval": p}})[CHECK]
        maps[p] = recorder.take()["maps"]
    assert (maps[1] - maps[225]).abs().max() <= 1e-6
    assert runs[1].metrics["n_queries"] == runs[225].metrics["n_queries"] == 6 * 225  # + the clean pass's 6


# -- what it costs ---------------------------------------------------------------------------


class CountingBlackBox:
    """Softmax scores of a network, counting every image it is asked about."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.images = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.shape[0])
        with torch.no_grad():
            return torch.softmax(self.net(x), dim=1)


def test_queries_are_counted_exactly_and_announced_before_the_run(capsys):
    data = two_squares(n=10)
    box = CountingBlackBox(ColourEvidenceNet())
    target = BlackBoxTarget(box, name="target")
    settings = {CHECK: {"window": 0.25, "stride": 1.0, "max_images": 7, "bootstrap_resamples": 200}}
    result = auditkit.audit(target, data, checks=[CHECK], settings=settings, verbose=0)[CHECK]
    out = capsys.readouterr().out

    # 8 px windows tiling the 32 px images: 4 x 4 positions, + the image itself = 17 per image
    assert result.details["positions"] == 16 and result.details["queries_per_image"] == 17
    assert result.metrics["n_queries"] == 7 * 17 == 119
    assert "with 119 queries" in result.message
    # the black box saw the probe, the clean pass of the 10 images, and the check's queries
    assert target.queries == 10 + 119 and box.images == 2 + 10 + 119
    assert "target :: occlusion.localization: occlusion of 7 images at 32x32: 8x8 windows, stride 8 -> 16 positions -> 119 queries" in out
    assert out.index("-> 119 queries") < out.index("target :: occlusion.localization ..")


def test_labels_only_black_boxes_are_skipped_with_the_reason():
    net = ColourEvidenceNet()
    labels_only = BlackBoxTarget(lambda x: net(x).argmax(dim=1), returns="labels")
    result = auditkit.audit(labels_only, two_squares(n=8), checks=[CHECK])[CHECK]
    assert result.outcome is Outcome.SKIPPED
    assert "labels only" in result.message and "not scores" in result.message
