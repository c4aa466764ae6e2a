"""What the audit sees of real data (auditkit.data.preprocess, AuditData.fit_to/carve_train,
the pixel contract): native sizes kept, mixed sizes resized and center-cropped the standard
way with boxes moved by hand-checked geometry, every image evaluated unless a train share is
held out, and images outside [0,1] refused on every route."""
from __future__ import annotations

import hashlib
import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from auditkit.data.base import AuditData, TensorSplit
from auditkit.data.loaders import load_data, pil_to_tensor
from auditkit.data.preprocess import Preprocess
from auditkit.data.synthetic import make_shapes
from auditkit.errors import UsageError


def _gradient_image(path: Path, width: int, height: int) -> None:
    """An RGB image whose pixels vary (so resizing and cropping are visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.arange(width)[None, :].expand(height, width)
    y = torch.arange(height)[:, None].expand(height, width)
    rgb = torch.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], dim=-1).to(torch.uint8)
    Image.fromarray(rgb.numpy()).save(path)


# --- Preprocess -------------------------------------------------------------------------------


def test_resize_center_crop_equals_torchvision_and_moves_boxes_by_the_same_geometry():
    image = torch.rand(3, 300, 400, generator=torch.Generator().manual_seed(0))
    pre = Preprocess.standard()
    out, boxes, _ = pre.apply(image, torch.tensor([[100.0, 50.0, 300.0, 250.0]]))
    reference = TF.center_crop(TF.resize(image, [256], antialias=True), [224])
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, reference)
    # By hand: shorter side 300 -> 256, longer 400 -> int(256 * 400 / 300) = 341; crop offsets
    # top = round((256 - 224) / 2) = 16, left = round((341 - 224) / 2) = round(58.5) = 58.
    sx, sy = 341 / 400, 256 / 300
    expected = [100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 250 * sy - 16]
    assert boxes.tolist() == [pytest.approx(expected, abs=1e-4)]
    g = pre.geometry(400, 300)
    assert (g.resized_width, g.resized_height, g.left, g.top, g.out_width, g.out_height) == (341, 256, 58, 16, 224, 224)


def test_boxes_are_clipped_to_the_crop_and_dropped_when_cropped_away():
    pre = Preprocess.standard()
    image = torch.rand(3, 500, 200)  # portrait: 200 -> 256, 500 -> 640; top = 208, left = 16
    boxes = torch.tensor([[10.0, 20.0, 60.0, 100.0], [50.0, 200.0, 150.0, 300.0], [0.0, 150.0, 100.0, 250.0]])
    _, moved, _ = pre.apply(image, boxes)
    # box 0 lies above the crop (y1 = 100 * 1.28 - 208 < 0): dropped; box 1 by hand (scale 1.28);
    # box 2 starts left of and above the crop (x0 = -16, y0 = 150 * 1.28 - 208 = -16): clipped to 0.
    assert moved.tolist() == [
        pytest.approx([50 * 1.28 - 16, 200 * 1.28 - 208, 150 * 1.28 - 16, 300 * 1.28 - 208]),
        pytest.approx([0.0, 0.0, 100 * 1.28 - 16, 250 * 1.28 - 208]),
    ]


def test_masks_move_with_the_image():
    mask = torch.zeros(300, 400, dtype=torch.bool)
    mask[50:250, 100:300] = True
    pre = Preprocess.standard()
    _, boxes, moved = pre.apply(torch.rand(3, 300, 400), torch.tensor([[100.0, 50.0, 300.0, 250.0]]), mask)
    ys, xs = torch.nonzero(moved, as_tuple=True)
    x0, y0, x1, y1 = boxes[0].tolist()
    # nearest-neighbour resizing keeps the mask's edges within one pixel of the moved box
    assert abs(int(xs.min()) - x0) <= 1 and abs(int(xs.max()) + 1 - x1) <= 1
    assert abs(int(ys.min()) - y0) <= 1 and abs(int(ys.max()) + 1 - y1) <= 1


def test_preprocess_from_what_models_declare():
    from torchvision.transforms._presets import ImageClassification

    v2_weights = Preprocess.coerce(ImageClassification(crop_size=224, resize_size=232))
    assert (v2_weights.mode, v2_weights.resize_size, v2_weights.crop_size) == ("resize_center_crop", 232, (224, 224))
    timm = Preprocess.coerce({"input_size": (3, 288, 288), "crop_pct": 0.95, "interpolation": "bicubic"})
    assert (timm.resize_size, timm.crop_size, timm.interpolation) == (int(288 / 0.95), (288, 288), "bicubic")
    assert Preprocess.coerce(None) is None and Preprocess.coerce("what?") is None
    assert Preprocess.center_crop(224).resize_size == 256 and Preprocess.center_crop(112).resize_size == 128
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        Preprocess("squash")


# --- ImageFolder and COCO sizes ---------------------------------------------------------------


def test_image_folder_of_one_size_keeps_it(tmp_path):
    for name in ("cat", "dog"):
        for k in range(3):
            _gradient_image(tmp_path / "pets" / name / f"{k}.png", width=50, height=30)
    data = load_data(str(tmp_path / "pets"))
    assert data.image_shape == (3, 30, 50)
    batch = next(data.batches(batch_size=6))
    assert batch.images.shape == (6, 3, 30, 50)
    with Image.open(tmp_path / "pets" / "cat" / "0.png") as raw:
        assert torch.equal(batch.images[0], pil_to_tensor(raw))  # untouched pixels
    assert data.preprocessing["mode"] == "native" and data.preprocessing["description"] == "native 50x30 (all 6 evaluation images)"
    assert data.fit_to(None, None) is None  # one size and a model that takes any: kept
    assert data.image_shape == (3, 30, 50)
    assert data.fit_to((3, 30, 50), None) is None  # the model's fixed size is the images' own
    assert data.image_shape == (3, 30, 50)


def test_a_models_own_evaluation_transform_wins_over_native_size(tmp_path):
    # A pretrained model's accuracy is defined with its weights' transform (resize + crop),
    # so photographs of one size still get it when the model declares it.
    for name in ("cat", "dog"):
        for k in range(3):
            _gradient_image(tmp_path / "pets" / name / f"{k}.png", width=50, height=30)
    data = load_data(str(tmp_path / "pets"))
    line = data.fit_to((3, 224, 224), Preprocess.standard(), "as resnet50 expects")
    assert data.image_shape == (3, 224, 224)
    assert data.preprocessing["mode"] == "resize_center_crop" and data.preprocessing["chosen_by"] == "auditkit"
    assert line is not None and "as resnet50 expects" in line and "224" in line


def _mixed_coco(tmp_path: Path) -> Path:
    sizes = [(400, 300), (200, 500), (300, 300)]
    images, annotations = [], []
    for k, (w, h) in enumerate(sizes):
        _gradient_image(tmp_path / f"im{k}.png", w, h)
        images.append({"id": k, "file_name": f"im{k}.png"})
    boxes = {0: [[100, 50, 200, 200]], 1: [[10, 20, 50, 80], [50, 200, 100, 100]], 2: [[0, 0, 300, 300]]}
    for k, image_boxes in boxes.items():
        for j, b in enumerate(image_boxes):
            annotations.append({"id": 10 * k + j, "image_id": k, "category_id": 1 + k % 2, "bbox": b})
    path = tmp_path / "mixed.json"
    categories = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]  # one class is refused
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_mixed_sizes_are_resized_and_center_cropped_with_their_boxes(tmp_path):
    data = load_data(str(_mixed_coco(tmp_path)))
    assert data.image_shape == (3, 224, 224) and len(data.eval) == 3 and data.train is None
    record = data.preprocessing
    assert (record["mode"], record["resize_size"], record["crop_size"], record["native_sizes"]) == (
        "resize_center_crop", 256, [224, 224], 3
    )
    assert record["description"].startswith(
        "the 3 evaluation images have 3 different sizes (from 300x300 to 400x300): "
        "shorter side resized to 256, center-cropped to 224x224 (the standard ImageNet evaluation transform"
    )
    first, portrait, square = data.eval[0], data.eval[1], data.eval[2]
    with Image.open(tmp_path / "im0.png") as raw:
        reference = TF.center_crop(TF.resize(pil_to_tensor(raw), [256], antialias=True), [224])
    assert torch.equal(first["image"], reference)
    sx, sy = 341 / 400, 256 / 300  # 400x300 -> 341x256, crop at left 58, top 16
    assert first["boxes"].tolist() == [pytest.approx([100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 250 * sy - 16], abs=1e-4)]
    # 200x500 -> 256x640 (scale 1.28), crop at left 16, top 208: the first box lies above the crop
    assert portrait["boxes"].tolist() == [pytest.approx([50 * 1.28 - 16, 200 * 1.28 - 208, 150 * 1.28 - 16, 300 * 1.28 - 208])]
    # 300x300 -> 256x256, crop at 16, 16: the whole-image box becomes the whole crop
    assert square["boxes"].tolist() == [pytest.approx([0.0, 0.0, 224.0, 224.0])]
    batch = next(data.batches(batch_size=3))
    assert batch.images.shape == (3, 3, 224, 224) and batch.boxes.shape == (3, 2, 4)
    assert torch.isnan(batch.boxes[1, 1]).all() and torch.isnan(batch.boxes[2, 1]).all()


def test_fit_to_uses_what_the_model_expects_for_mixed_sizes(tmp_path):
    from torchvision.transforms._presets import ImageClassification

    data = load_data(str(_mixed_coco(tmp_path)))
    message = data.fit_to(None, ImageClassification(crop_size=224, resize_size=232), "as resnet50's weights expect")
    assert message == (
        f"data {data.spec!r}: the 3 evaluation images have 3 different sizes (from 300x300 to 400x300): "
        "shorter side resized to 232, center-cropped to 224x224 (as resnet50's weights expect)"
    )
    assert data.preprocessing["resize_size"] == 232 and data.image_shape == (3, 224, 224)
    data.fit_to((3, 160, 128))  # a model that takes 128x160 (width x height)
    assert data.image_shape == (3, 160, 128)
    assert data.preprocessing["resize_size"] == round(128 * 256 / 224)
    assert next(data.batches(batch_size=3)).images.shape == (3, 3, 160, 128)


def test_spec_size_and_crop_are_kept_whatever_the_model_expects(tmp_path):
    path = _mixed_coco(tmp_path)
    square = load_data(f"{path}?size=64")
    assert square.image_shape == (3, 64, 64) and square.preprocessing["chosen_by"] == "spec"
    assert square.fit_to((3, 224, 224), Preprocess.standard(), "") is None
    assert square.image_shape == (3, 64, 64)
    # bbox [100, 50, 200, 200] on 400x300 squashed to 64x64: x * 0.16, y * 64 / 300
    assert square.eval[0]["boxes"].tolist() == [pytest.approx([16.0, 50 * 64 / 300, 48.0, 250 * 64 / 300])]
    cropped = load_data(f"{path}?crop=112")
    assert cropped.image_shape == (3, 112, 112) and cropped.preprocessing["resize_size"] == 128
    explicit = load_data(f"{path}?crop=96&resize=100")
    assert explicit.preprocessing["resize_size"] == 100
    with pytest.raises(UsageError, match="gives both 'size' and 'crop'/'resize'"):
        load_data(f"{path}?size=64&crop=56")
    with pytest.raises(UsageError, match="'resize'.*needs 'crop'"):
        load_data(f"{path}?resize=256")
    with pytest.raises(UsageError, match="parameter 'resize'.*an integer from 96"):
        load_data(f"{path}?crop=96&resize=50")


def test_train_images_of_another_size_are_brought_to_the_eval_size(tmp_path):
    for k in range(2):
        _gradient_image(tmp_path / "ds" / "val" / ("cat", "dog")[k] / f"{k}.png", 40, 30)
        _gradient_image(tmp_path / "ds" / "train" / ("cat", "dog")[k] / f"{k}.png", 80 + k, 50)
    data = load_data(str(tmp_path / "ds"))
    assert data.image_shape == (3, 30, 40) and data.preprocessing["mode"] == "native"
    assert data.preprocessing["train"] == {"mode": "resize_center_crop", "resize_size": 30, "crop_size": [30, 40], "interpolation": "bilinear"}
    assert next(data.batches("train", batch_size=2)).images.shape == (2, 3, 30, 40)


# --- carving a train split ------------------------------------------------------------------


def _rank(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


def test_carve_train_message_disjointness_and_determinism(tmp_path):
    for k in range(10):
        _gradient_image(tmp_path / "pets" / ("cat" if k % 2 else "dog") / f"{k}.png", 20, 20)
    spec = str(tmp_path / "pets")
    data = load_data(spec)
    assert data.train is None and len(data.eval) == 10
    message = data.carve_train(0.2, "to train the baselines (resnet18)")
    assert message == (
        f"data {spec!r} has no train split: 2 of 10 images (20%, chosen by a hash of each file path) are held out "
        f"to train the baselines (resnet18); the checks measure on the other 8. "
        f"Give {spec}/train and {spec}/val to evaluate every image."
    )
    keys = [p.relative_to(tmp_path / "pets").as_posix() for p in load_data(spec).eval.paths]
    expected = set(sorted(keys, key=_rank)[:2])
    assert {p.relative_to(tmp_path / "pets").as_posix() for p in data.train.paths} == expected
    assert not set(data.train.paths) & set(data.eval.paths) and len(data.eval) == 8
    again = load_data(spec)
    again.carve_train(0.2, "x")
    assert again.train.paths == data.train.paths and again.eval.paths == data.eval.paths
    assert data.carve_train(0.2, "again") is None  # a train split exists: nothing moves
    assert len(data.eval) == 8


def test_carve_train_on_tensors_keeps_per_item_extras():
    data = make_shapes(n=10, n_train=0, size=16, spurious=1.0)
    images, markers = data.eval.images.clone(), data.eval.markers.clone()
    message = data.carve_train(0.3, "for test.check")
    assert "3 of 10 images (30%, chosen by a hash of each position)" in message
    train_rows = sorted(range(10), key=lambda i: _rank(f"item:{i}"))[:3]
    eval_rows = [i for i in range(10) if i not in train_rows]
    assert torch.equal(data.train.images, images[sorted(train_rows)])
    assert torch.equal(data.eval.images, images[eval_rows])
    assert torch.equal(data.eval.markers, markers[eval_rows])  # ShapesSplit's own tensors follow
    assert next(data.batches("train", batch_size=8)).images.shape == (3, 3, 16, 16)


def test_carve_train_needs_two_images():
    data = AuditData("one", TensorSplit(torch.rand(1, 3, 4, 4)), num_classes=2)
    with pytest.raises(UsageError, match="has no train split and 1 image, too few"):
        data.carve_train(0.2, "to train the baselines")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.carve_train(1.0, "x")


# --- the pixel contract ---------------------------------------------------------------------

PIXEL_FACTORIES = textwrap.dedent(
    """
    import torch
    from torch.utils.data import TensorDataset
    from auditkit.data.base import AuditData, TensorSplit

    def _normalized():
        images = torch.zeros(4, 3, 8, 8)
        images[:, :, 0, 0] = -2.1179  # (0 - 0.485) / 0.229
        images[:, :, 1, 1] = 2.64     # (1 - 0.406) / 0.225
        return images

    def normalized_datasets():
        return None, TensorDataset(_normalized(), torch.arange(4) % 2), 2

    def byte_range_datasets():
        images = torch.zeros(4, 3, 8, 8)
        images[:, :, 0, 0] = 255.0
        return None, TensorDataset(images, torch.arange(4) % 2), 2

    def normalized_audit_data():
        return AuditData("mine", TensorSplit(_normalized(), torch.arange(4) % 2), num_classes=2)

    def uint8_audit_data():
        images = torch.full((4, 3, 8, 8), 51, dtype=torch.uint8)
        return AuditData("bytes", TensorSplit(images, torch.arange(4) % 2), num_classes=2)

    def late_bad_item():
        images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        images[4, 0, 0, 0] = 3.5
        return None, TensorDataset(images, torch.arange(6) % 2), 2

    def slightly_above_one():
        images = torch.ones(2, 3, 8, 8)
        images[0, 0, 0, 0] = 1.0005
        return None, TensorDataset(images, torch.arange(2)), 2

    def torchvision_folder(kind):
        import os
        from torchvision import datasets
        from torchvision.transforms import v2
        steps = [v2.PILToTensor()]
        if kind != "uint8":
            steps.append(v2.ToDtype(torch.float32, scale=kind == "normalized"))
        if kind == "normalized":
            steps.append(v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        folder = datasets.ImageFolder(os.environ["AUDITKIT_TEST_FOLDER"], transform=v2.Compose(steps))
        return None, folder, 2

    def tv_normalized():
        return torchvision_folder("normalized")

    def tv_bytes_as_float():
        return torchvision_folder("float")

    def tv_uint8():
        return torchvision_folder("uint8")
    """
)


@pytest.fixture()
def pixel_factories(tmp_path, monkeypatch):
    path = tmp_path / "pixels.py"
    path.write_text(PIXEL_FACTORIES)
    for name, colour in (("black", (0, 0, 0)), ("white", (255, 255, 255))):
        (tmp_path / "folder" / name).mkdir(parents=True)
        Image.new("RGB", (6, 5), colour).save(tmp_path / "folder" / name / "a.png")
    monkeypatch.setenv("AUDITKIT_TEST_FOLDER", str(tmp_path / "folder"))
    return path


NORMALIZED_ADVICE = (
    "they look already normalized (mean/std applied); expected pixels in [0,1] — remove the Normalize "
    "transform, auditkit applies the model's normalization itself"
)


def test_factory_datasets_already_normalized_are_refused(pixel_factories):
    spec = f"{pixel_factories}:normalized_datasets"
    with pytest.raises(UsageError) as info:
        load_data(spec)
    assert str(info.value) == f"data {spec!r} gives images with values from -2.118 to 2.640 (eval image 0): {NORMALIZED_ADVICE}"


def test_factory_datasets_in_0_255_are_refused(pixel_factories):
    spec = f"{pixel_factories}:byte_range_datasets"
    with pytest.raises(UsageError) as info:
        load_data(spec)
    assert str(info.value) == (
        f"data {spec!r} gives images with values from 0 to 255 (eval image 0): expected pixels in [0,1]; "
        "divide by 255 or give uint8 tensors"
    )


def test_factory_tensor_split_is_checked_and_named_by_the_spec(pixel_factories):
    spec = f"{pixel_factories}:normalized_audit_data"
    with pytest.raises(UsageError) as info:
        load_data(spec)
    assert str(info.value) == f"data {spec!r} gives images with values from -2.118 to 2.640: {NORMALIZED_ADVICE}"
    # built directly, the TensorSplit route names the data
    with pytest.raises(UsageError, match=r"^data 'raw' gives images with values from 0 to 255: expected pixels in \[0,1\]; divide by 255"):
        AuditData("raw", TensorSplit(torch.linspace(0, 255, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)), num_classes=2)


def test_uint8_tensors_are_divided_by_255(pixel_factories):
    data = load_data(f"{pixel_factories}:uint8_audit_data")
    assert data.eval.images.dtype == torch.float32
    assert torch.equal(next(data.batches()).images, torch.full((4, 3, 8, 8), 51 / 255))


def test_a_bad_image_later_in_the_data_is_caught_when_its_batch_is_drawn(pixel_factories):
    spec = f"{pixel_factories}:late_bad_item"
    data = load_data(spec)  # the first image is fine
    batches = data.batches(batch_size=2)
    assert next(batches).images.shape == (2, 3, 8, 8)
    next(batches)
    with pytest.raises(UsageError, match=r"gives images with values from 0\.\d+ to 3\.500 \(eval images 4-5\)"):
        next(batches)


def test_values_within_the_tolerance_pass_unclamped(pixel_factories):
    data = load_data(f"{pixel_factories}:slightly_above_one")
    assert float(next(data.batches()).images.max()) == pytest.approx(1.0005)


def test_torchvision_datasets_with_transforms_are_checked(pixel_factories):
    # The folder holds a black image (class 0) and a white one (class 1).
    spec = f"{pixel_factories}:tv_normalized"
    with pytest.raises(UsageError) as info:
        load_data(spec)  # black, normalized: (0 - mean) / std, from -2.118 (red) to -1.804 (blue)
    assert str(info.value) == f"data {spec!r} gives images with values from -2.118 to -1.804 (eval image 0): {NORMALIZED_ADVICE}"
    spec = f"{pixel_factories}:tv_bytes_as_float"
    data = load_data(spec)  # the black image is 0 either way: the white 255 shows in the first batch
    with pytest.raises(UsageError) as info:
        next(data.batches())
    assert str(info.value) == (
        f"data {spec!r} gives images with values from 0 to 255 (eval images 0-1): expected pixels in [0,1]; "
        "divide by 255 or give uint8 tensors"
    )
    uint8 = load_data(f"{pixel_factories}:tv_uint8")
    batch = next(uint8.batches())
    assert batch.images.shape == (2, 3, 5, 6)
    assert batch.images[0].max() == 0 and batch.images[1].min() == 1  # black, white: exactly /255


def test_nan_images_are_refused():
    images = torch.rand(2, 3, 4, 4)
    images[1, 0, 0, 0] = math.nan
    with pytest.raises(UsageError, match="gives images with NaN values"):
        AuditData("nan", TensorSplit(images), num_classes=2)


# --- datasets of mixed sizes ----------------------------------------------------------------

MIXED_DATASETS = textwrap.dedent(
    """
    from PIL import Image

    def mixed():
        items = [
            {"image": Image.new("RGB", (400, 300), (255, 0, 0)), "label": 0, "box": [100.0, 50.0, 300.0, 250.0]},
            {"image": Image.new("RGB", (300, 400), (0, 255, 0)), "label": 1, "box": [0.0, 0.0, 300.0, 400.0]},
        ]
        return None, items, 2
    """
)


def test_factory_datasets_of_mixed_sizes_get_the_standard_transform(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text(MIXED_DATASETS)
    data = load_data(f"{path}:mixed")
    assert data.image_shape == (3, 224, 224) and data.has_boxes
    batch = next(data.batches())
    assert batch.images.shape == (2, 3, 224, 224)
    sx, sy = 341 / 400, 256 / 300
    assert batch.boxes[0, 0].tolist() == pytest.approx([100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 250 * sy - 16], abs=1e-4)
    assert batch.boxes[1, 0].tolist() == pytest.approx([0.0, 0.0, 224.0, 224.0])
    assert torch.allclose(batch.images[0], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 224, 224))
