"""Which layer Grad-CAM explains: the automatic rule on real architectures and planted traps,
the per-model override, and clear errors for layers that cannot work."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import auditkit
from auditkit import Outcome, Target, UsageError
from auditkit.testing.models import TinyFCNet, TinyGAPNet
from auditkit_gradcam.layer_choice import choose_layer
from gradcam_models import ColourEvidenceNet, two_squares


def _probed(model: nn.Module, size: int = 64, role: str = "target", name: str = "target") -> tuple[Target, torch.Tensor]:
    target = Target(model, name=name, role=role)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    target.probe(x)
    return target, x


class SideBranchNet(TinyGAPNet):
    """A TinyGAPNet that also computes a spatial side output after its features and returns it
    beside the logits: the last spatial layer in call order, but the logits do not use it."""

    def __init__(self) -> None:
        super().__init__(num_classes=4)
        self.side = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        features = self.features(x)
        return self.fc(self.flatten(self.pool(features))), self.side(features)


class SharedActivationNet(nn.Module):
    """One ReLU module applied after both convolutions: it runs twice, last on the final map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.act(self.conv2(self.act(self.conv1(x)))))


@pytest.mark.parametrize(
    ("make", "size", "expected", "passed_over"),
    [
        (lambda: TinyGAPNet(4), 32, "features", {}),
        (lambda: TinyFCNet(4, input_size=32), 32, "features", {}),
        (lambda: torchvision.models.resnet18(num_classes=4), 64, "layer4", {}),
        # at 64 px AlexNet's features end at 1x1 and its adaptive pool stretches them to 6x6
        (lambda: torchvision.models.alexnet(num_classes=4), 128, "features", {"avgpool": "adaptive pooling"}),
        # (the layer choice needs the structure only: default init is faster to build than init_weights=True)
        (lambda: torchvision.models.googlenet(num_classes=4, init_weights=False, aux_logits=False), 64, "inception5b", {}),
        (SideBranchNet, 32, "features", {"side": "the logits do not depend on its output"}),
        (SharedActivationNet, 16, "conv2", {"act": "runs 2 times per forward pass"}),
    ],
    ids=["tiny-gap", "tiny-fc", "resnet18", "alexnet", "googlenet", "side-branch", "shared-relu"],
)
def test_automatic_choice(make, size, expected, passed_over):
    torch.manual_seed(0)
    target, x = _probed(make().eval(), size)
    choice = choose_layer(target, x)
    assert choice.name == expected and choice.source == "automatic"
    assert len(choice.output_shape) == 3 and choice.output_shape[1] * choice.output_shape[2] > 1
    for name, why in passed_over.items():
        assert why in dict(choice.passed_over)[name]
    assert "the last layer with a spatial output" in choice.describe()


def test_alexnet_at_224_chooses_features_not_the_resampling_avgpool():
    torch.manual_seed(0)
    target, x = _probed(torchvision.models.alexnet(num_classes=4).eval(), 224)
    choice = choose_layer(target, x)
    assert choice.name == "features" and choice.output_shape == (256, 6, 6)
    assert "adaptive pooling" in dict(choice.passed_over)["avgpool"]


@pytest.fixture(scope="module")
def resnet18_target():
    torch.manual_seed(0)
    return _probed(torchvision.models.resnet18(num_classes=4).eval())


def test_overrides_per_model_and_for_the_target(resnet18_target):
    target, x = resnet18_target
    assert choose_layer(target, x, layer="layer3").name == "layer3"
    chosen = choose_layer(target, x, layer="layer3", layers={"target": "layer2"})
    assert (chosen.name, chosen.source) == ("layer2", "setting layers['target']")
    baseline = copy.copy(target)  # the same model seen as a baseline
    baseline.role, baseline.name = "baseline", "resnet18"
    # `layer` is for the model under audit; a baseline keeps the automatic choice unless named
    assert choose_layer(baseline, x, layer="layer3").name == "layer4"
    assert choose_layer(baseline, x, layer="layer3", layers={"resnet18": "layer1"}).name == "layer1"


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("layer5", "has no layer 'layer5'"),
        ("fc", "outputs shape [2, 4] (output [4] is not a grid); expected an output over the image grid"),
        ("layer4.1.relu", "runs 2 times per forward pass"),
    ],
)
def test_unusable_configured_layers_are_clear_errors(layer, message, resnet18_target):
    target, x = resnet18_target
    with pytest.raises(UsageError, match="Grad-CAM setting layer") as excinfo:
        choose_layer(target, x, layer=layer)
    assert message in str(excinfo.value)


def test_layer_choice_shows_in_every_check_and_a_bad_one_errors_the_check():
    data = two_squares(n=4)
    run = auditkit.audit(ColourEvidenceNet(), data, checks=["gradcam.*"], settings={
        "gradcam.localization": {"layers": {"target": "evidence.0"}},
        "gradcam.faithfulness": {"steps": 4},
    })
    for check in ("gradcam.localization", "gradcam.randomization", "gradcam.faithfulness"):
        result = run[check]
        assert result.details["layer"] in ("evidence", "evidence.0"), check
        assert f"layer {result.details['layer']} [" in result.message
    assert run["gradcam.localization"].details["layer_source"] == "setting layers['target']"
    bad = auditkit.audit(ColourEvidenceNet(), data, checks=["gradcam.localization"],
                         settings={"gradcam.localization": {"layer": "evidense"}})["gradcam.localization"]
    assert bad.outcome is Outcome.ERROR
    assert "has no layer 'evidense' (similar: evidence" in bad.message
