"""The inversion engine: known answers on hand-set layers, the batching strategies agree with
sequential inversion, and the model is left exactly as found."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditkit import Target
from auditkit_inversion.fidelity import psnr, ssim
from auditkit_inversion.inversion import LayerTaps, Objective, batching_is_exact, invert, stack_layer_major

OBJECTIVE = Objective(lambda_tv=0.1, beta=2.0, lambda_alpha=0.1, alpha=6.0)


def start_for(n_layers: int, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    noise = torch.randn((n_layers, *images.shape), generator=torch.Generator().manual_seed(seed))
    return (0.5 + 0.1 * noise).clamp(0, 1)


def entered(model: nn.Module, images: torch.Tensor) -> Target:
    target = Target(model)
    target.__enter__()
    target.probe(images[:1])
    return target


def test_identity_layer_reconstructs_almost_perfectly_and_heavy_pooling_does_not(identity_then_pool, shapes16):
    x0 = shapes16.eval.images[:2]
    target = entered(identity_then_pool, x0)
    try:
        inv = invert(target, x0, ["conv", "pool"], start_for(2, x0), OBJECTIVE, steps=100, lr=0.05)
    finally:
        target.restore()
    identity_db, pooled_db = psnr(inv.images[0], x0), psnr(inv.images[1], x0)
    assert (identity_db > 30).all(), identity_db  # the known answer
    assert inv.feature_rel_err[0].max() < 0.05
    # 8x8 average pooling keeps a 2x2 thumbnail: the best any inversion can do is about what
    # upsampling that thumbnail gives, far below the identity layer
    thumbnail = F.interpolate(F.avg_pool2d(x0, 8), scale_factor=8, mode="bilinear", align_corners=False)
    assert (pooled_db < identity_db - 10).all()
    assert pooled_db.mean().item() == pytest.approx(psnr(thumbnail, x0).mean().item(), abs=3.0)
    assert (ssim(inv.images[1], x0) < ssim(inv.images[0], x0) - 0.3).all()


@pytest.mark.parametrize("strategy", ["drop", "stacked"])
def test_batched_layers_give_the_sequential_result(staged_net, shapes16, strategy):
    x0 = shapes16.eval.images[:2]
    layers = ["features.1", "features.3", "features.5", "pool"]
    start = start_for(len(layers), x0)
    target = entered(staged_net, x0)
    try:
        sequential = invert(target, x0, layers, start, OBJECTIVE, steps=25, lr=0.05, strategy="sequential")
        batched = invert(target, x0, layers, start, OBJECTIVE, steps=25, lr=0.05, strategy=strategy)
    finally:
        target.restore()
    assert batched.strategy == strategy and sequential.strategy == "sequential"
    assert torch.allclose(batched.images, sequential.images, atol=1e-4)
    assert torch.allclose(batched.feature_rel_err, sequential.feature_rel_err, atol=1e-4)
    assert torch.allclose(batched.start_rel_err, sequential.start_rel_err, atol=1e-5)


def test_auto_drops_copies_where_that_is_exact(staged_net, shapes16):
    x0 = shapes16.eval.images[:2]
    target = entered(staged_net, x0)
    try:
        inv = invert(target, x0, ["features.1", "pool"], start_for(2, x0), OBJECTIVE, steps=2, lr=0.05)
    finally:
        target.restore()
    assert inv.strategy == "drop" and inv.note == ""


def test_auto_falls_back_to_sequential_around_a_skip_connection(residual_net, shapes16):
    x0 = shapes16.eval.images[:2]
    layers = ["block.conv", "block"]  # the block adds its input to block.conv's output
    start = start_for(2, x0)
    target = entered(residual_net, x0)
    try:
        assert "dropping rows after each layer breaks the forward" in batching_is_exact(target, layers, start, "drop")
        assert batching_is_exact(target, layers, start, "stacked") is None  # every copy runs the whole block
        auto = invert(target, x0, layers, start, OBJECTIVE, steps=10, lr=0.05)
        sequential = invert(target, x0, layers, start, OBJECTIVE, steps=10, lr=0.05, strategy="sequential")
        with pytest.raises(ValueError, match=r"strategy 'drop' cannot invert \['block.conv', 'block'\] exactly"):
            invert(target, x0, layers, start, OBJECTIVE, steps=1, lr=0.05, strategy="drop")
    finally:
        target.restore()
    assert auto.strategy == "sequential" and "breaks the forward" in auto.note
    assert torch.equal(auto.images, sequential.images)


def test_batching_is_refused_when_batch_rows_interact():
    class CentreOverBatch(nn.Module):
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    model = nn.Sequential(CentreOverBatch(), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    inputs = torch.rand(2, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = Target(model)
    with target:
        reason = batching_is_exact(target, ["1", "2"], inputs, "drop")
    # the copies for layer 1 and layer 2 would be centred together: not what either sees alone
    assert reason == "batched, 1's output differs from running its copies alone"


def test_the_model_is_left_as_found(staged_net, shapes16):
    x0 = shapes16.eval.images[:2]
    staged_net.fc.weight.requires_grad_(False)  # a user's frozen layer stays frozen
    state = {k: v.clone() for k, v in staged_net.state_dict().items()}
    flags = {n: p.requires_grad for n, p in staged_net.named_parameters()}
    target = entered(staged_net, x0)
    try:
        invert(target, x0, ["features.1", "features.5"], start_for(2, x0), OBJECTIVE, steps=3, lr=0.05)
    finally:
        target.restore()
    assert all(p.grad is None for p in staged_net.parameters())
    assert {n: p.requires_grad for n, p in staged_net.named_parameters()} == flags
    assert all(torch.equal(v, staged_net.state_dict()[k]) for k, v in state.items())
    assert all(not m._forward_hooks for m in staged_net.modules())


def test_the_forward_stops_at_the_deepest_layer(staged_net, shapes16):
    x0 = shapes16.eval.images[:2]
    ran = []
    handle = staged_net.fc.register_forward_pre_hook(lambda *a: ran.append("fc"))
    target = Target(staged_net)
    try:
        with target, LayerTaps(target, ["features.1", "features.3"], 2, "drop") as taps:
            f1, f3 = taps(stack_layer_major([x0, x0]))
    finally:
        handle.remove()
    assert ran == []  # nothing after features.3 ran
    assert torch.allclose(f1, staged_net.features[:2](x0)) and torch.allclose(f3, staged_net.features[:4](x0))
    assert all(not m._forward_hooks for m in staged_net.modules())


def test_a_layer_without_the_batch_first_is_rejected_and_its_hook_removed():
    class BatchSecond(nn.Module):
        def forward(self, x):
            return x.transpose(0, 1)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), BatchSecond())
    target = Target(model)
    with target, LayerTaps(target, ["1"], 2, "shared") as taps:
        with pytest.raises(ValueError, match=r"layer '1' output has shape \[4, 2, 8, 8\] for a batch of 2 images; expected the batch"):
            taps(torch.rand(2, 3, 8, 8))
    assert all(not m._forward_hooks for m in model.modules())
