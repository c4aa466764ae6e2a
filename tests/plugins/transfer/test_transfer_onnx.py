"""ONNX files audited as black boxes through onnxruntime: answers equal the exported model's,
whatever the graph's batch axis, layout, normalization or output kind."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

import auditkit
from auditkit import Outcome, UsageError
from auditkit.models.onnx_file import ONNXTarget
from conftest import FAST


def export(model: nn.Module, path, *, size: int = 16, batch: int = 2, dynamic: bool = True, channels_last: bool = False):
    """Export ``model`` with the TorchScript-based exporter (no onnxscript needed)."""
    pytest.importorskip("onnxruntime")
    shape = (batch, size, size, 3) if channels_last else (batch, 3, size, size)
    axes = {"images": {0: "batch"}, "out": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model.eval(), (torch.rand(shape),), str(path), dynamo=False,
            input_names=["images"], output_names=["out"], dynamic_axes=axes,
        )
    return str(path)


class ChannelsLast(nn.Module):
    """Takes NHWC images, as TensorFlow-born models do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.permute(0, 3, 1, 2))


class Argmax(nn.Module):
    """Answers labels only."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).argmax(1)


class Normalizing(nn.Module):
    """Expects normalized input; the audit must normalize before the graph."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def forward(self, x):
        return self.model(x * self.std + self.mean)  # undoes the normalization: same answers


def test_an_onnx_export_answers_like_the_model_and_is_audited_as_a_black_box(target_cnn, labelled_by_target, tmp_path):
    path = export(target_cnn, tmp_path / "cnn.onnx")
    run = auditkit.audit(path, labelled_by_target, checks=["accuracy.clean", "transfer.proxy"], settings={"transfer.proxy": FAST})
    model = run.models[0]
    assert model["white_box"] is False and model["returns"] == "scores" and model["num_classes"] == 4
    assert model["onnx"]["input"] == "images" and model["onnx"]["channels_last"] is False
    assert run["accuracy.clean"].metrics["top1"] == 1.0  # labels are the torch model's own answers
    result = run["transfer.proxy"]
    assert result.outcome is not Outcome.ERROR, result.message
    assert result.metrics["queries"] == 86 and result.metrics["attack_queries"] == 4 * len(labelled_by_target.eval)

    target = ONNXTarget(path, batch_size=3)
    images = torch.rand(7, 3, 16, 16)
    with torch.no_grad():
        expected = torch.softmax(target_cnn(images), 1)
    assert torch.allclose(target.query(images), expected, atol=1e-5)
    assert target.queries == 7


def test_a_fixed_batch_graph_is_run_in_padded_chunks(target_cnn, tmp_path):
    target = ONNXTarget(export(target_cnn, tmp_path / "fixed.onnx", batch=4, dynamic=False))
    assert target.fixed_batch == 4 and target.batch_size == 4 and target.input_size == (3, 16, 16)
    images = torch.rand(10, 3, 16, 16)  # 4 + 4 + 2 padded to 4
    with torch.no_grad():
        expected = torch.softmax(target_cnn(images), 1)
    assert torch.allclose(target.query(images), expected, atol=1e-5)
    assert target.queries == 10
    with pytest.raises(auditkit.TargetError, match=r"takes images of shape \[3, 16, 16\], got \[3, 8, 8\]"):
        target.query(torch.rand(2, 3, 8, 8))


def test_a_channels_last_graph_gets_nhwc_images(target_cnn, tmp_path):
    target = ONNXTarget(export(ChannelsLast(target_cnn), tmp_path / "nhwc.onnx", channels_last=True))
    assert target.channels_last is True
    images = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(target.query(images), torch.softmax(target_cnn(images), 1), atol=1e-5)


def test_a_graph_answering_labels_is_a_label_only_target(target_cnn, tmp_path):
    target = ONNXTarget(export(Argmax(target_cnn), tmp_path / "labels.onnx"))
    assert target.returns == "labels" and target.capabilities == frozenset()
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(target.query(images), target_cnn(images).argmax(1))


def test_mean_and_std_normalize_before_the_graph(target_cnn, labelled_by_target, tmp_path):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = export(Normalizing(target_cnn, mean, std), tmp_path / "norm.onnx")
    run = auditkit.audit(path, labelled_by_target, checks=["accuracy.clean"], mean=mean, std=std)
    assert run["accuracy.clean"].metrics["top1"] == 1.0
    unnormalized = auditkit.audit(path, labelled_by_target, checks=["accuracy.clean"])
    assert unnormalized["accuracy.clean"].metrics["top1"] < 1.0


def test_spec_options_after_the_hash(target_cnn, labelled_by_target, tmp_path):
    path = export(target_cnn, tmp_path / "cnn.onnx")
    run = auditkit.audit(path + "#batch_size=5&scores=logits", labelled_by_target, checks=["accuracy.clean"])
    assert run.models[0]["spec"] == path + "#batch_size=5&scores=logits"
    with pytest.raises(UsageError, match=r"unknown option 'batch'; did you mean 'batch_size'\?"):
        auditkit.audit(path + "#batch=5", labelled_by_target, checks=["accuracy.clean"])
    with pytest.raises(UsageError, match=r"the graph has no output 'probs'; outputs: out"):
        auditkit.audit(path + "#output=probs", labelled_by_target, checks=["accuracy.clean"])
    with pytest.raises(UsageError, match=r"an ONNX file carries its own weights"):
        auditkit.audit(path, labelled_by_target, checks=["accuracy.clean"], weights=str(tmp_path / "w.pt"))


def test_unusable_files_are_usage_errors(tmp_path, labelled_by_target):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UsageError, match=r"no such file; expected an ONNX model file"):
        auditkit.audit(str(tmp_path / "missing.onnx"), labelled_by_target, checks=["accuracy.clean"])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(UsageError, match=r"junk.onnx'?: onnxruntime cannot load it"):
        auditkit.audit(str(junk), labelled_by_target, checks=["accuracy.clean"])


def test_without_onnxruntime_the_error_names_the_extra(monkeypatch, tmp_path, labelled_by_target):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(UsageError, match=r"onnxruntime, which is not installed; run `pip install auditkit\[onnx\]`"):
        auditkit.audit(str(tmp_path / "model.onnx"), labelled_by_target, checks=["accuracy.clean"])
