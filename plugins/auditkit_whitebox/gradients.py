"""Clean-point input gradients computed once and reused: FGSM at any budget and norm is one step
along the gradient at the clean image, so ``whitebox.fgsm`` (every budget, norm and bisection
step) and ``whitebox.masking`` (its zero-gradient probe, its FGSM and the unbounded attack's
first step) read one gradient per image and loss target instead of asking torchattacks again."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from auditkit.toolkit import AuditContext, LogitsModule, oom_backoff

# Reuse of work across attacks: clean-point gradients shared across FGSM runs and checks, and
# the minimal-epsilon search confined to the images that can move the median. False runs
# every attack through torchattacks from scratch and bisects every image, as before; the
# benchmark (benchmarks/bench_whitebox_sharing.py) and the equality tests switch it off.
REUSE = True

# The shared store keeps the untargeted gradients of the attacked images while their total
# size stays under this (float32 at 224x224: 3*224*224*4 bytes = 0.6 MB an image, so about
# 1,700 images; at 32x32, 12 KB an image). Rows past it are not kept: whoever asks for them
# again computes them again, per batch, as every attack did before the store existed.
STORE_BYTES = 1 << 30


def clean_gradient(module: LogitsModule, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool = False) -> torch.Tensor:
    """The input gradient [B,3,H,W] that torchattacks' FGSM (and the first step of PGD from
    the clean image) takes on this batch: of the batch-mean cross-entropy towards ``goal``,
    maximized (untargeted: ``goal`` are the true classes) or minimized (``targeted``: the target
    classes; the gradient of ``-CE``). Computed exactly as torchattacks computes it (same
    module call, loss and reduction), so a step along it is bit-identical to torchattacks'.

    The mean makes each image's gradient 1/B of its own loss's gradient: that scale changes no
    sign and no direction, but it does depend on the batch, so rows are kept with the batch
    they were computed in (:class:`CleanGradients`).
    """
    x = images.contiguous().clone().detach()
    x.requires_grad = True
    loss = nn.CrossEntropyLoss()(module(x), goal.clone().detach())
    cost = -loss if targeted else loss
    (grad,) = torch.autograd.grad(cost, x, retain_graph=False, create_graph=False)
    return grad.detach()


def fgsm_step(images: torch.Tensor, gradient: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """FGSM from a precomputed clean-point gradient (:func:`clean_gradient`): ``x + eps *
    sign(g)`` for Linf, ``x + eps * g / ||g||`` for L2, clamped to [0,1]; ``eps`` one budget
    or a tensor [B] of per-image budgets. One forward pass scores the result; no backward.

    Bit-identical to ``auditkit.toolkit.craft(model, images, labels, "fgsm", norm, eps)`` given
    the same gradient (tests/plugins/whitebox/test_whitebox_gradients.py): the L2 step repeats
    torchattacks' PGD-L2 arithmetic, the ``1e-10`` added to the gradient norm and the projection
    onto the ball, which is idle (the step has length eps at most) but rounds.
    """
    x = images.contiguous()
    per_image = isinstance(eps, torch.Tensor)
    eps_img = eps.reshape(-1, 1, 1, 1) if per_image else eps
    if norm == "linf":
        return torch.clamp(x + eps_img * gradient.sign(), min=0, max=1)
    n = x.shape[0]
    unit = gradient / (torch.norm(gradient.reshape(n, -1), p=2, dim=1) + 1e-10).view(n, 1, 1, 1)
    delta = (x + eps_img * unit) - x
    lengths = torch.norm(delta.reshape(n, -1), p=2, dim=1)
    factor = torch.min(eps / lengths, torch.ones_like(lengths))
    return torch.clamp(x + delta * factor.view(-1, 1, 1, 1), min=0, max=1)


def pgd_linf_first_step(images: torch.Tensor, gradient: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """The first step of torchattacks' Linf PGD from the clean image (no random start), from
    its clean-point gradient: ``clamp(x + clamp(alpha * sign(g), -eps, eps), 0, 1)``, in
    torchattacks' arithmetic."""
    x = images.contiguous()
    delta = torch.clamp((x + alpha * gradient.sign()) - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1)


class CleanGradients:
    """Untargeted clean-point input gradients of the attacked evaluation images, one row per
    image (its position in the eval split), on the device, with the class each was taken
    towards.

    One per model in its shared store (:func:`shared_clean_gradients`), filled by whichever of
    ``whitebox.fgsm`` and ``whitebox.masking`` reaches a batch first and read by the other: both
    attack the correctly classified images of the same evaluation batches, so each row comes
    out of the batch that check would have used alone, and a step along it is what torchattacks
    would have taken there. A filled row never changes. Memory: 4 bytes a pixel and channel
    (0.6 MB an image at 224x224), up to :data:`STORE_BYTES`.
    """

    def __init__(self, capacity_bytes: int):
        self._rows: dict[int, tuple[int, torch.Tensor]] = {}  # eval position -> (class, gradient [3,H,W])
        self._free = capacity_bytes

    def rows(self, index: torch.Tensor, goal: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The gradients [B,3,H,W] of the images at eval positions ``index`` (long [B]) towards
        classes ``goal`` (long [B]). ``compute()`` returns the gradients of all B images; it is
        called only when some row is missing (or was kept towards another class), and computes
        the whole batch, so that a new row is the one its batch gives. Kept rows win over
        recomputed ones: every reader sees the same gradient."""
        keys, classes = index.tolist(), goal.tolist()
        kept = [row if row is not None and row[0] == c else None for row, c in
                ((self._rows.get(k), c) for k, c in zip(keys, classes))]
        if all(row is not None for row in kept):
            return torch.stack([row[1] for row in kept])  # type: ignore[index]
        fresh = compute()
        size = fresh[0].numel() * fresh.element_size() if len(fresh) else 0
        for i, (k, c, row) in enumerate(zip(keys, classes, kept)):
            if row is not None:
                fresh[i] = row[1]
            elif k not in self._rows and size <= self._free:
                self._rows[k] = (c, fresh[i].clone())  # a copy: a view would hold the whole batch
                self._free -= size
        return fresh


def shared_clean_gradients(ctx: AuditContext) -> CleanGradients:
    """This model's :class:`CleanGradients`, shared by the white-box checks."""
    # the batch size is in the key: it sets the 1/B scale of every row (clean_gradient)
    key = ("whitebox.clean_gradients", ctx.n_images, ctx.batch_size)
    return ctx.shared(key, lambda: CleanGradients(STORE_BYTES))


def untargeted_gradients(
    ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The untargeted clean-point gradients [B,3,H,W] of evaluation images ``images`` (at eval
    positions ``index``, true classes ``labels``), from the model's shared store."""

    def compute() -> torch.Tensor:
        return oom_backoff(lambda x, y: clean_gradient(module, x, y), images, labels)

    return shared_clean_gradients(ctx).rows(index, labels, compute)


def zero_gradient_rows(gradient: torch.Tensor) -> torch.Tensor:
    """Which rows of a gradient [B,...] are exactly zero (bool [B])."""
    return gradient.flatten(1).abs().amax(1) == 0


def clean_gradients_for(
    ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
    targets: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Every clean-point gradient FGSM needs on one batch: ``"untargeted"`` from the shared
    store, and one per targeted mode in ``targets`` (mode -> target classes [B]), computed here
    (only ``whitebox.fgsm`` asks for them, and only within the batch). Empty when
    :data:`REUSE` is off."""
    if not REUSE:
        return {}
    found = {"untargeted": untargeted_gradients(ctx, module, index, images, labels)}
    for mode, goal in targets.items():
        found[mode] = oom_backoff(lambda x, t: clean_gradient(module, x, t, targeted=True), images, goal)
    return found
