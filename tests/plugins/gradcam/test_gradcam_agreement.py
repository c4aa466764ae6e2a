"""auditkit's Grad-CAM against the peers: pytorch-grad-cam and captum compute the same maps on
the same model, layer and inputs; where pytorch-grad-cam is known to be wrong (a layer followed
by an in-place ReLU) ours matches the correct answer."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision

import auditkit
from auditkit import Target
from auditkit.saliency import grad_cam, upsample
from gradcam_models import ColourEvidenceNet, pgc_pipeline, two_squares

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")

SIZE = 112


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    return (flat / flat.amax(dim=1, keepdim=True).clamp_min(1e-30)).view_as(maps)


def _ours(model: torch.nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    target = Target(model)  # mean 0, std 1: the peers see the same input
    with target:
        target.probe(x[:2])
        maps, _ = grad_cam(target, x, classes, layer)
    return maps


def _pytorch_grad_cam(model: torch.nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(model.named_modules())[layer]
    with GradCAM(model=model, target_layers=[module]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(maps))


def _captum(model: torch.nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    from captum.attr import LayerGradCam

    module = dict(model.named_modules())[layer]
    return LayerGradCam(model, module).attribute(x, target=classes, relu_attributions=True)[:, 0].detach()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, SIZE, SIZE, generator=g), torch.tensor([1, 5, 7, 3])


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_resnet18_maps_equal_pytorch_grad_cam_and_captum(resnet18, inputs, layer):
    x, classes = inputs
    ours = _ours(resnet18, layer, x, classes)
    assert (ours.flatten(1).amax(dim=1) > 0).all()  # no empty map: the comparison means something
    theirs = _pytorch_grad_cam(resnet18, layer, x, classes)
    assert (pgc_pipeline(ours, SIZE) - theirs).abs().max() < 1e-4
    captum = _captum(resnet18, layer, x, classes)
    assert (_minmax(ours) - _minmax(captum)).abs().max() < 1e-4
    # upsampled to the input as captum does it (bilinear), after normalization
    assert (upsample(_minmax(ours), (SIZE, SIZE)) - upsample(_minmax(captum), (SIZE, SIZE))).abs().max() < 1e-4


def test_alexnet_in_place_relu_trap():
    """torchvision AlexNet's features.10 is followed by ReLU(inplace=True): pytorch-grad-cam then
    mixes post-ReLU activations with pre-ReLU gradients. Ours equals pytorch-grad-cam on a copy
    without in-place ReLUs (the correct maps) and captum, and differs from pytorch-grad-cam on
    the original model."""
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(num_classes=10).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, SIZE, SIZE, generator=g)
    classes = torch.tensor([0, 3, 6, 9])
    ours = _ours(alexnet, "features.10", x, classes)
    assert (ours.flatten(1).amax(dim=1) > 0).all()

    safe = copy.deepcopy(alexnet)
    for module in safe.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    correct = _pytorch_grad_cam(safe, "features.10", x, classes)
    assert (pgc_pipeline(ours, SIZE) - correct).abs().max() < 1e-4
    assert (_minmax(ours) - _minmax(_captum(alexnet, "features.10", x, classes))).abs().max() < 1e-4

    trapped = _pytorch_grad_cam(alexnet, "features.10", x, classes)
    assert (pgc_pipeline(ours, SIZE) - trapped).flatten(1).abs().amax(dim=1).max() > 0.1


def test_colour_detector_map_is_exactly_the_colour_mask():
    data = two_squares(n=4)
    x, labels = data.eval.images, data.eval.labels
    maps = _ours(ColourEvidenceNet(), "evidence", x, labels)
    colour = x[torch.arange(4), labels]  # the labelled colour's channel
    others = x.sum(dim=1) - colour
    mask = (colour == 1.0) & (others == 0.0)
    assert torch.equal(maps > 0, mask)
    assert torch.allclose(maps[mask], torch.full_like(maps[mask], 0.5 / (32 * 32)))


def test_grad_cam_works_on_a_frozen_model(resnet18, inputs):
    """A model whose parameters do not require grad (an inference-only copy) still gets maps:
    the input requires grad instead, and nothing is left on the parameters."""
    x, classes = inputs
    frozen = copy.deepcopy(resnet18)
    for p in frozen.parameters():
        p.requires_grad_(False)
    assert torch.allclose(_ours(frozen, "layer4", x, classes), _ours(resnet18, "layer4", x, classes))
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    tiny = ColourEvidenceNet()
    for p in tiny.parameters():
        p.requires_grad_(False)
    run = auditkit.audit(tiny, two_squares(n=4), checks=["gradcam.localization"])
    assert run["gradcam.localization"].metrics["energy_in_box"] == 1.0
