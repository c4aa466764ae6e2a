"""Clean-point input gradients computed once and reused: FGSM at any budget and norm is one step
along the gradient at the clean image, so ``whitebox.fgsm`` (every budget, norm and bisection
step), ``whitebox.pgd`` (the first step of every attack from the clean image: its
minimal-epsilon search) and ``whitebox.masking`` (its zero-gradient probe, its FGSM and the
unbounded attack's first step) read one gradient per image and loss target instead of asking
torchattacks again.
The logits of the pass that gave each gradient, and which images ``whitebox.fgsm``'s untargeted
steps fooled, are kept beside them for ``whitebox.masking`` (its repeated forward pass and its
FGSM probe)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from auditkit.toolkit import (
    AuditContext,
    CleanPoint,
    ImageRows,
    LogitsModule,
    clean_gradient,
    clean_gradient_and_logits,
    oom_backoff,
)

# Reuse of work across attacks: clean-point gradients shared across FGSM runs and checks (with
# the logits of their pass and whitebox.fgsm's outcomes, which whitebox.masking reads), and
# the minimal-epsilon search confined to the images that can move the median. False runs
# every attack and probe through torchattacks from scratch and bisects every image, as
# before; the benchmark (benchmarks/bench_whitebox_sharing.py) and the equality tests switch
# it off.
REUSE = True

# The shared store keeps the untargeted gradients of the attacked images while their total
# size stays under this (float32 at 224x224: 3*224*224*4 bytes = 0.6 MB an image, so about
# 1,700 images; at 32x32, 12 KB an image), in memory up to the records' limit and beyond it
# in a temporary file (auditkit.records). Rows past it are not kept: whoever asks for them
# again computes them again, per batch, as every attack did before the store existed.
STORE_BYTES = 1 << 30


def pgd_linf_first_step(images: torch.Tensor, gradient: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """The first step of torchattacks' Linf PGD from the clean image (no random start), from
    its clean-point gradient: ``clamp(x + clamp(alpha * sign(g), -eps, eps), 0, 1)``, in
    torchattacks' arithmetic."""
    x = images.contiguous()
    delta = torch.clamp((x + alpha * gradient.sign()) - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1)


class CleanGradients:
    """Untargeted clean-point input gradients of the attacked evaluation images, one row per
    image (its position in the eval split), with the class each was taken towards and the
    logits of the forward pass that gave it.

    One per model in its shared store (:func:`shared_clean_gradients`), filled by whichever of
    ``whitebox.fgsm`` and ``whitebox.masking`` reaches a batch first and read by the other: both
    attack the correctly classified images of the same evaluation batches, so each row comes
    out of the batch that check would have used alone, and a step along it is what torchattacks
    would have taken there. A filled row never changes. Size: 4 bytes a pixel and channel
    (0.6 MB an image at 224x224) and a logit, rows kept up to :data:`STORE_BYTES` in all; the
    rows are per-image records (:class:`~auditkit.toolkit.ImageRows`), in memory up to their
    limit (64 MiB, ``AUDITKIT_RECORDS_IN_MEMORY``) and beyond it in a temporary file.

    :param capacity_bytes: the bytes of rows kept at most; rows past it are computed again.
    :param n_images: evaluation images (rows).
    :param device: where the rows are read back.
    """

    def __init__(self, capacity_bytes: int, n_images: int, device: torch.device):
        self._gradients = ImageRows(n_images, device)  # [n_images, 3, H, W]
        self._logits = ImageRows(n_images, device)  # [n_images, K]
        # per eval position: the class its kept row was taken towards (-1: none kept), and the
        # size of the batch whose mean loss gave it (the 1/B scale)
        self._goal = torch.full((n_images,), -1, dtype=torch.long)
        self._batch = torch.zeros(n_images, dtype=torch.long)
        self._free = capacity_bytes

    def _kept(self, index: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """bool [B]: which rows of eval positions ``index`` are kept towards ``goal``."""
        return self._goal[index.cpu()] == goal.cpu()

    def kept(self, index: torch.Tensor, goal: torch.Tensor) -> bool:
        """Whether the rows of eval positions ``index`` (long [B]) towards classes ``goal`` (long
        [B]) are all kept: :meth:`rows` then computes nothing."""
        return bool(self._kept(index, goal).all())

    def rows(
        self, index: torch.Tensor, goal: torch.Tensor, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradients [B,3,H,W] of the images at eval positions ``index`` (long [B]) towards
        classes ``goal`` (long [B]), and the logits [B,K] of the pass each came from.
        ``compute()`` returns both for all B images; it is called only when some row is missing
        (or was kept towards another class), and computes the whole batch, so that a new row is
        the one its batch gives. Kept rows win over recomputed ones: every reader sees the same
        gradient."""
        keys, classes = index.cpu(), goal.cpu()
        have = self._goal[keys] == classes
        if bool(have.all()) and len(keys):
            return self._gradients.read(keys), self._logits.read(keys)
        fresh, logits = compute()
        if bool(have.any()):
            known = have.nonzero().view(-1)
            fresh[known.to(fresh.device)] = self._gradients.read(keys[known]).to(fresh.device)
            logits[known.to(logits.device)] = self._logits.read(keys[known]).to(logits.device)
        size = fresh[0].numel() * fresh.element_size() + logits[0].numel() * logits.element_size() if len(fresh) else 0
        new = (self._goal[keys] == -1).nonzero().view(-1)  # a row kept towards another class stays
        if size:
            new = new[: max(0, self._free // size)]
        if len(new):
            self._gradients.write(keys[new], fresh[new.to(fresh.device)])
            self._logits.write(keys[new], logits[new.to(logits.device)])
            self._goal[keys[new]] = classes[new]
            self._batch[keys[new]] = len(fresh)
            self._free -= size * len(new)
        return fresh, logits

    def clean_point(
        self, index: torch.Tensor, goal: torch.Tensor, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> CleanPoint:
        """:meth:`rows` as the :class:`~auditkit.toolkit.CleanPoint` a PGD run from the clean
        images reads for its first step, with the size of the batch each row came from (kept
        rows: their own batch; rows computed now and not kept: this one)."""
        gradient, logits = self.rows(index, goal, compute)
        kept = self._kept(index, goal)
        sizes = torch.where(kept, self._batch[index.cpu()], torch.full_like(kept, len(gradient), dtype=torch.long))
        return CleanPoint(logits, gradient, sizes.to(gradient.device))


class FGSMOutcomes:
    """Which attacked evaluation images ``whitebox.fgsm``'s untargeted step along the shared
    clean-point gradient fooled, per (norm, budget), by eval position: ``whitebox.masking``'s
    FGSM probe at its reference budget is the same step on the same batch (the correctly
    classified images of one evaluation batch, the same kept gradients), scored by the same
    forward pass, so it reads the outcome instead of making it again. One per model in its
    shared store (:func:`shared_fgsm_outcomes`); a kept outcome never changes."""

    def __init__(self, n_images: int) -> None:
        self._n_images = n_images
        # per (norm, budget): int8 [n_images] by eval position, 1 fooled, 0 not, -1 not kept
        self._fooled: dict[tuple[str, float], torch.Tensor] = {}

    def keep(self, norm: str, eps: float, index: torch.Tensor, success: torch.Tensor) -> None:
        """Record ``success`` (bool [B]) of the step at ``eps`` under ``norm`` on the images at
        eval positions ``index`` (long [B]); an outcome kept already stays."""
        key = (norm, float(eps))
        if key not in self._fooled:
            self._fooled[key] = torch.full((self._n_images,), -1, dtype=torch.int8)
        fooled, positions = self._fooled[key], index.cpu()
        new = fooled[positions] == -1
        fooled[positions[new]] = success.cpu()[new].to(torch.int8)

    def success(self, norm: str, eps: float, index: torch.Tensor) -> torch.Tensor | None:
        """The kept outcomes (bool [B], on ``index``'s device) of the images at eval positions
        ``index``, or None when some of them has none."""
        fooled = self._fooled.get((norm, float(eps)))
        if fooled is None:
            return None
        found = fooled[index.cpu()]
        if bool((found == -1).any()):
            return None
        return (found == 1).to(index.device)


def shared_clean_gradients(ctx: AuditContext) -> CleanGradients:
    """This model's :class:`CleanGradients`, shared by the white-box checks."""
    return ctx.shared(clean_gradients_key(ctx), lambda: CleanGradients(STORE_BYTES, ctx.n_images, ctx.device))


def clean_gradients_key(ctx: AuditContext) -> tuple[str, int, int]:
    """The ``ctx.shared`` key of the model's :class:`CleanGradients`."""
    # the batch size is in the key: it sets the 1/B scale of every row (clean_gradient)
    return ("whitebox.clean_gradients", ctx.n_images, ctx.batch_size)


def shared_fgsm_outcomes(ctx: AuditContext) -> FGSMOutcomes:
    """This model's :class:`FGSMOutcomes`, written by ``whitebox.fgsm``, read by ``whitebox.masking``."""
    return ctx.shared(fgsm_outcomes_key(ctx), lambda: FGSMOutcomes(ctx.n_images))


def fgsm_outcomes_key(ctx: AuditContext) -> tuple[str, int, int]:
    """The ``ctx.shared`` key of the model's :class:`FGSMOutcomes` (the batches, as for the gradients)."""
    return ("whitebox.fgsm_outcomes", ctx.n_images, ctx.batch_size)


def untargeted_gradients(
    ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The untargeted clean-point gradients [B,3,H,W] of evaluation images ``images`` (at eval
    positions ``index``, true classes ``labels``) and the logits [B,K] of the pass each came
    from, from the model's shared store."""

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        return oom_backoff(lambda x, y: clean_gradient_and_logits(module, x, y), images, labels)

    return shared_clean_gradients(ctx).rows(index, labels, compute)


def untargeted_clean_point(
    ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor, labels: torch.Tensor
) -> CleanPoint:
    """:func:`untargeted_gradients` as a :class:`~auditkit.toolkit.CleanPoint`, for PGD from
    the clean images (its first step reads the shared gradient instead of computing it)."""

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        return oom_backoff(lambda x, y: clean_gradient_and_logits(module, x, y), images, labels)

    return shared_clean_gradients(ctx).clean_point(index, labels, compute)


def untargeted_gradients_kept(ctx: AuditContext, index: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether the model's shared store already holds the untargeted gradients of the images at
    eval positions ``index`` (true classes ``labels``): asking for them costs no pass. Creates
    no store."""
    return ctx.has_shared(clean_gradients_key(ctx)) and shared_clean_gradients(ctx).kept(index, labels)


def fits_in_store(n_images: int, image_shape: tuple[int, ...], num_classes: int) -> bool:
    """Whether the untargeted gradients of ``n_images`` attacked images of ``image_shape``
    (float32, with their ``num_classes`` logits) all fit in a store of :data:`STORE_BYTES`:
    then no row is ever computed twice."""
    row = 4 * (math.prod(image_shape) + num_classes)
    return n_images * row <= STORE_BYTES


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
    found = {"untargeted": untargeted_gradients(ctx, module, index, images, labels)[0]}
    earlier: list[tuple[torch.Tensor, torch.Tensor]] = []  # (targets, gradients) of the modes so far
    for mode, goal in targets.items():
        # an image whose target an earlier mode already chose (a random class that is the
        # least likely one) has that gradient: only the other images are computed
        seen = torch.zeros_like(goal, dtype=torch.bool)
        grad: torch.Tensor | None = None
        for other_goal, other_grad in earlier:
            same = (other_goal == goal) & ~seen
            if bool(same.any()):
                grad = torch.empty_like(other_grad) if grad is None else grad
                grad[same] = other_grad[same]
                seen |= same
        if grad is None:
            grad = oom_backoff(lambda x, t: clean_gradient(module, x, t, targeted=True), images, goal)
        elif not bool(seen.all()):
            rest = (~seen).nonzero().squeeze(1)
            part = oom_backoff(lambda x, t: clean_gradient(module, x, t, targeted=True), images[rest], goal[rest])
            # the batch mean of the rows computed: scaled to this batch's, as the others are
            grad[rest] = part * (len(rest) / len(goal))
        found[mode] = grad
        earlier.append((goal, grad))
    return found
