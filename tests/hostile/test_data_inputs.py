"""Hostile data: one-class datasets, decompression bombs, damaged image files and COCO boxes
that do not fit their image. Each is found when the data is loaded, with one clear line."""
from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from auditkit.data.loaders import ImageFileSplit, load_data
from auditkit.errors import UsageError

from .conftest import FACTORY, assert_no_traceback, assert_usage_error

RUN = ("run", "--baselines", "none", "--checks", "accuracy.clean", "--model", FACTORY)
PIL_LIMIT = f"{Image.MAX_IMAGE_PIXELS:,}"


def _png(path: Path, colour=(200, 30, 30), size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _two_class_folder(root: Path, per_class: int = 3) -> Path:
    for name, colour in (("cat", (220, 20, 20)), ("dog", (20, 220, 20))):
        for k in range(per_class):
            _png(root / name / f"{k}.png", colour)
    return root


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 4x4 PNG whose IHDR says width x height (CRC fixed, so only the size lies)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def _truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    whole = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _random_bytes(path: Path, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 512, dtype=np.uint8).tobytes())
    return path


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "r.json").read_text())


# --- one class ------------------------------------------------------------------------------


def test_image_folder_with_one_class_is_refused(cli, tmp_path):
    for k in range(3):
        _png(tmp_path / "ds" / "cat" / f"{k}.png")
    result = cli(*RUN, "--data", str(tmp_path / "ds"), "--json", "r.json")
    assert_usage_error(result, str(tmp_path / "ds"), "'cat'", "at least two classes are needed")
    assert not (tmp_path / "r.json").exists()


def test_image_folder_whose_val_images_are_one_class_is_refused(tmp_path):
    _two_class_folder(tmp_path / "ds" / "train")
    _png(tmp_path / "ds" / "val" / "dog" / "0.png")
    (tmp_path / "ds" / "val" / "cat").mkdir()  # an empty class folder adds no class to evaluate
    with pytest.raises(UsageError, match=r"ds/val' has evaluation images of one class only \('dog', 1 images\)"):
        load_data(str(tmp_path / "ds"))


def test_image_folder_whose_other_class_is_unreadable_is_refused(tmp_path):
    for k in range(2):
        _png(tmp_path / "ds" / "cat" / f"{k}.png")
    _random_bytes(tmp_path / "ds" / "dog" / "0.jpg")
    with pytest.warns(UserWarning, match="1 of 3 images cannot be read"), pytest.raises(
        UsageError, match="one class only .*at least two classes are needed"
    ):
        load_data(str(tmp_path / "ds"))


def test_coco_whose_images_are_all_one_category_is_refused(cli, tmp_path):
    images, annotations = [], []
    for k in range(3):
        _png(tmp_path / f"im{k}.png", size=(40, 30))
        images.append({"id": k, "file_name": f"im{k}.png"})
        # A small "dog" box under a larger "cat" one: every image is labelled cat.
        annotations.append({"id": 2 * k, "image_id": k, "category_id": 2, "bbox": [0, 0, 4, 4]})
        annotations.append({"id": 2 * k + 1, "image_id": k, "category_id": 1, "bbox": [5, 5, 20, 20]})
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    result = cli(*RUN, "--data", str(path), "--json", "r.json")
    assert_usage_error(result, str(path), "'cat'", "at least two classes are needed")


def test_factory_with_one_class_is_refused(tmp_path):
    (tmp_path / "one_class.py").write_text(
        "import torch\n"
        "def tuple_data():\n"
        "    return None, [(torch.zeros(3, 8, 8), 0)] * 4, 1\n"
    )
    with pytest.raises(UsageError, match="num_classes=1; at least two classes are needed"):
        load_data(f"{tmp_path / 'one_class.py'}:tuple_data")


# --- images too large -----------------------------------------------------------------------


def test_png_claiming_30000x30000_is_image_too_large(cli, tmp_path):
    ds = _two_class_folder(tmp_path / "ds")
    bomb = _png_claiming(ds / "cat" / "bomb.png", 30000, 30000)
    result = cli(*RUN, "--data", str(ds), "--json", "r.json")
    line = assert_usage_error(result, "image too large", str(bomb), "30000x30000", PIL_LIMIT, "MAX_IMAGE_PIXELS")
    assert "DecompressionBomb" not in result.err, line


def test_image_above_the_limit_but_below_twice_it_is_too_large_without_a_pil_warning(tmp_path):
    # PIL only warns (DecompressionBombWarning) between the limit and twice it; auditkit refuses.
    ds = _two_class_folder(tmp_path / "ds")
    _png_claiming(ds / "dog" / "big.png", 10000, 10000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UsageError, match=r"image too large: .*big.png' is 10000x10000 \(100,000,000 pixels\)"):
            load_data(str(ds))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_several_bombs_are_one_error_naming_the_first_and_counting_the_rest(tmp_path):
    ds = _two_class_folder(tmp_path / "ds")
    for k in range(3):
        _png_claiming(ds / "cat" / f"bomb{k}.png", 30000, 30000)
    with pytest.raises(UsageError, match=r"bomb0.png' is 30000x30000.*; 2 more too large: .*bomb1.png, .*bomb2.png"):
        load_data(str(ds))


def test_bomb_read_lazily_is_image_too_large(tmp_path):
    # The route torchvision-style datasets take (headers only, no load-time decode).
    bomb = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(UsageError, match="image too large: .*30000x30000"):
        ImageFileSplit([bomb], [0]).native_sizes()
    with pytest.raises(UsageError, match="image too large"):
        ImageFileSplit([bomb], [0])[0]


# --- corrupt and truncated images -----------------------------------------------------------


def test_corrupt_and_truncated_images_are_left_out_with_one_warning(cli, tmp_path):
    ds = _two_class_folder(tmp_path / "ds")
    _truncated_jpeg(ds / "cat" / "half.jpg")
    _random_bytes(ds / "dog" / "noise.jpg")
    result = cli(*RUN, "--data", str(ds), "--json", "r.json")
    assert_no_traceback(result)
    assert result.code in (0, 1), result.err
    report = _report(tmp_path)
    notes = [w for w in report.get("warnings", []) if "cannot be read" in w]
    assert notes == [
        f"ImageFolder {ds}: 2 of 8 images cannot be read (1 truncated, 1 not an image): "
        "cat/half.jpg (truncated), dog/noise.jpg (not an image); they are left out of the audit"
    ]
    assert report["data"]["n_eval"] == 6
    assert f"warning: {notes[0]}" in result.out + result.err


def test_truncated_image_is_caught_even_when_pil_loads_truncated_images(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    ds = _two_class_folder(tmp_path / "ds")
    _truncated_jpeg(ds / "dog" / "half.jpg")
    with pytest.warns(UserWarning, match=r"1 of 7 images cannot be read \(1 truncated\): dog/half.jpg"):
        data = load_data(str(ds))
    assert len(data.eval) == 6 and all(p.name != "half.jpg" for p in data.eval.paths)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the user's setting is restored


def test_many_unreadable_images_name_the_first_five(tmp_path):
    ds = _two_class_folder(tmp_path / "ds")
    for k in range(8):
        _random_bytes(ds / "cat" / f"junk{k}.png", seed=k)
    with pytest.warns(UserWarning) as record:
        data = load_data(str(ds))
    (message,) = [str(w.message) for w in record if "cannot be read" in str(w.message)]
    assert "8 of 14 images cannot be read (8 not an image)" in message
    assert "cat/junk4.png (not an image) and 3 more; they are left out" in message
    assert "junk5" not in message and len(data.eval) == 6


def test_folder_of_only_unreadable_images_is_refused(cli, tmp_path):
    ds = tmp_path / "ds"
    _random_bytes(ds / "cat" / "a.jpg")
    _truncated_jpeg(ds / "dog" / "b.jpg")
    result = cli(*RUN, "--data", str(ds), "--json", "r.json")
    assert_usage_error(result, f"cannot read any evaluation image in {str(ds)!r}", "cat/a.jpg (not an image)", "dog/b.jpg (truncated)")


def test_unreadable_train_images_leave_the_val_images(tmp_path):
    _two_class_folder(tmp_path / "ds" / "train")
    _two_class_folder(tmp_path / "ds" / "val", per_class=1)
    _truncated_jpeg(tmp_path / "ds" / "train" / "cat" / "half.jpg")
    with pytest.warns(UserWarning, match=r"1 of 9 images cannot be read \(1 truncated\): train/cat/half.jpg"):
        data = load_data(str(tmp_path / "ds"))
    assert (len(data.train), len(data.eval)) == (6, 2)


# --- COCO boxes -----------------------------------------------------------------------------


def _coco(tmp_path: Path, boxes: dict[int, list[tuple[int, list[float]]]], size=(40, 30), **extra) -> Path:
    """Images 0..N-1 of ``size`` with ``boxes[k]`` = [(category_id, bbox), ...]."""
    images, annotations = [], []
    for k, anns in boxes.items():
        _png(tmp_path / f"im{k}.png", size=size)
        images.append({"id": k, "file_name": f"im{k}.png"})
        for category, bbox in anns:
            annotations.append({"id": len(annotations), "image_id": k, "category_id": category, "bbox": bbox, **extra})
    path = tmp_path / "instances.json"
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


BAD_BOXES = {
    0: [(1, [2, 2, 10, 10]), (1, [5, 5, -4, 8])],  # negative width: dropped
    1: [(2, [30, 20, 20, 20]), (2, [0, 0, 8, 8]), (2, [1, 1, 0, 5])],  # partly outside: clipped; zero width
    2: [(1, [100, 100, 5, 5])],  # wholly outside: the image has no box left
    3: [(2, [40, 0, 5, 5]), (2, [3, 3, 6, 6])],  # starts at the right edge: wholly outside
    4: [(1, [0, 0, 40, 30])],
}


def test_coco_bad_boxes_are_dropped_at_load_with_one_warning(cli, tmp_path):
    path = _coco(tmp_path, BAD_BOXES)
    result = cli(*RUN, "--data", str(path), "--json", "r.json")
    assert_no_traceback(result)
    assert result.code in (0, 1), result.err
    report = _report(tmp_path)
    notes = [w for w in report.get("warnings", []) if "boxes" in w]
    assert notes == [
        f"COCO file {path}: dropped 4 of 9 boxes (2 with zero or negative width/height, 2 wholly outside its image); "
        "clipped 1 more that lay partly outside their image; left out 1 image(s) with no valid box"
    ]
    assert report["data"]["n_eval"] == 4


def test_coco_keeps_every_valid_box_clipped_to_its_image(tmp_path):
    with pytest.warns(UserWarning, match="dropped 4 of 9 boxes"):
        data = load_data(str(_coco(tmp_path, BAD_BOXES)))
    assert [p.name for p in data.eval.paths] == ["im0.png", "im1.png", "im3.png", "im4.png"]
    assert data.eval[0]["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]]
    assert data.eval[1]["boxes"].tolist() == [[30.0, 20.0, 40.0, 30.0], [0.0, 0.0, 8.0, 8.0]]
    assert data.eval[2]["boxes"].tolist() == [[3.0, 3.0, 9.0, 9.0]]
    batch = next(data.batches(batch_size=4))
    assert batch.boxes.shape == (4, 2, 4) and batch.boxes[0, 1].isnan().all()


def test_coco_label_comes_from_the_largest_valid_box(tmp_path):
    # The "dog" box claims the largest area but lies outside the image: the label is "cat".
    boxes = {0: [(2, [50, 50, 30, 30]), (1, [0, 0, 5, 5])], 1: [(2, [0, 0, 10, 10])]}
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 boxes \(1 wholly outside its image\)"):
        data = load_data(str(_coco(tmp_path, boxes)))
    assert [data.class_names[c] for c in data.eval.labels] == ["cat", "dog"]


def test_coco_with_no_valid_box_is_refused(tmp_path):
    with pytest.warns(UserWarning), pytest.raises(UsageError, match="has no image with a valid box"):
        load_data(str(_coco(tmp_path, {0: [(1, [0, 0, 0, 0])], 1: [(2, [99, 99, 1, 1])]})))


def test_coco_unreadable_image_is_left_out_with_one_warning(tmp_path):
    path = _coco(tmp_path, {0: [(1, [0, 0, 5, 5])], 1: [(2, [0, 0, 5, 5])], 2: [(2, [0, 0, 5, 5])]})
    _truncated_jpeg(tmp_path / "im2.png")  # a cut JPEG under a .png name
    with pytest.warns(UserWarning, match=r"COCO file .*instances.json: 1 of 3 images cannot be read \(1 truncated\): im2.png"):
        data = load_data(str(path))
    assert [p.name for p in data.eval.paths] == ["im0.png", "im1.png"]
