"""What an audit does with the data it is given (auditkit.main.run_audit): images brought to a
size the model takes and said so, every image evaluated unless something must be trained,
the held-out share said on the terminal and in the report, bad pixels refused before any check."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import torch
from PIL import Image

import auditkit
from auditkit import Check, Findings
from auditkit.cli import main
from auditkit.config import Config
from auditkit.data.loaders import load_data
from auditkit.data.preprocess import Preprocess
from auditkit.main import train_split_purposes
from auditkit.reporters.json_report import load_schema
from auditkit.target import Target
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.plugins import CheckPlugin


class NeedsTrain(Check):
    id = "test.needs_train"
    needs_train_split = "to train a test proxy"

    def run(self, ctx):
        return Findings(metrics={"n_train": float(len(ctx.data.train)), "n_eval": float(ctx.n_images)})


class Sizes(Check):
    id = "test.sizes"

    def run(self, ctx):
        batch = next(ctx.batches())
        return Findings(metrics={"height": float(batch.images.shape[-2]), "width": float(batch.images.shape[-1])})


@pytest.fixture()
def mixed_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # any default report folder lands here
    for k in range(10):
        path = tmp_path / "pets" / ("cat" if k % 2 else "dog") / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + 4 * k, 30), (25 * k, 0, 0)).save(path)
    return tmp_path / "pets"


def _audit(model, data, *classes, **kw):
    return auditkit.audit(model, data, plugins=[CheckPlugin(*classes)], autoload=False, **kw)


def _model():
    torch.manual_seed(0)
    return TinyGAPNet(num_classes=2)


def test_mixed_sizes_are_resized_the_standard_way_and_said_so(mixed_folder, tmp_path, capsys):
    run = _audit(_model(), str(mixed_folder), Sizes, json=str(tmp_path / "r.json"), verbose=0)
    out = capsys.readouterr().out
    described = (
        "the 10 evaluation images have 10 different sizes (from 40x30 to 76x30): shorter side resized "
        "to 256, center-cropped to 224x224 (the standard ImageNet evaluation transform; the model does not say "
        "what it expects)"
    )
    assert f"data {str(mixed_folder)!r}: {described}" in out  # announced when auditkit chose to resize
    assert f"images: {described}" in out  # and in the session header
    assert f"data: {mixed_folder} (10 eval / 0 train images, 2 classes)" in out
    assert run["test.sizes"].metrics == {"height": 224.0, "width": 224.0}
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["data"]["n_eval"] == 10 and report["data"]["n_train"] == 0
    assert report["data"]["preprocessing"] == {
        "mode": "resize_center_crop", "resize_size": 256, "crop_size": [224, 224], "interpolation": "bilinear",
        "chosen_by": "auditkit", "output_size": [224, 224], "native_sizes": 10,
        "description": described,
    }
    assert "warnings" not in report  # nothing was held out


def test_the_model_s_expected_preprocessing_wins_for_mixed_sizes(mixed_folder, capsys):
    target = Target(_model(), spec="tiny-at-64")
    target.expected_preprocess = Preprocess.center_crop(64, 72)
    run = _audit(target, str(mixed_folder), Sizes, verbose=0)
    assert run["test.sizes"].metrics == {"height": 64.0, "width": 64.0}
    assert "shorter side resized to 72, center-cropped to 64x64 (as tiny-at-64 expects)" in capsys.readouterr().out


def test_a_check_that_needs_a_train_split_holds_out_a_hashed_share(mixed_folder, tmp_path, capsys):
    data = load_data(str(mixed_folder))
    run = _audit(_model(), data, NeedsTrain, json=str(tmp_path / "r.json"), verbose=0)
    message = (
        f"data {str(mixed_folder)!r} has no train split: 2 of 10 images (20%, chosen by a hash of each file path) "
        "are held out to train a test proxy; the checks measure on the other 8. "
        f"Give {mixed_folder}/train and {mixed_folder}/val to evaluate every image."
    )
    assert f"warning: {message}" in capsys.readouterr().out
    assert run["test.needs_train"].metrics == {"n_train": 2.0, "n_eval": 8.0}
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["warnings"] == [message]
    assert report["data"]["n_eval"] == 8 and report["data"]["n_train"] == 2
    assert data.train is None and len(data.eval) == 10  # the caller's object is left as it was


def test_without_anything_to_train_every_image_is_evaluated(mixed_folder):
    run = auditkit.audit(_model(), str(mixed_folder), checks=["accuracy.clean"])
    assert run["accuracy.clean"].metrics["n_images"] == 10
    assert "warnings" not in run.to_json()


def test_train_split_purposes():
    data = auditkit.AuditData("photos", auditkit.TensorSplit(torch.rand(4, 3, 8, 8), torch.arange(4) % 2), num_classes=2)
    config = Config(baselines=["alexnet", "resnet18"], baseline_weights={"alexnet": "a.pt"})
    assert train_split_purposes(config, [], data) == ["to train the baselines (resnet18)"]
    assert train_split_purposes(config, [], data, baselines_given=True) == []
    generated = load_data("synthetic:shapes?n=4&train=0&size=16")  # baselines train on fresh images
    assert train_split_purposes(config, [], generated) == []

    class Plain(Check):
        id = "test.plain"

    class Flagged(Check):
        id = "test.flagged"
        needs_train_split = True

    checks = [Plain(), Flagged(), NeedsTrain()]
    assert train_split_purposes(Config(), checks, data) == ["for test.flagged", "to train a test proxy"]


NORMALIZED_FACTORY = textwrap.dedent(
    """
    import torch
    from torch.utils.data import TensorDataset

    def normalized():
        images = (torch.rand(8, 3, 16, 16) - 0.45) / 0.225
        return None, TensorDataset(images, torch.arange(8) % 4), 4
    """
)


def test_normalized_data_exits_4_before_any_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "norm.py").write_text(NORMALIZED_FACTORY)
    code = main([
        "run", "--baselines", "none", "--checks", "accuracy.clean",
        "--model", "auditkit.testing.models:tiny_factory", "--data", "norm.py:normalized",
    ])
    captured = capsys.readouterr()
    assert code == 4
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "data 'norm.py:normalized' gives images with values from -" in lines[0]
    assert "they look already normalized (mean/std applied)" in lines[0]
    assert "accuracy.clean" not in captured.out
