"""Grad-CAM work shared by the checks of one model through ``AuditContext.shared``: the layer is
probed once and each evaluation image's map computed once, however many Grad-CAM checks run,
and every check's results are those it gives alone."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch

import auditkit
import auditkit_gradcam.maps
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import CurrentCheck

DATA = "synthetic:shapes?n=12&size=32"
N_IMAGES = 12
GRADCAM = ("gradcam.localization", "gradcam.faithfulness", "gradcam.randomization")
# Small settings keep the audits fast; faithfulness and randomization look at fewer images than
# localization, so their maps are a part of localization's.
SETTINGS = {
    "gradcam.localization": {"bootstrap_resamples": 200},
    "gradcam.faithfulness": {"max_images": 10, "steps": 4, "bootstrap_resamples": 200},
    "gradcam.randomization": {"max_images": 7},
}
# Batches of 5 make the checks' batches overlap partly: randomization's last batch (images 5-6)
# lies inside the others' second batch (images 5-9).
BATCH_SIZE = 5


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyGAPNet(num_classes=4)


class PassCounter(CurrentCheck):
    """Counts, per check, the images that pass through ``layer`` of the audited model with
    gradients on (Grad-CAM passes; the clean pass, the perturbed images of faithfulness and
    the mirrored images of cam.consistency run without), apart from the layer probe's."""

    def __init__(self, layer: torch.nn.Module):
        self.layer = layer
        self.probing = False
        self.images: Counter[str] = Counter()
        self.probe_images: Counter[str] = Counter()
        self.probes = 0

    def forward_hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        # Randomization's deep copies carry this hook along: count the audited model only.
        if module is self.layer and self.check is not None and torch.is_grad_enabled():
            (self.probe_images if self.probing else self.images)[self.check] += int(output.shape[0])



@pytest.fixture
def counted(monkeypatch):
    """A model, and a counter of its Grad-CAM passes and layer probes during the checks."""
    model = _model()
    counter = PassCounter(model.features)  # the layer the automatic rule chooses for TinyGAPNet
    choose_layer = auditkit_gradcam.maps.choose_layer

    def counting_choose_layer(*args: Any, **kwargs: Any) -> Any:
        counter.probes += 1
        counter.probing = True
        try:
            return choose_layer(*args, **kwargs)
        finally:
            counter.probing = False

    monkeypatch.setattr(auditkit_gradcam.maps, "choose_layer", counting_choose_layer)
    handle = model.features.register_forward_hook(counter.forward_hook)
    yield model, counter
    handle.remove()


def _audit(model: torch.nn.Module, checks: list[str], plugins: tuple = (), settings: dict | None = None) -> Any:
    return auditkit.audit(
        model, DATA, checks=checks, settings=settings or SETTINGS, plugins=plugins,
        batch_size=BATCH_SIZE, seed=0, device="cpu",
    )


def test_four_checks_compute_each_clean_map_once_and_probe_the_layer_once(counted):
    model, counter = counted
    run = _audit(model, [*GRADCAM, "cam.consistency"], plugins=(counter,))
    for check in GRADCAM:
        assert run[check].details["layer"] == "features"
    assert counter.probes == 1
    assert sum(counter.probe_images.values()) == 1  # the probe's one image
    # The first Grad-CAM check computes the maps of its 12 images; the other two (10 and 7 of
    # the same images) read them. Without sharing: 12 + 10 + 7 passes and three probes.
    assert counter.images["gradcam.localization"] == N_IMAGES
    assert counter.images["gradcam.faithfulness"] == 0
    assert counter.images["gradcam.randomization"] == 0
    # cam.consistency, after them, still runs its identity pass over the same tensor (the GAP
    # pool's input): its identities need the whole feature map, which the shared maps do not hold.
    assert counter.images["cam.consistency"] == N_IMAGES
    assert run["cam.consistency"].metrics["cam_gradcam_corr"] == pytest.approx(1.0)


def test_cam_consistency_first_computes_the_maps_the_gradcam_checks_read(counted):
    """In the default order (cam.consistency sorts before gradcam.*) the identity pass also
    yields the Grad-CAM maps at the layer whose output the pool reads, by the same formula:
    the Grad-CAM checks then compute none, and each clean map is computed once per audit."""
    model, counter = counted
    run = _audit(model, ["cam.consistency", *GRADCAM], plugins=(counter,))
    assert counter.images == Counter({"cam.consistency": N_IMAGES})
    for check in GRADCAM:
        alone = _audit(_model(), [check])[check]
        assert _same(run[check].metrics, alone.metrics)  # bit for bit: the same maps
        assert run[check].message == alone.message


def test_a_later_check_that_needs_more_images_computes_only_those(counted):
    model, counter = counted
    _audit(model, ["gradcam.randomization", "gradcam.faithfulness", "gradcam.localization"], plugins=(counter,))
    assert counter.probes == 1
    # Randomization (images 0-6, batches 0-4 and 5-6) computes 7 maps; faithfulness (images 0-9)
    # computes its batch 5-9 whole, as alone, keeping 7-9; localization computes 10-11.
    assert counter.images == Counter({"gradcam.randomization": 7, "gradcam.faithfulness": 5, "gradcam.localization": 2})


def test_checks_explaining_other_layers_or_classes_do_not_share(counted):
    model, counter = counted
    settings = {
        "gradcam.localization": {**SETTINGS["gradcam.localization"], "layer": "features.5"},
        "gradcam.faithfulness": {**SETTINGS["gradcam.faithfulness"], "explain": "predicted"},
        "gradcam.randomization": SETTINGS["gradcam.randomization"],
    }
    run = _audit(model, list(GRADCAM), plugins=(counter,), settings=settings)
    assert run["gradcam.localization"].details["layer"] == "features.5"
    assert run["gradcam.faithfulness"].details["layer"] == "features"
    assert "predicted class" in run["gradcam.faithfulness"].message
    # The configured layer is looked up, the automatic one probed once for the other two.
    assert counter.probes == 2
    # Localization's maps are of another layer, faithfulness explains other classes: only
    # randomization (the true labels at the automatic layer, like neither) has nothing to read.
    assert counter.images == Counter({"gradcam.localization": 12, "gradcam.faithfulness": 10, "gradcam.randomization": 7})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def together() -> Any:
    # Randomization first: the others then read maps computed in its batches, and faithfulness
    # and localization extend them.
    return _audit(_model(), ["gradcam.randomization", "gradcam.faithfulness", "gradcam.localization", "cam.consistency"])


@pytest.mark.parametrize("check", GRADCAM)
def test_each_check_gives_with_the_others_exactly_what_it_gives_alone(together, check):
    shared, own = together[check], _audit(_model(), [check])[check]
    assert shared.outcome == own.outcome
    assert _same(shared.metrics, own.metrics)  # bit for bit, NaN for NaN
    assert shared.message == own.message
    # the estimated cost is the one detail that differs: the shared maps are work not redone
    assert _same(_without_cost(shared.details), _without_cost(own.details))
    assert [(a.name, a.data) for a in shared.artifacts] == [(a.name, a.data) for a in own.artifacts]


def _without_cost(details: dict) -> dict:
    return {k: v for k, v in details.items() if k != "estimated_cost"}
