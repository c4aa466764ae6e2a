"""Target: the logits are chosen among several output tensors by the data's number of
classes, never by position; an embedding is never taken for the logits (issue #14, 1)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import auditkit
from auditkit.errors import TargetError
from auditkit.models.loaders import ModelOptions, load_model
from auditkit.target import BlackBoxTarget, Target
from auditkit.testing.models import DictOutputNet, TinyGAPNet


class EmbeddingFirstNet(TinyGAPNet):
    """Returns ``(embedding [B,16], logits [B,K])``, as metric-learning models do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        embedding = self.flatten(self.pool(self.features(x)))
        return embedding, self.fc(embedding)


class NamedOutputsNet(TinyGAPNet):
    """Returns a dict without a "logits" key: ``{"embedding": [B,16], "scores": [B,K]}``."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        embedding = self.flatten(self.pool(self.features(x)))
        return {"embedding": embedding, "scores": self.fc(embedding)}


@dataclass
class PooledOutput:
    """A Hugging Face-style output object without ``logits``."""

    pooler_output: torch.Tensor
    class_scores: torch.Tensor
    attentions: tuple | None = None


class ObjectOutputNet(TinyGAPNet):
    def forward(self, x: torch.Tensor) -> PooledOutput:  # type: ignore[override]
        embedding = self.flatten(self.pool(self.features(x)))
        return PooledOutput(embedding, self.fc(embedding))


class TwoHeadsNet(TinyGAPNet):
    """Returns ``(logits, auxiliary logits)``: two tensors of shape [B,K]."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        logits = super().forward(x)
        return logits, 2 * logits


def _reference_logits(net: TinyGAPNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return TinyGAPNet.forward(net.eval(), x)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "cls, choice",
    [
        (EmbeddingFirstNet, "output 1 of a tuple of 2"),
        (NamedOutputsNet, "output 'scores' of a dict of 2"),
        (ObjectOutputNet, "output 'class_scores' of a PooledOutput of 3"),
    ],
)
def test_logits_are_the_output_with_the_datas_number_of_classes(cls, choice, images):
    torch.manual_seed(0)
    net = cls(num_classes=4)
    target = Target(net, num_classes_hint=4)
    with target:
        logits = target.probe(images)
        again = target(images)
    expected = _reference_logits(net, images)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(again, expected)
    assert target.num_classes == 4
    assert target.output_choice == choice and target.describe()["output"] == choice


def test_the_hint_can_come_after_construction(images):
    torch.manual_seed(0)
    net = EmbeddingFirstNet(num_classes=4)
    target = Target(net)
    target.expect_classes(4)
    with target:
        torch.testing.assert_close(target.probe(images), _reference_logits(net, images))


def test_without_the_number_of_classes_two_candidates_are_an_error_not_a_guess(images):
    target = Target(EmbeddingFirstNet(num_classes=4))
    with target, pytest.raises(TargetError) as err:
        target.probe(images)
    message = str(err.value)
    assert "0: [3, 16], 1: [3, 4]" in message and "expect_classes" in message


def test_no_matching_tensor_lists_every_shape_and_what_was_expected(images):
    target = Target(EmbeddingFirstNet(num_classes=10), num_classes_hint=4)
    with target, pytest.raises(TargetError) as err:
        target(images)
    message = str(err.value)
    assert "tuple of 2 with tensors {0: [3, 16], 1: [3, 10]}" in message
    assert "expected logits [batch=3, 4] in exactly one tensor; found 0" in message


def test_two_matching_tensors_are_an_error(images):
    target = Target(TwoHeadsNet(num_classes=4), num_classes_hint=4)
    with target, pytest.raises(TargetError, match=r"\{0: \[3, 4\], 1: \[3, 4\]\}; expected logits \[batch=3, 4\] .*found 2"):
        target(images)


def test_direct_logits_stay_as_they_were(images):
    for net in (TinyGAPNet(num_classes=4), DictOutputNet(num_classes=4)):
        target = Target(net, num_classes_hint=7)  # the hint only chooses among several tensors
        with target:
            assert target.probe(images).shape == (3, 4)
        assert target.output_choice is None and "output" not in target.describe()


def test_expect_classes_needs_a_positive_integer():
    target = Target(TinyGAPNet())
    for bad in (0, -1, 2.0, True, "4"):
        with pytest.raises(ValueError, match="positive integer"):
            target.expect_classes(bad)
    black_box = BlackBoxTarget(lambda x: torch.zeros(x.shape[0], 4))
    black_box.expect_classes(4)
    assert black_box.num_classes_hint == 4


def test_model_loader_passes_the_number_of_classes(images):
    target = load_model("auditkit.testing.models:tiny_factory", ModelOptions(num_classes=3))
    assert target.num_classes_hint == 3


def test_accuracy_of_an_embedding_first_model_is_its_true_accuracy(tiny_data):
    torch.manual_seed(0)
    net = EmbeddingFirstNet(num_classes=4)
    run = auditkit.audit(Target(net, num_classes_hint=4), tiny_data, checks=["accuracy.clean"])
    preds = _reference_logits(net, tiny_data.eval.images).argmax(1)
    expected = (preds == tiny_data.eval.labels).float().mean().item()
    assert run["accuracy.clean"].metrics["top1"] == pytest.approx(expected)


def test_a_container_with_one_tensor_gives_it(images):
    class OnlyTensorInTuple(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyGAPNet(num_classes=4)

        def forward(self, x):
            return (self.net(x), None, "debug")

    target = Target(OnlyTensorInTuple())
    with target:
        assert target.probe(images).shape == (3, 4)
    assert target.output_choice == "output 0 of a tuple of 3"
