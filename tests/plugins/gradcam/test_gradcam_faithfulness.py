"""gradcam.faithfulness (Petsiuk et al. 2018): deletion and insertion curves with exact areas on
a model whose class probability is a known function of the pixels, and the random-order baseline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import auditkit
from auditkit import AuditData, Outcome, TensorSplit
from auditkit.testing.models import TinyGAPNet
from auditkit_gradcam.faithfulness import gaussian_blur, random_ranks, saliency_ranks, step_counts, trapezoid_auc
from gradcam_models import ColourEvidenceNet, two_squares

CHECK = "gradcam.faithfulness"


class RedChannel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class RedShare(nn.Module):
    """p(class 0) = the mean of the red channel, exactly: logits (log m, log(1 - m)). Its
    ``red_layer`` outputs the red channel, so Grad-CAM of class 0 there is the red channel."""

    def __init__(self) -> None:
        super().__init__()
        self.red_layer = RedChannel()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.pool(self.red_layer(x)).flatten(1).clamp(1e-12, 1 - 1e-12)
        return torch.cat([m.log(), (1 - m).log()], dim=1)


def _red_squares(n: int = 8, size: int = 32, side: int = 16) -> AuditData:
    """Black images with one pure red square of side ``side`` at a random place."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(n, 3, size, size)
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        images[i, 0, y0 : y0 + side, x0 : x0 + side] = 1.0
    return AuditData("red-squares", TensorSplit(images, torch.zeros(n, dtype=torch.long)), num_classes=2)


def test_curve_helpers():
    assert step_counts(1024, 4) == [0, 256, 512, 768, 1024]
    linear = torch.linspace(1, 0, 21)[None]
    assert float(trapezoid_auc(linear)) == pytest.approx(0.5)
    assert float(trapezoid_auc(torch.tensor([[0.0, 1.0, 0.0]]))) == pytest.approx(0.5)
    g = torch.Generator().manual_seed(0)
    ranks = saliency_ranks(torch.tensor([[[0.0, 3.0], [1.0, 0.0]]]), g)
    assert ranks[0, 1] == 0 and ranks[0, 2] == 1 and sorted(ranks[0, [0, 3]].tolist()) == [2, 3]
    # ties are broken at random, not in reading order
    flat_ties = saliency_ranks(torch.zeros(1, 16, 16), torch.Generator().manual_seed(0))
    assert sorted(flat_ties[0].tolist()) == list(range(256)) and flat_ties[0].tolist() != list(range(256))
    r = random_ranks(3, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert all(sorted(row) == list(range(10)) for row in r.tolist())


def test_gaussian_blur_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 36, generator=g, dtype=torch.float64)
    ours = gaussian_blur(x, sigma=2.0, window=9)
    # torch's "reflect" padding is scipy's "mirror"; a 9-tap window at sigma 2 is truncate=2
    reference = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), truncate=2.0, mode="mirror")
    assert np.abs(ours.numpy() - reference).max() < 1e-12


def test_exact_areas_on_a_model_whose_probability_is_the_red_share():
    """A red square covering a = 1/4 of a black image, p(class 0) = share of red: deleting the
    red pixels first gives p = max(a - f, 0), area a^2/2; inserting them first (from black)
    gives p = min(f, a), area a - a^2/2. A random order gives a(1 - f) and a f on average,
    both of area a/2."""
    a = 0.25
    settings = {CHECK: {"steps": 16, "insertion_start": "black", "max_images": None}}  # 64 px a step
    result = auditkit.audit(RedShare(), _red_squares(), checks=[CHECK], settings=settings)[CHECK]
    m = result.metrics
    assert result.details["layer"] == "red_layer"
    assert m["deletion_auc"] == pytest.approx(a * a / 2, abs=1e-6)
    assert m["insertion_auc"] == pytest.approx(a - a * a / 2, abs=1e-6)
    assert m["deletion_auc_random"] == pytest.approx(a / 2, abs=0.01)
    assert m["insertion_auc_random"] == pytest.approx(a / 2, abs=0.01)
    assert m["deletion_gain"] == pytest.approx(m["deletion_auc_random"] - m["deletion_auc"])
    # Grad-CAM's order beats the random one on all 8 images: p = 2^-8 on both curves
    assert m["deletion_p_value"] == m["insertion_p_value"] == pytest.approx(2**-8)
    assert result.outcome is Outcome.PASSED
    curves = {art.name: art.data for art in result.artifacts if art.kind == "curve"}
    assert set(curves) == {"deletion_curve", "deletion_random_curve", "insertion_curve", "insertion_random_curve"}
    expected = [max(a - f, 0.0) for f in curves["deletion_curve"]["x"]]
    assert curves["deletion_curve"]["y"] == pytest.approx(expected, abs=1e-6)


def test_a_model_that_ignores_its_input_fails_outright(tiny_data):
    model = TinyGAPNet(4)
    with torch.no_grad():
        model.fc.weight.zero_()  # logits = bias: nothing any pixel does can move them
    result = auditkit.audit(model, tiny_data, checks=[CHECK], settings={CHECK: {"steps": 4}})[CHECK]
    assert result.outcome is Outcome.FAILED
    assert "the class probability does not move" in result.message


def test_the_colour_detector_is_faithfully_explained():
    """Grad-CAM of the colour detector is the labelled colour's square: deleting it first takes
    the class evidence away at once, a random order only bit by bit."""
    result = auditkit.audit(ColourEvidenceNet(), two_squares(n=8), checks=[CHECK], settings={CHECK: {"steps": 8}})[CHECK]
    m = result.metrics
    assert result.outcome is Outcome.PASSED, result.message
    assert m["deletion_auc"] < m["deletion_auc_random"] and m["insertion_auc"] > m["insertion_auc_random"]
    assert m["deletion_p_value"] == m["insertion_p_value"] == pytest.approx(2**-8)
    assert "fill black" in result.message and "start blur" in result.message


def test_fills_and_starts_are_validated():
    with pytest.raises(auditkit.UsageError, match="deletion_fill must be one of"):
        auditkit.audit(RedShare(), _red_squares(n=2), checks=[CHECK], settings={CHECK: {"deletion_fill": "white"}})
    with pytest.raises(auditkit.UsageError, match="steps must be a positive integer"):
        auditkit.audit(RedShare(), _red_squares(n=2), checks=[CHECK], settings={CHECK: {"steps": 0}})
