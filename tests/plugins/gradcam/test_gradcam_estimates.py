"""The Grad-CAM checks' cost estimates (``Check.estimate``) against the image passes they make,
counted at the model's stem, alone and after the checks they share maps with; and
gradcam.faithfulness's one forward of a constant substrate, which changes no result."""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import auditkit
import auditkit_gradcam.faithfulness
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import PassCounter

DATA = "synthetic:shapes?n=12&size=32"
N_IMAGES = 12
# Batches of 5 make the checks' batches overlap partly (images 0-4, 5-9, 10-11).
BATCH_SIZE = 5
FAITHFULNESS = "gradcam.faithfulness"
LOCALIZATION = "gradcam.localization"
RANDOMIZATION = "gradcam.randomization"
SMALL = {
    FAITHFULNESS: {"max_images": 10, "steps": 3, "bootstrap_resamples": 100},
    LOCALIZATION: {"bootstrap_resamples": 100},
    RANDOMIZATION: {"max_images": 7},
}


class CopyCountingPassCounter(PassCounter):
    """A PassCounter that also counts the passes through deep copies of the model
    (gradcam.randomization's randomized copies): ``copy.deepcopy`` copies the counting hook's
    bound method, and with it the counter, unless the counter copies as itself."""

    def __deepcopy__(self, memo: dict) -> CopyCountingPassCounter:
        return self


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyGAPNet(num_classes=4)


def _audit(model: torch.nn.Module, checks: list[str], settings: dict | None = None) -> tuple[Any, PassCounter]:
    counter = CopyCountingPassCounter(model)
    try:
        run = auditkit.audit(
            model, DATA, baselines=[], checks=checks, settings=settings or SMALL, plugins=[counter],
            batch_size=BATCH_SIZE, device="cpu", seed=0,
        )
    finally:
        counter.close()
    return run, counter


def _estimated(run: Any, check: str) -> tuple[int, int]:
    cost = run[check].details["estimated_cost"]
    return cost["forward"], cost["gradient"]


def _counted(counter: PassCounter, check: str) -> tuple[int, int]:
    return counter.forward[check], counter.gradient[check]


# -- faithfulness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "fill", "start", "end_passes"),
    [
        (3, "black", "blur", 10 + 1),  # the default kinds: the blurred start per image, black once
        (5, "gray", "gray", 1),  # one constant image for both ends
        (4, "blur", "blur", 10),  # one blurred copy per image for both ends
        (3, "gray", "black", 2),
    ],
)
def test_faithfulness_estimate_equals_its_passes(steps, fill, start, end_passes):
    settings = {FAITHFULNESS: {**SMALL[FAITHFULNESS], "steps": steps, "deletion_fill": fill, "insertion_start": start}}
    run, counter = _audit(_model(), [FAITHFULNESS], settings)
    assert run[FAITHFULNESS].outcome != auditkit.Outcome.ERROR, run[FAITHFULNESS].message
    n = 10
    # 4 curves (deletion, insertion; Grad-CAM and random order) at each inner step; the ends;
    # the maps of its 10 images (batches 0-4, 5-9) and the layer probe's one image
    expected = (4 * (steps - 1) * n + end_passes, n + 1)
    assert _estimated(run, FAITHFULNESS) == _counted(counter, FAITHFULNESS) == expected


@pytest.mark.parametrize(("fill", "start"), [("black", "blur"), ("gray", "gray"), ("black", "gray")])
def test_one_forward_of_a_constant_substrate_changes_no_result(monkeypatch, fill, start):
    """Black and gray are the same image for every image: their probabilities come from one
    forward of one image, read for every image. On these models the one-image forward gives
    the batched forward's probabilities bit for bit, so every metric and curve is identical."""
    settings = {FAITHFULNESS: {**SMALL[FAITHFULNESS], "steps": 4, "deletion_fill": fill, "insertion_start": start}}
    reused, reused_counter = _audit(_model(), [FAITHFULNESS], settings)
    monkeypatch.setattr(auditkit_gradcam.faithfulness, "CONSTANT_SUBSTRATES", frozenset())
    per_image, per_image_counter = _audit(_model(), [FAITHFULNESS], settings)
    a, b = reused[FAITHFULNESS], per_image[FAITHFULNESS]
    assert a.metrics == b.metrics  # bit for bit (no NaN among them here)
    assert all(not math.isnan(v) for v in a.metrics.values())
    assert [(x.name, x.data) for x in a.artifacts] == [(x.name, x.data) for x in b.artifacts]
    assert a.message == b.message
    constant_kinds = len({fill, start} & {"black", "gray"})
    # one pass per image and constant kind (one kind serving both ends once), or one per kind
    assert per_image_counter.forward[FAITHFULNESS] - reused_counter.forward[FAITHFULNESS] == (10 - 1) * constant_kinds
    # each estimate follows what its run does
    assert _estimated(reused, FAITHFULNESS) == _counted(reused_counter, FAITHFULNESS)
    assert _estimated(per_image, FAITHFULNESS) == _counted(per_image_counter, FAITHFULNESS)


# -- localization ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_images", [None, 6])
def test_localization_estimate_equals_its_passes(max_images):
    settings = {LOCALIZATION: {**SMALL[LOCALIZATION], "max_images": max_images}}
    run, counter = _audit(_model(), [LOCALIZATION], settings)
    n = max_images or N_IMAGES
    assert run[LOCALIZATION].metrics["n_images"] == n
    # its maps and the layer probe's one image
    assert _estimated(run, LOCALIZATION) == _counted(counter, LOCALIZATION) == (0, n + 1)


# -- randomization ---------------------------------------------------------------------------


def _model_with_head_signs(sign: float) -> torch.nn.Module:
    """TinyGAPNet whose linear head has weights of one sign: its features are post-ReLU (>= 0),
    so Grad-CAM, ReLU(sum_k w_ck / (h*w) f_k), is never empty for positive weights and always
    empty for negative ones."""
    model = _model()
    with torch.no_grad():
        model.fc.weight.copy_(sign * model.fc.weight.abs())
    return model


@pytest.mark.parametrize("max_images", [3, 7])
def test_randomization_estimate_equals_its_passes(max_images):
    run, counter = _audit(_model_with_head_signs(+1.0), [RANDOMIZATION], {RANDOMIZATION: {"max_images": max_images}})
    blocks = run[RANDOMIZATION].metrics["n_blocks"]
    assert blocks == 7  # fc, features.7, .6, .4, .3, .1, .0, from the logits down
    assert run[RANDOMIZATION].metrics["empty_original_maps"] == 0
    # the probe, the original maps (batches 0-4 and 5-6 for 7, 0-2 for 3), then every block
    # of the randomized copy for every image
    expected = (0, 1 + max_images + blocks * max_images)
    assert _estimated(run, RANDOMIZATION) == _counted(counter, RANDOMIZATION) == expected


def test_randomization_leaves_empty_maps_out_of_its_estimate_when_it_knows_them():
    """An untrained TinyGAPNet has some empty maps (its head has weights of both signs)."""
    checks = [LOCALIZATION, RANDOMIZATION]  # localization computes every map first
    run, counter = _audit(_model(), checks)
    blocks = int(run[RANDOMIZATION].metrics["n_blocks"])
    empty = int(run[RANDOMIZATION].metrics["empty_original_maps"])
    assert 0 < empty < 7
    # the original maps are shared: exact, without the empty maps
    assert _estimated(run, RANDOMIZATION) == _counted(counter, RANDOMIZATION) == (0, blocks * (7 - empty))

    # alone it computes the maps itself and cannot know which are empty: every image is
    # counted, an upper bound by one pass per block and empty map
    alone, alone_counter = _audit(_model(), [RANDOMIZATION])
    assert alone[RANDOMIZATION].metrics["empty_original_maps"] == empty
    assert _estimated(alone, RANDOMIZATION) == (0, 1 + 7 + blocks * 7)
    assert _counted(alone_counter, RANDOMIZATION) == (0, 1 + 7 + blocks * (7 - empty))


def test_randomization_with_every_original_map_empty_counts_no_randomized_pass():
    run, counter = _audit(_model_with_head_signs(-1.0), [LOCALIZATION, RANDOMIZATION])
    assert run[RANDOMIZATION].metrics["empty_original_maps"] == 7
    assert _estimated(run, RANDOMIZATION) == _counted(counter, RANDOMIZATION) == (0, 0)


# -- in the default order, after the checks they share work with -----------------------------


def test_estimates_in_the_default_order_after_cam_consistency():
    """Sorted by id: cam.consistency stores the maps of all 12 images at the layer the
    automatic rule picks; faithfulness, first of the Grad-CAM checks, has no layer yet, so it
    counts every map (an upper bound by its 10 maps) and the probe; localization and
    randomization then know the layer and the stored maps: exact."""
    checks = sorted(["accuracy.clean", "cam.consistency", FAITHFULNESS, LOCALIZATION, RANDOMIZATION])
    run, counter = _audit(_model(), checks)
    blocks = run[RANDOMIZATION].metrics["n_blocks"]
    assert [r.check for r in run.results] == checks
    for check in checks:
        assert run[check].outcome != auditkit.Outcome.ERROR, run[check].message
    assert counter.forward[None] == N_IMAGES  # the shared clean pass, outside every check
    assert _estimated(run, "accuracy.clean") == _counted(counter, "accuracy.clean") == (0, 0)
    assert _estimated(run, "cam.consistency") == _counted(counter, "cam.consistency") == (N_IMAGES, N_IMAGES)

    forward, gradient = _estimated(run, FAITHFULNESS)
    assert forward == counter.forward[FAITHFULNESS] == 4 * 2 * 10 + 10 + 1
    assert counter.gradient[FAITHFULNESS] == 1  # the probe: the maps are cam.consistency's
    assert gradient == 1 + 10  # the bound: the maps of its 10 images counted as not stored

    assert _estimated(run, LOCALIZATION) == _counted(counter, LOCALIZATION) == (0, 0)
    kept = 7 - run[RANDOMIZATION].metrics["empty_original_maps"]
    assert _estimated(run, RANDOMIZATION) == _counted(counter, RANDOMIZATION) == (0, blocks * kept)


def test_estimates_where_a_later_check_extends_the_maps():
    """Randomization (images 0-6) computes 7 maps; faithfulness (0-9) computes its batch 5-9
    whole, as alone; localization the last batch 10-11: each estimate counts exactly those."""
    run, counter = _audit(_model_with_head_signs(+1.0), [RANDOMIZATION, FAITHFULNESS, LOCALIZATION])
    blocks = run[RANDOMIZATION].metrics["n_blocks"]
    assert _estimated(run, RANDOMIZATION) == _counted(counter, RANDOMIZATION) == (0, 1 + 7 + blocks * 7)
    assert _estimated(run, FAITHFULNESS) == _counted(counter, FAITHFULNESS) == (4 * 2 * 10 + 10 + 1, 5)
    assert _estimated(run, LOCALIZATION) == _counted(counter, LOCALIZATION) == (0, 2)


def test_a_configured_layer_is_not_probed_and_its_maps_are_not_shared_with_the_automatic_ones():
    settings = {**SMALL, LOCALIZATION: {**SMALL[LOCALIZATION], "layer": "features.5"}}
    run, counter = _audit(_model(), [RANDOMIZATION, LOCALIZATION], settings)
    assert run[LOCALIZATION].details["layer"] == "features.5"
    assert _estimated(run, LOCALIZATION) == _counted(counter, LOCALIZATION) == (0, N_IMAGES)
