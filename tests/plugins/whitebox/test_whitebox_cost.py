"""The white-box checks' cost estimates against the image passes they make (PassCounter): exact
where settings, data and the clean pass decide the count, a bound where an attack stops early
or a search depends on what it found; and whitebox.masking reading what whitebox.fgsm made
(its repeated forward pass and its FGSM probe) without changing a metric."""
from __future__ import annotations

import pytest
import torch

import auditkit
from auditkit import AuditData, TensorSplit
from auditkit.testing.passes import PassCounter
from auditkit_whitebox import gradients

from whitebox_models import QuantizedInput, quadrant_images

FGSM, PGD, MASKING = "whitebox.fgsm", "whitebox.pgd", "whitebox.masking"
# no minimal-epsilon search: what is left is decided by the settings and the clean pass
NO_SEARCH = {"bisection_steps": 0, "min_eps_search_factor": 1.0, "examples": 0}


def _audit(model, data, checks, settings, batch_size=8):
    """Results by check id, and the passes each made."""
    with PassCounter(model) as counter:
        run = auditkit.audit(model, data, checks=checks, settings=settings, plugins=[counter], batch_size=batch_size)
    return {r.check: r for r in run.results}, counter


def _counted(counter, check):
    return {"forward": counter.forward[check], "gradient": counter.gradient[check]}


def _estimate(result) -> dict[str, int]:
    """The estimate's counts (without its ``maximum`` flag, asserted apart)."""
    return {k: v for k, v in result.details["estimated_cost"].items() if k != "maximum"}


def _is_maximum(result) -> bool:
    """Whether the estimate says its counts are the most the run may make."""
    return bool(result.details["estimated_cost"].get("maximum"))


@pytest.fixture(scope="module")
def mislabelled() -> AuditData:
    """20 quadrant images, the labels of 5 of them wrong: the quadrant CNN classifies 15
    correctly, in batches of 8 that mix attacked and unattacked images."""
    images, labels = quadrant_images(20, seed=4)
    wrong = torch.tensor([1, 6, 9, 10, 17])
    labels = labels.clone()
    labels[wrong] = (labels[wrong] + 1) % 4
    return AuditData("mislabelled", TensorSplit(images, labels), num_classes=4)


# -- whitebox.fgsm -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "gradient", "forward"),
    [
        ({"linf_eps": [8 / 255], "l2_eps": [], "targeted": []}, 1, 1),
        # two more Linf budgets and one L2; both targeted modes at each norm's largest budget
        # (a clean-point gradient per mode, then one forward per budget and mode)
        ({"linf_eps": [2 / 255, 4 / 255, 8 / 255], "l2_eps": [0.5], "targeted": ["random", "least_likely"]}, 3, 4 + 4),
    ],
    ids=["one_budget", "grid_and_targeted"],
)
def test_fgsm_estimate_is_its_passes_exactly_without_the_search(quadrant_cnn, mislabelled, settings, gradient, forward):
    results, counter = _audit(quadrant_cnn, mislabelled, [FGSM], {FGSM: {**settings, **NO_SEARCH}})
    result = results[FGSM]
    n = int(result.metrics["n_attacked"])
    assert n == 15
    estimate, counted = _estimate(result), _counted(counter, FGSM)
    assert estimate == {"forward": forward * n, "gradient": gradient * n}
    if "random" in settings["targeted"]:
        # two targeted modes may pick one class for an image: that gradient is computed once
        assert _is_maximum(result) and counted["forward"] == estimate["forward"]
        assert n + n <= counted["gradient"] <= estimate["gradient"]
    else:
        assert counted == estimate and not _is_maximum(result)  # no search, no restart: what it makes


def test_fgsm_estimate_bounds_the_search_and_reads_a_filled_store(quadrant_cnn, mislabelled):
    settings = {"linf_eps": [4 / 255, 8 / 255], "l2_eps": [], "targeted": [], "bisection_steps": 3, "examples": 0}
    results, counter = _audit(quadrant_cnn, mislabelled, [FGSM], {FGSM: settings})
    estimate, counted = _estimate(results[FGSM]), _counted(counter, FGSM)
    # the gradients exactly (every image's row is kept: the search computes none); the grid's
    # 2 x 15 forwards exactly, then at most 15 per round of the search: 32/255 is the cap
    # (two doublings of 8/255, each a round), then 3 bisection rounds: 5 x 15
    assert estimate == {"forward": 2 * 15 + 5 * 15, "gradient": 15} and _is_maximum(results[FGSM])
    assert counted["gradient"] == 15 and 2 * 15 < counted["forward"] <= estimate["forward"]
    # after whitebox.masking, every untargeted gradient is in the model's store: none to compute
    results, counter = _audit(quadrant_cnn, mislabelled, [MASKING, FGSM], {FGSM: settings})
    assert _estimate(results[FGSM]) == {"forward": 2 * 15 + 5 * 15, "gradient": 0}
    assert counter.gradient[FGSM] == 0


# -- whitebox.pgd ------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 5])
def test_pgd_estimate_is_its_passes_exactly_with_one_restart(quadrant_cnn, mislabelled, steps):
    settings = {"linf_eps": [8 / 255, 16 / 255], "l2_eps": [1.0], "targeted": ["least_likely"], "steps": steps,
                **NO_SEARCH}
    results, counter = _audit(quadrant_cnn, mislabelled, [PGD], {PGD: settings})
    n = 15
    runs = 2 + 1 + 2  # Linf budgets, the L2 budget, the targeted mode at each norm's largest budget
    expected = {"forward": runs * n, "gradient": runs * steps * n}
    assert _estimate(results[PGD]) == _counted(counter, PGD) == expected
    assert not _is_maximum(results[PGD])


def test_pgd_estimate_counts_every_restart_and_search_round_a_robust_model_needs(quadrant_cnn, mislabelled):
    """Input quantization leaves PGD no gradient: no restart and no probe budget fools an image,
    so every restart attacks every image and so does every doubling of the search, and the
    most the estimate counts is what happens."""
    settings = {"linf_eps": [8 / 255], "l2_eps": [], "targeted": [], "steps": 2, "restarts": 3,
                "bisection_steps": 0, "min_eps_search_factor": 4.0, "examples": 0}
    results, counter = _audit(QuantizedInput(quadrant_cnn), mislabelled, [PGD], {PGD: settings})
    n = int(results[PGD].metrics["n_attacked"])
    # 3 restarts of 2 steps and a scoring pass; then two doublings (16/255, 32/255) of the
    # deterministic attack, 2 steps and a scoring pass each, whose first step reads the clean
    # point's gradient, computed once per image
    expected = {"forward": (3 + 2) * n, "gradient": (3 * 2 + 1 + 2 * (2 - 1)) * n}
    assert _estimate(results[PGD]) == _counted(counter, PGD) == expected


def test_pgd_estimate_bounds_restarts_that_stop_early(quadrant_cnn, mislabelled):
    settings = {"linf_eps": [48 / 255], "l2_eps": [], "targeted": [], "steps": 3, "restarts": 3, **NO_SEARCH}
    results, counter = _audit(quadrant_cnn, mislabelled, [PGD], {PGD: settings})
    estimate, counted = _estimate(results[PGD]), _counted(counter, PGD)
    assert estimate == {"forward": 3 * 15, "gradient": 3 * 3 * 15} and _is_maximum(results[PGD])
    # the first restart attacks all 15; the later ones only the images it left
    assert 15 <= counted["forward"] < estimate["forward"] and counted["gradient"] == 3 * counted["forward"]


# -- whitebox.masking --------------------------------------------------------------------------

SMALL_MASKING = {"steps": 2, "restarts": 2, "unbounded_steps": 7, "strong_steps_factor": 2, "strong_restarts": 2}


def test_masking_estimate_is_exact_when_nothing_is_fooled_alone_and_after_fgsm(quadrant_cnn, mislabelled):
    """On a model no attack fools (quantized input: zero gradients everywhere), every probe
    runs to its most: each zero gradient is confirmed, every restart and stage attacks every
    image, and the stronger PGD attacks them all again. Run after whitebox.fgsm, the check
    reads fgsm's gradients and its FGSM outcome at 8/255 instead."""
    model = QuantizedInput(quadrant_cnn)
    settings = {MASKING: SMALL_MASKING, FGSM: {"linf_eps": [8 / 255], "l2_eps": [], "targeted": [], **NO_SEARCH}}
    alone, counter = _audit(model, mislabelled, [MASKING], settings)
    n, k = 20, int(alone[MASKING].metrics["n_correct"])
    assert k == 15 and alone[MASKING].metrics["zero_grad_share"] == 1.0 and alone[MASKING].metrics["unbounded_acc"] == 0.75
    # forward: the repeated pass of the 5 unattacked images, FGSM, 3 rungs x 2 restarts, 5
    # stages, 2 strong restarts; gradient: the clean-point gradient and its confirmation, 3 x 2
    # x 2 steps, the 7 stage steps less the first, 2 x 4 strong steps
    expected = {"forward": (n - k) + (1 + 6 + 5 + 2) * k, "gradient": (2 + 12 + 6 + 8) * k}
    assert _estimate(alone[MASKING]) == _counted(counter, MASKING) == expected
    assert _is_maximum(alone[MASKING])  # reached here: nothing is fooled

    after, counter = _audit(model, mislabelled, [FGSM, MASKING], settings)
    shared = {"forward": expected["forward"] - k, "gradient": expected["gradient"] - k}
    assert _estimate(after[MASKING]) == _counted(counter, MASKING) == shared
    assert after[MASKING].metrics == alone[MASKING].metrics


def test_masking_estimate_bounds_an_ordinary_models_passes(quadrant_cnn, mislabelled):
    results, counter = _audit(quadrant_cnn, mislabelled, [MASKING], {MASKING: SMALL_MASKING})
    estimate, counted = _estimate(results[MASKING]), _counted(counter, MASKING)
    assert counted["forward"] <= estimate["forward"] and counted["gradient"] <= estimate["gradient"]
    # what stops early here: no gradient is zero (15 confirmations not needed), images fooled
    # by a restart or stage are not attacked again, and few survive for the stronger PGD
    assert results[MASKING].metrics["zero_grad_share"] == 0.0
    assert counted["gradient"] <= estimate["gradient"] - 15
    # after whitebox.fgsm its kept gradients say none is zero: 15 shared gradients and 15
    # confirmations fewer, and fgsm's outcome at 8/255 saves the 15 FGSM forwards
    results, counter = _audit(quadrant_cnn, mislabelled, [FGSM, MASKING], {MASKING: SMALL_MASKING})
    after = _estimate(results[MASKING])
    assert after == {"forward": estimate["forward"] - 15, "gradient": estimate["gradient"] - 2 * 15}
    assert counter.forward[MASKING] <= after["forward"] and counter.gradient[MASKING] <= after["gradient"]


def test_masking_reads_fgsms_passes_and_changes_no_metric(quadrant_cnn, mislabelled, monkeypatch):
    """With reuse, whitebox.masking after whitebox.fgsm makes neither the repeated forward pass
    of the images fgsm attacked (the pass that gave their gradients is one) nor its FGSM probe
    (fgsm made that step): 15 + 15 forwards fewer, the same metrics, message and flags as
    every probe run afresh (gradients.REUSE off)."""
    settings = {
        MASKING: {**SMALL_MASKING, "eps": 24 / 255},
        FGSM: {"linf_eps": [8 / 255, 24 / 255], "l2_eps": [0.5], **NO_SEARCH},
    }
    shared, counter = _audit(quadrant_cnn, mislabelled, [FGSM, MASKING], settings)
    monkeypatch.setattr(gradients, "REUSE", False)
    fresh, before = _audit(quadrant_cnn, mislabelled, [FGSM, MASKING], settings)
    for check in (FGSM, MASKING):
        a, b = shared[check], fresh[check]
        assert (a.outcome, a.metrics, a.message) == (b.outcome, b.metrics, b.message), check
    assert 0 < shared[MASKING].metrics["fgsm_acc@linf_24/255"] < 0.75  # the shared outcome fooled some
    # fresh: the repeated pass of all 20 images and torchattacks' FGSM (a gradient and a
    # forward); shared: the 5 unattacked images' repeat only
    assert before.forward[MASKING] - counter.forward[MASKING] == 15 + 15
    assert _estimate(fresh[MASKING])["forward"] - _estimate(shared[MASKING])["forward"] == 30


def test_randomized_outputs_are_found_through_the_gradient_pass(quadrant_cnn, mislabelled):
    from whitebox_models import NoisyLogits

    result = _audit(NoisyLogits(quadrant_cnn), mislabelled, [FGSM, MASKING], {MASKING: SMALL_MASKING})[0][MASKING]
    assert result.metrics["randomized_share"] == 1.0 and result.metrics["randomized_outputs"] == 1.0
