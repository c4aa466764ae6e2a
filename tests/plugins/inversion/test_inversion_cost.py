"""What inversion.fidelity costs: its estimate equals the image passes it makes (counted at the
model's stem), whichever strategy runs, and the random starts' features are read once: the
batching check's forwards give the starts' errors, the same numbers a fresh forward gives."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import auditkit
from auditkit import Outcome, Target
from auditkit.testing.passes import PassCounter
from auditkit_inversion.inversion import LayerTaps, Objective, compare_batching, feature_rel_err_sq, invert

CHECK = "inversion.fidelity"
OBJECTIVE = Objective(lambda_tv=0.1, beta=2.0, lambda_alpha=0.1, alpha=6.0)


def counted(model, data, batch_size=64, **settings):
    with PassCounter(model) as counter:
        run = auditkit.audit(
            model, data, baselines=[], checks=[CHECK], settings={CHECK: settings}, plugins=[counter],
            device="cpu", seed=0, batch_size=batch_size, verbose=-1,
        )
    return run[CHECK], counter.forward[CHECK], counter.gradient[CHECK]


@pytest.mark.parametrize(
    "model, settings, batch_size, checked",
    [
        # auto picks drop: per image 1 reference, 2L for the batching check, L final errors
        ("staged_net", {"steps": 3, "max_images": 2}, 64, True),
        ("staged_net", {"steps": 4, "max_images": 3, "strategy": "stacked"}, 64, True),
        # 4 images, one copy per layer each, batches of one image (batch_size 4 < 5 layers)
        ("staged_net", {"steps": 2, "max_images": 4}, 4, True),
        # no batching check: 1 reference, L starts' errors, L final errors
        ("staged_net", {"steps": 4, "max_images": 3, "strategy": "sequential"}, 64, False),
        ("staged_net", {"steps": 5, "max_images": 2, "layers": ["pool"], "anchor": False}, 64, False),
        # auto falls back to sequential around the skip connection; the check's forwards still serve
        ("residual_net", {"steps": 3, "max_images": 2, "layers": ["block.conv", "block"]}, 64, True),
    ],
    ids=["auto-drop", "stacked", "one-image-batches", "sequential", "one-layer", "auto-fallback"],
)
def test_the_estimate_is_the_passes_the_check_makes(request, shapes16, model, settings, batch_size, checked):
    result, forward, gradient = counted(request.getfixturevalue(model), shapes16, batch_size=batch_size, **settings)
    assert result.outcome in (Outcome.PASSED, Outcome.FAILED), result.message
    n, n_layers = int(result.metrics["n_images"]), len(result.details["layers"])
    assert result.details["estimated_cost"] == {"forward": forward, "gradient": gradient}
    assert forward == n * (1 + (3 if checked else 2) * n_layers)
    assert gradient == n * n_layers * settings["steps"]
    if model == "residual_net":
        assert result.details["strategy"] == "sequential" and "breaks the forward" in result.details["strategy_note"]


def test_a_configured_strategy_that_is_not_exact_makes_fewer_passes_than_estimated(residual_net, shapes16):
    result, forward, gradient = counted(
        residual_net, shapes16, steps=3, max_images=2, layers=["block.conv", "block"], strategy="drop"
    )
    assert result.outcome is Outcome.ERROR and "cannot invert" in result.message
    n, n_layers = 2, 3  # the anchor (stem), block.conv, block
    assert result.details["estimated_cost"] == {"forward": n * (1 + 3 * n_layers), "gradient": n * n_layers * 3}
    # the bound: the reference and the batching check ran, then the check raised
    assert (forward, gradient) == (n * (1 + 2 * n_layers), 0)


def test_a_skipped_check_is_estimated_at_no_passes(shapes16):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    result, forward, gradient = counted(model, shapes16)
    assert result.outcome is Outcome.SKIPPED
    assert result.details["estimated_cost"] == {"forward": 0, "gradient": 0} and forward == gradient == 0


def _start(n_layers: int, images: torch.Tensor) -> torch.Tensor:
    noise = torch.randn((n_layers, *images.shape), generator=torch.Generator().manual_seed(0))
    return (0.5 + 0.1 * noise).clamp(0, 1)


def _fresh_start_rel_err(target, x0, layers, start, strategy) -> torch.Tensor:
    """The starts' errors [L,B] as a forward of their own computes them (what invert ran before
    it read them from the batching check): the taps, batch and mode the optimization uses."""
    n_layers, b = start.shape[:2]
    with torch.no_grad():
        with LayerTaps(target, layers, b, "shared") as taps:
            reference = taps(x0)
        if strategy == "sequential":
            features = []
            for i, name in enumerate(layers):
                with LayerTaps(target, [name], b, "stacked") as taps:
                    features.append(taps(start[i].clone())[0])
        else:
            with LayerTaps(target, layers, b, strategy) as taps:
                features = taps(start.reshape(n_layers * b, *start.shape[2:]).clone())
        return torch.stack([feature_rel_err_sq(f, r) for f, r in zip(features, reference)]).sqrt()


@pytest.mark.parametrize(
    "model, layers, strategy, ran",
    [
        ("staged_net", ["features.1", "features.3", "features.5", "pool"], "auto", "drop"),
        ("staged_net", ["features.1", "features.3", "features.5", "pool"], "stacked", "stacked"),
        ("staged_net", ["features.1", "features.3", "features.5", "pool"], "sequential", "sequential"),
        ("residual_net", ["block.conv", "block"], "auto", "sequential"),
    ],
    ids=["auto-drop", "stacked", "sequential", "auto-fallback"],
)
def test_the_starts_errors_are_bit_for_bit_those_of_a_forward_of_their_own(request, shapes16, model, layers, strategy, ran):
    x0 = shapes16.eval.images[:2]
    start = _start(len(layers), x0)
    target = Target(request.getfixturevalue(model))
    with target:
        target.probe(x0[:1])
        inv = invert(target, x0, layers, start, OBJECTIVE, steps=2, lr=0.05, strategy=strategy)
        fresh = _fresh_start_rel_err(target, x0, layers, start, ran)
    assert inv.strategy == ran
    assert torch.equal(inv.start_rel_err, fresh)


def test_the_batching_check_keeps_both_readings(staged_net, shapes16):
    x0 = shapes16.eval.images[:2]
    layers = ["features.1", "pool"]
    start = _start(2, x0)
    with Target(staged_net) as target:
        comparison = compare_batching(target, layers, start, "drop")
        with torch.no_grad(), LayerTaps(target, ["pool"], 2, "shared") as taps:
            pool_alone = taps(start[1])[0]
    assert comparison.reason is None
    assert [f.shape for f in comparison.alone] == [f.shape for f in comparison.batched] == [(2, 6, 16, 16), (2, 6, 1, 1)]
    assert torch.equal(comparison.alone[1], pool_alone)
    assert torch.allclose(comparison.batched[1], pool_alone, rtol=0, atol=1e-6)
