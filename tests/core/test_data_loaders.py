"""Tests for data SPEC loading (auditkit.data.loaders): every spec form and every bad input."""
from __future__ import annotations

import hashlib
import json
import struct
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from auditkit.data.base import AuditData, TensorSplit
from auditkit.data.loaders import ImageFileSplit, load_data
from auditkit.localization import box_masks
from auditkit.data.synthetic import make_shapes
from auditkit.errors import UsageError

CLASS_COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}


def _write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 12), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


def _class_tree(root: Path, per_class: int = 12) -> None:
    for name, colour in CLASS_COLOURS.items():
        for k in range(per_class):
            _write_image(root / name / f"img_{k:02d}.png", colour, size=(20 + k, 12))


def _assert_labels_match_colours(split, class_names) -> None:
    for i in range(len(split)):
        item = split[i]
        expected = torch.tensor(CLASS_COLOURS[class_names[item["label"]]], dtype=torch.float32) / 255
        assert torch.allclose(item["image"][:, 0, 0], expected, atol=1e-6)


# --- synthetic ------------------------------------------------------------------------------


def test_synthetic_defaults_and_seed_argument():
    data = load_data("synthetic:shapes?n=8", seed=3)
    expected = make_shapes(n=8, seed=3)
    assert data.spec == "synthetic:shapes?n=8&train=32&size=64&classes=4&seed=3"
    assert torch.equal(data.eval.images, expected.eval.images)
    assert torch.equal(data.train.labels, expected.train.labels)


def test_synthetic_parameters_reach_the_generator():
    data = load_data(
        "synthetic:shapes?n=10&train=6&size=32&classes=6&seed=2&spurious=1&spurious_classes=0,5&background=plain",
        seed=99,
        size=48,
    )
    assert len(data.eval) == 10 and len(data.train) == 6
    assert data.image_shape == (3, 32, 32)
    assert data.num_classes == 6
    labels = data.eval.labels
    assert torch.equal(data.eval.markers, (labels == 0) | (labels == 5))
    reference = make_shapes(
        n=10, n_train=6, size=32, classes=6, seed=2, spurious=1.0, spurious_classes=[0, 5], background="plain"
    )
    assert torch.equal(data.eval.images, reference.eval.images)


def test_synthetic_size_argument_is_the_default_and_spec_reloads_exactly():
    data = load_data("synthetic:shapes?n=4", size=32)
    assert data.image_shape == (3, 32, 32)
    again = load_data(data.spec, seed=123, size=64)
    assert torch.equal(again.eval.images, data.eval.images)


def test_synthetic_canonical_spec_round_trips_every_option():
    data = make_shapes(n=12, n_train=3, size=24, classes=5, seed=8, spurious=0.3, spurious_classes=[4, 1])
    assert data.spec == "synthetic:shapes?n=12&train=3&size=24&classes=5&seed=8&spurious=0.3&spurious_classes=1,4"
    again = load_data(data.spec)
    assert torch.equal(again.eval.images, data.eval.images)
    assert torch.equal(again.eval.markers, data.eval.markers)
    assert again.spec == data.spec


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("synthetic:shapes?colour=red", "unknown parameter 'colour'"),
        ("synthetic:shapes?n=abc", "parameter 'n'"),
        ("synthetic:shapes?n=0", "parameter 'n'"),
        ("synthetic:shapes?size=4", "parameter 'size'"),
        ("synthetic:shapes?classes=12", "parameter 'classes'"),
        ("synthetic:shapes?spurious=2", "parameter 'spurious'"),
        ("synthetic:shapes?spurious_classes=1,x", "parameter 'spurious_classes'"),
        ("synthetic:shapes?classes=3&spurious_classes=3", "parameter 'spurious_classes'"),
        ("synthetic:shapes?background=stars", "parameter 'background'"),
        ("synthetic:shapes?n=4&n=5", "given twice"),
        ("synthetic:shapes?n", "malformed parameter 'n'"),
        ("synthetic:blobs", "unknown synthetic dataset 'blobs'"),
    ],
)
def test_synthetic_bad_parameters(spec, fragment):
    with pytest.raises(UsageError, match="expected") as info:
        load_data(spec)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_unknown_parameter_error_lists_the_accepted_ones():
    with pytest.raises(UsageError) as info:
        load_data("synthetic:shapes?colour=red")
    assert "n, train, size, classes, seed, spurious" in str(info.value)


# --- ImageFolder ----------------------------------------------------------------------------


def _hash_chosen(keys: list[str], n: int) -> set[str]:
    """The n keys with the smallest SHA-1 prefix, computed here independently of auditkit."""
    def rank(key: str) -> int:
        return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")

    return set(sorted(keys, key=rank)[:n])


def test_image_folder_single_directory_evaluates_every_image(tmp_path):
    _class_tree(tmp_path / "pets", per_class=12)
    data = load_data(str(tmp_path / "pets") + "?size=16")
    assert data.class_names == ["cat", "dog", "fox"] and data.num_classes == 3
    assert isinstance(data.eval, ImageFileSplit) and data.train is None
    assert data.image_shape == (3, 16, 16)
    assert len(data.eval) == 36 and len(set(data.eval.paths)) == 36
    _assert_labels_match_colours(data.eval, data.class_names)
    assert "every image evaluated" in data.description


def test_image_folder_train_fraction_holds_out_a_hash_chosen_share(tmp_path):
    _class_tree(tmp_path / "pets", per_class=12)
    data = load_data(str(tmp_path / "pets") + "?size=16&train_fraction=0.2")
    eval_paths, train_paths = set(data.eval.paths), set(data.train.paths)
    assert not eval_paths & train_paths
    assert len(eval_paths | train_paths) == 36
    assert len(train_paths) == 7  # round(0.2 * 36)
    keys = [f"{c}/img_{k:02d}.png" for c in CLASS_COLOURS for k in range(12)]
    assert {p.relative_to(tmp_path / "pets").as_posix() for p in train_paths} == _hash_chosen(keys, 7)
    _assert_labels_match_colours(data.eval, data.class_names)
    _assert_labels_match_colours(data.train, data.class_names)
    assert "7 of 36 images held out for training" in data.description
    # The split depends only on relative paths: a copy elsewhere splits the same way.
    _class_tree(tmp_path / "elsewhere" / "pets", per_class=12)
    copy = load_data(str(tmp_path / "elsewhere" / "pets") + "?train_fraction=0.2")
    assert sorted(p.name + p.parent.name for p in copy.eval.paths) == sorted(p.name + p.parent.name for p in eval_paths)


def test_image_folder_items_are_rgb_in_unit_range_and_resized(tmp_path):
    _write_image(tmp_path / "data" / "val" / "grey" / "a.png", (200, 200, 200), size=(31, 17), mode="L")
    _write_image(tmp_path / "data" / "val" / "alpha" / "b.png", (10, 20, 30), size=(8, 40), mode="RGBA")
    _write_image(tmp_path / "data" / "train" / "grey" / "c.jpg", (90, 90, 90))
    data = load_data(str(tmp_path / "data"), size=24)
    assert data.class_names == ["alpha", "grey"]
    batch = next(data.batches("eval", batch_size=8))
    assert batch.images.shape == (2, 3, 24, 24)
    assert float(batch.images.min()) >= 0 and float(batch.images.max()) <= 1
    assert batch.labels.tolist() == [0, 1]
    grey = batch.images[1]
    assert torch.allclose(grey, torch.full_like(grey, 200 / 255), atol=1e-6)
    assert torch.allclose(batch.images[0][:, 5, 5], torch.tensor([10, 20, 30]) / 255, atol=1e-6)
    assert batch.boxes is None and batch.masks is None
    assert not data.has_localization


def test_image_folder_train_and_val_layout(tmp_path):
    _class_tree(tmp_path / "ds" / "train", per_class=3)
    _class_tree(tmp_path / "ds" / "val", per_class=2)
    data = load_data(str(tmp_path / "ds"))
    # val/ holds 20x12 and 21x12 images: two sizes, so the standard resize 256 + center crop 224
    assert data.image_shape == (3, 224, 224)
    assert data.preprocessing["mode"] == "resize_center_crop" and data.preprocessing["native_sizes"] == 2
    assert len(data.train) == 9 and len(data.eval) == 6
    assert all(p.parent.parent.name == "val" for p in data.eval.paths)
    assert sorted(data.eval.labels) == [0, 0, 1, 1, 2, 2]
    _assert_labels_match_colours(data.eval, data.class_names)


def test_image_folder_test_folder_and_spec_size_beats_argument(tmp_path):
    _class_tree(tmp_path / "ds" / "train", per_class=1)
    _class_tree(tmp_path / "ds" / "test", per_class=1)
    data = load_data(str(tmp_path / "ds") + "?size=12", size=40)
    assert len(data.eval) == 3 and data.image_shape == (3, 12, 12)


def test_image_folder_eval_fraction_parameter(tmp_path):
    _class_tree(tmp_path / "pets", per_class=12)
    most = load_data(str(tmp_path / "pets") + "?eval_fraction=0.9&size=8")
    assert len(most.eval) == 32 and len(most.train) == 4  # round(0.1 * 36) held out
    same = load_data(str(tmp_path / "pets") + "?train_fraction=0.1&size=8")
    assert same.train.paths == most.train.paths
    everything = load_data(str(tmp_path / "pets") + "?eval_fraction=1&size=8")
    assert len(everything.eval) == 36 and everything.train is None
    assert load_data(str(tmp_path / "pets") + "?train_fraction=0&size=8").train is None
    for bad in ("eval_fraction=1.5", "eval_fraction=0", "train_fraction=1", "train_fraction=-0.1"):
        with pytest.raises(UsageError, match=f"parameter '{bad.split('=')[0]}'"):
            load_data(str(tmp_path / "pets") + "?" + bad)
    with pytest.raises(UsageError, match="gives both 'eval_fraction' and 'train_fraction'"):
        load_data(str(tmp_path / "pets") + "?eval_fraction=0.5&train_fraction=0.5")


def test_image_folder_fraction_does_not_apply_to_train_and_val_folders(tmp_path):
    _class_tree(tmp_path / "ds" / "train", per_class=2)
    _class_tree(tmp_path / "ds" / "val", per_class=1)
    with pytest.raises(UsageError, match="'train_fraction'.*does not apply.*train/ and val/ folders"):
        load_data(str(tmp_path / "ds") + "?train_fraction=0.2")


def test_image_folder_with_only_a_train_folder_evaluates_it(tmp_path):
    _class_tree(tmp_path / "ds" / "train", per_class=2)
    data = load_data(str(tmp_path / "ds"), size=8)
    assert len(data.eval) == 6 and data.train is None
    assert all(p.parent.parent.name == "train" for p in data.eval.paths)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as info:
        load_data(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(info.value)

    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images found in"):
        load_data(str(tmp_path / "empty"))

    _class_tree(tmp_path / "noval" / "train", per_class=2)
    (tmp_path / "noval" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="has no evaluation images"):
        load_data(str(tmp_path / "noval"))

    _class_tree(tmp_path / "pets", per_class=2)
    with pytest.raises(
        UsageError, match="unknown parameter 'seed'.*one of the parameters size, resize, crop, eval_fraction, train_fraction"
    ):
        load_data(str(tmp_path / "pets") + "?seed=1")
    with pytest.raises(UsageError, match="bad value 'big' for parameter 'size'"):
        load_data(str(tmp_path / "pets") + "?size=big")


def test_unreadable_image_is_a_usage_error(tmp_path):
    _class_tree(tmp_path / "ds" / "train", per_class=1)
    broken = tmp_path / "ds" / "val" / "cat" / "broken.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an image")
    with pytest.raises(UsageError, match=r"cannot read any evaluation image in .*val/cat/broken.png \(not an image\)"):
        load_data(str(tmp_path / "ds"))


def test_files_are_checked_a_window_at_a_time_in_their_order(tmp_path, monkeypatch):
    """The load-time check hands the decoding threads a window of files at a time (so that
    its memory does not grow with the number of files): per file, the same size or reason,
    in the files' order, as one window over all of them."""
    from auditkit.data import image_files

    paths = []
    for k in range(13):
        path = tmp_path / f"im{k:02d}.png"
        if k in (4, 9):
            path.write_bytes(b"not an image")
        else:
            _write_image(path, (k * 10, 0, 0), size=(10 + k, 7))
        paths.append(path)
    monkeypatch.setattr(image_files.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(image_files, "FILES_PER_WORKER_AT_ONCE", 1)  # 3 threads, windows of 3 files
    sizes, unreadable = image_files.check_image_files(paths)
    assert sizes == [None if k in (4, 9) else (10 + k, 7) for k in range(13)]
    assert unreadable == [(paths[4], "not an image"), (paths[9], "not an image")]
    monkeypatch.setattr(image_files, "FILES_PER_WORKER_AT_ONCE", 64)  # one window
    assert image_files.check_image_files(paths) == (sizes, unreadable)


# --- COCO -----------------------------------------------------------------------------------


def _coco_file(tmp_path: Path, *, with_split: bool, segmentation: bool = True, n_images: int = 10) -> Path:
    images, annotations = [], []
    for k in range(n_images):
        name = f"im{k}.png"
        _write_image(tmp_path / "images" / name, (k * 20, 0, 0), size=(100, 50))
        image = {"id": 100 + k, "file_name": f"images/{name}", "width": 100, "height": 50}
        if with_split:
            image["split"] = "val" if k % 3 == 0 else "train"
        images.append(image)
        # A small annotation of category 1 and a larger one of category 7 on odd images.
        small = {"id": 2 * k, "image_id": 100 + k, "category_id": 1, "bbox": [0, 0, 10, 10]}
        large_category = 7 if k % 2 else 1
        large = {"id": 2 * k + 1, "image_id": 100 + k, "category_id": large_category, "bbox": [20, 10, 40, 30]}
        if segmentation:
            small["segmentation"] = [[0, 0, 10, 0, 10, 10, 0, 10]]
            large["segmentation"] = [[20, 10, 60, 10, 60, 40, 20, 40]]
        annotations += [small, large]
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "boat"}, {"id": 1, "name": "car"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    return path


def test_coco_with_split_field(tmp_path):
    path = _coco_file(tmp_path, with_split=True)
    data = load_data(f"{path}?size=20")
    assert data.class_names == ["car", "boat"]  # ordered by category id
    assert data.has_boxes and data.has_masks and data.has_localization
    assert len(data.eval) == 4 and len(data.train) == 6  # k = 0, 3, 6, 9 are "val"
    assert [p.name for p in data.eval.paths] == ["im0.png", "im3.png", "im6.png", "im9.png"]
    # The largest annotation decides the label: category 7 (boat, index 1) on odd k.
    assert data.eval.labels == [0, 1, 0, 1]
    item = data.eval[1]
    # Odd k: only the large annotation is a boat. bbox [20, 10, 40, 30] = box (20, 10, 60, 40)
    # on a 100x50 image, resized to 20x20: x * 0.2, y * 0.4.
    assert torch.allclose(item["boxes"], torch.tensor([[4.0, 4.0, 12.0, 16.0]]))
    mask = item["mask"]
    assert mask.shape == (20, 20) and mask.dtype == torch.bool
    # The polygon is the box's rectangle: its mask is exactly the box's pixels (centers inside).
    assert torch.equal(mask, box_masks(item["boxes"][None], 20, 20)[0])
    assert int(mask.sum()) == 8 * 12
    assert torch.allclose(item["image"][:, 0, 0], torch.tensor([60 / 255, 0, 0]), atol=1e-6)
    # Even k: both annotations are cars, so both boxes are kept and the mask is their union.
    both = data.eval[0]
    assert torch.allclose(both["boxes"], torch.tensor([[0.0, 0.0, 2.0, 4.0], [4.0, 4.0, 12.0, 16.0]]))
    assert torch.equal(both["mask"], box_masks(both["boxes"][None], 20, 20)[0])
    assert int(both["mask"].sum()) == 2 * 4 + 8 * 12
    batch = next(data.batches(batch_size=4))
    assert batch.boxes.shape == (4, 2, 4) and batch.masks.shape == (4, 20, 20)
    assert torch.isnan(batch.boxes[1, 1]).all() and not torch.isnan(batch.boxes[0]).any()  # padding row


def test_coco_without_split_field_evaluates_every_image(tmp_path):
    path = _coco_file(tmp_path, with_split=False, segmentation=False, n_images=30)
    data = load_data(str(path), size=16)
    assert data.has_boxes and not data.has_masks
    assert "mask" not in data.eval[0]
    assert len(data.eval) == 30 and data.train is None
    assert [p.name for p in data.eval.paths] == [f"im{k}.png" for k in range(30)]


def test_coco_train_fraction_holds_out_by_image_id_hash(tmp_path):
    path = _coco_file(tmp_path, with_split=False, segmentation=False, n_images=30)
    data = load_data(f"{path}?train_fraction=0.2", size=16)
    assert len(data.train) == 6 and len(data.eval) == 24
    assert not set(data.eval.paths) & set(data.train.paths)
    chosen = _hash_chosen([f"coco-image:{100 + k}" for k in range(30)], 6)
    assert {f"coco-image:{100 + int(p.stem[2:])}" for p in data.train.paths} == chosen
    again = load_data(f"{path}?train_fraction=0.2", size=16)
    assert again.eval.paths == data.eval.paths
    with pytest.raises(UsageError, match="does not apply.*\"split\" field"):
        load_data(f"{_coco_file(tmp_path / 'declared', with_split=True)}?train_fraction=0.2")


def test_coco_root_parameter_and_unannotated_images(tmp_path):
    path = _coco_file(tmp_path, with_split=True, n_images=4)
    document = json.loads(path.read_text())
    for image in document["images"]:
        image["file_name"] = Path(image["file_name"]).name
    document["images"].append({"id": 999, "file_name": "im0.png", "split": "train"})
    moved = tmp_path / "meta" / "coco.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(document))
    with pytest.warns(UserWarning, match="1 image\\(s\\) without annotations"):
        data = load_data(f"{moved}?root={tmp_path / 'images'}")
    assert len(data.eval) + len(data.train) == 4


def test_coco_errors(tmp_path):
    path = _coco_file(tmp_path, with_split=True, n_images=3)
    document = json.loads(path.read_text())

    document["images"][1]["file_name"] = "images/gone.png"
    missing_image = tmp_path / "missing_image.json"
    missing_image.write_text(json.dumps(document))
    with pytest.raises(UsageError, match="gone.png.*does not exist"):
        load_data(str(missing_image))

    only_train = json.loads(path.read_text())
    for image in only_train["images"]:
        image["split"] = "train"
    train_json = tmp_path / "train_only.json"
    train_json.write_text(json.dumps(only_train))
    with pytest.raises(UsageError, match="has no evaluation images"):
        load_data(str(train_json))

    bad_split = json.loads(path.read_text())
    bad_split["images"][0]["split"] = "holdout"
    bad_split_json = tmp_path / "bad_split.json"
    bad_split_json.write_text(json.dumps(bad_split))
    with pytest.raises(UsageError, match="split 'holdout'; expected 'train' or 'val'"):
        load_data(str(bad_split_json))

    not_coco = tmp_path / "list.json"
    not_coco.write_text("[1, 2, 3]")
    with pytest.raises(UsageError, match="lacks the lists 'images', 'annotations' and 'categories'"):
        load_data(str(not_coco))

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read COCO file"):
        load_data(str(broken))

    no_bbox = json.loads(path.read_text())
    del no_bbox["annotations"][0]["bbox"]
    no_bbox_json = tmp_path / "no_bbox.json"
    no_bbox_json.write_text(json.dumps(no_bbox))
    with pytest.raises(UsageError, match="is malformed"):
        load_data(str(no_bbox_json))

    with pytest.raises(UsageError, match="does not exist") as info:
        load_data(str(tmp_path / "absent.json"))
    assert "absent.json" in str(info.value)

    with pytest.raises(UsageError, match="image root .* does not exist"):
        load_data(f"{path}?root={tmp_path / 'nowhere'}")


def test_other_files_are_rejected(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError, match="is not a COCO-style .json file"):
        load_data(str(text))


# --- torchvision ----------------------------------------------------------------------------


def _fake_mnist(root: Path, n_train: int = 6, n_test: int = 4) -> None:
    # MNIST's on-disk idx format: a big-endian magic number, the dimensions, then uint8 data.
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = bytes((k * 10 + j) % 256 for k in range(n) for j in range(28 * 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + pixels)
        labels = bytes(k % 10 for k in range(n))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels)


def test_torchvision_dataset_on_disk(tmp_path):
    _fake_mnist(tmp_path)
    data = load_data(f"torchvision:MNIST?root={tmp_path}")
    assert data.name == "torchvision:MNIST"
    assert len(data.train) == 6 and len(data.eval) == 4
    assert data.num_classes == 10 and data.class_names[3].startswith("3")
    item = data.eval[2]
    assert item["label"] == 2
    image = item["image"]
    assert image.shape == (3, 28, 28)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert abs(float(image[0, 0, 0]) - 20 / 255) < 1e-6
    resized = load_data(f"torchvision:mnist?root={tmp_path}&size=32")
    assert resized.image_shape == (3, 32, 32)
    assert next(resized.batches(batch_size=4)).images.shape == (4, 3, 32, 32)


def test_torchvision_dataset_not_on_disk(tmp_path):
    with pytest.raises(UsageError, match="downloads are disabled") as info:
        load_data(f"torchvision:CIFAR10?root={tmp_path / 'nothing'}")
    assert str(tmp_path / "nothing") in str(info.value)
    assert "\n" not in str(info.value)


def test_torchvision_bad_specs(tmp_path):
    with pytest.raises(UsageError, match="unknown torchvision dataset 'Imaginary'"):
        load_data("torchvision:Imaginary")
    with pytest.raises(UsageError, match="no train/test switch"):
        load_data(f"torchvision:ImageFolder?root={tmp_path}")
    with pytest.raises(UsageError, match="unknown parameter 'train'.*expected one of the parameters root, size"):
        load_data("torchvision:MNIST?train=1")


# --- factories ------------------------------------------------------------------------------

FACTORY_SOURCE = textwrap.dedent(
    """
    import numpy as np
    import torch
    from torch.utils.data import TensorDataset
    from auditkit.data.base import AuditData, TensorSplit

    def audit_data():
        images = torch.linspace(0, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
        return AuditData("mine", TensorSplit(images, torch.tensor([0, 1])), num_classes=2)

    def datasets(seed, size=None):
        g = torch.Generator().manual_seed(seed)
        train = TensorDataset(torch.rand(5, 1, 8, 8, generator=g), torch.arange(5) % 3)
        evaluation = TensorDataset(torch.rand(3, 1, 8, 8, generator=g), torch.tensor([2, 1, 0]))
        return train, evaluation, 3

    def arrays():
        # Channels-last uint8 arrays, as NumPy image code writes them.
        image = np.zeros((6, 5, 3), dtype=np.uint8)
        image[..., 1] = 255
        return [(image, 0)], [(image, 1), (image[..., :1], 0)], 2

    def empty():
        return None, [], 2

    def broken():
        raise ValueError("no data today")

    def wrong_type():
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "my_data.py"
    path.write_text(FACTORY_SOURCE)
    return path


def test_file_factory_returning_audit_data(factory_file):
    data = load_data(f"{factory_file}:audit_data")
    assert isinstance(data, AuditData) and data.name == "mine"
    assert isinstance(data.eval, TensorSplit) and data.eval.labels.tolist() == [0, 1]


def test_file_factory_returning_datasets_gets_the_seed(factory_file):
    data = load_data(f"{factory_file}:datasets", seed=4)
    assert data.num_classes == 3 and len(data.train) == 5 and len(data.eval) == 3
    item = data.eval[0]
    assert item["label"] == 2 and item["image"].shape == (3, 8, 8)
    g = torch.Generator().manual_seed(4)
    torch.rand(5, 1, 8, 8, generator=g)
    expected = torch.rand(3, 1, 8, 8, generator=g)[0, 0]
    assert torch.equal(item["image"][2], expected)
    other_seed = load_data(f"{factory_file}:datasets", seed=5)
    assert not torch.equal(other_seed.eval[0]["image"], item["image"])


def test_file_factory_returning_channels_last_arrays(factory_file):
    data = load_data(f"{factory_file}:arrays")
    assert data.image_shape == (3, 6, 5) and len(data.train) == 1
    batch = next(data.batches(batch_size=2))
    assert batch.labels.tolist() == [1, 0]
    assert torch.equal(batch.images[0, :, 2, 2], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(batch.images[1], torch.zeros(3, 6, 5))  # one grey channel, expanded to three


def test_module_factory(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    data = load_data("my_data:audit_data")
    assert data.name == "mine" and len(data.eval) == 2


@pytest.mark.parametrize(
    "attribute, fragment",
    [
        ("missing", "has no attribute 'missing'"),
        ("NOT_CALLABLE", "is not callable"),
        ("broken", "raised ValueError: no data today"),
        ("wrong_type", "returned int; expected AuditData or a (train_dataset, eval_dataset, num_classes) tuple"),
        ("empty", "has no evaluation images"),
    ],
)
def test_file_factory_errors(factory_file, attribute, fragment):
    with pytest.raises(UsageError) as info:
        load_data(f"{factory_file}:{attribute}")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_factory_import_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as info:
        load_data(f"{tmp_path / 'absent.py'}:make")
    assert "absent.py" in str(info.value)

    crashing = tmp_path / "crashing.py"
    crashing.write_text("raise RuntimeError('import-time failure')\n")
    with pytest.raises(UsageError, match="raised RuntimeError: import-time failure"):
        load_data(f"{crashing}:make")

    with pytest.raises(UsageError, match="cannot import module 'no_such_module_for_auditkit'"):
        load_data("no_such_module_for_auditkit:make")


# --- anything else --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["imagenet", "ftp://example.com/data", ""])
def test_unknown_specs_list_the_accepted_forms(spec):
    with pytest.raises(UsageError) as info:
        load_data(spec)
    message = str(info.value)
    assert "synthetic:shapes" in message and "torchvision:NAME" in message and "file.py:factory" in message


def test_a_factory_file_imports_its_sibling_modules(tmp_path):
    # the same rule as model factory files (auditkit.importing): the file's folder is on sys.path while it runs
    (tmp_path / "shapes_settings_for_auditkit.py").write_text("N = 6\n")
    (tmp_path / "factory.py").write_text(
        "from shapes_settings_for_auditkit import N\n"
        "from auditkit.data.synthetic import make_shapes\n"
        "def make():\n    return make_shapes(n=N, n_train=0, size=16)\n"
    )
    assert len(load_data(f"{tmp_path / 'factory.py'}:make").eval) == 6


def test_integer_class_folders_are_class_indices(tmp_path):
    # An ImageNet-index layout with a few classes present must line up with a 1000-class
    # model's outputs: folder 0243/ is class 243, not the first of three sorted names.
    for name in ("0243", "0559", "0007"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (12, 10), (200, 30, 30)).save(tmp_path / "photos" / name / "a.png")
    data = load_data(str(tmp_path / "photos"))
    assert data.num_classes == 560
    assert sorted(data.eval.labels) == [7, 243, 559]
    assert data.class_names[243] == "0243" and data.class_names[0] == "0"
    named = tmp_path / "pets"
    for name in ("dog", "cat"):
        (named / name).mkdir(parents=True)
        Image.new("RGB", (12, 10)).save(named / name / "a.png")
    pets = load_data(str(named))
    assert pets.class_names == ["cat", "dog"] and pets.num_classes == 2  # other names: sorted from 0
