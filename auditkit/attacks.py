"""torchattacks' FGSM, PGD and MI-FGSM built one way for every check: the model seen as an
``nn.Module`` with contiguous input gradients, budgets in [0,1] pixel units, the step size the
caller's own rule, targeted mode by label, and every perturbation checked against its budget.
And FGSM from a clean-point gradient computed once (:func:`clean_gradient`, :func:`fgsm_step`),
bit for bit torchattacks' step, for checks that attack one batch at many budgets; and PGD and
MI-FGSM from the clean image given that gradient (:class:`CleanPoint`): torchattacks' own loop,
whose first pass reads it instead of computing it again."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torchattacks
from torch import nn

from auditkit.budgets import NORMS
from auditkit.errors import TargetError
from auditkit.target import NO_INPUT_GRADIENT, contiguous_gradient

METHODS = ("fgsm", "pgd", "mifgsm")

# Perturbations may exceed their budget by float rounding only (torchattacks clamps in float32).
_BUDGET_SLACK = 1e-5


def missing_input_gradient(model: Any) -> TargetError:
    """The session's one error for a model whose forward pass stops the input gradient
    (``torch.no_grad()``, ``.detach()``, a non-differentiable step), naming the model by its
    ``name`` when it has one."""
    return TargetError(f"{getattr(model, 'name', 'the model')}: {NO_INPUT_GRADIENT}")


class LogitsModule(nn.Module):
    """A model's logits as the ``nn.Module`` torchattacks expects, with input gradients that
    are always contiguous (NCHW).

    ``model`` maps images [B,3,H,W] in [0,1] to logits [B,K]: a :class:`~auditkit.target.Target`
    (normalization inside) or any ``nn.Module`` doing the same (a transfer proxy). A
    channels_last model hands back channels_last input gradients, which torchattacks' L2
    attacks flatten with ``.view``; :func:`~auditkit.target.contiguous_gradient` makes them
    contiguous on the way back.

    Modes: torchattacks switches the module it is given to eval mode for the attack and back
    to train mode after it when it found it training. An ``nn.Module`` model is a submodule
    and the wrapper starts in the model's own mode, so the model is attacked in eval mode and
    handed back in the mode it was in. A Target is kept as a plain attribute: those calls stop
    at the wrapper and never reach the user's model, whose mode the Target manages itself
    (eval while entered). The one empty parameter, on the model's device, is where torchattacks
    reads its device from.

    :raises TargetError: (from ``forward``) the input requires a gradient, gradients are
        enabled, and the logits carry none, as when the forward pass detaches its output
        (:func:`missing_input_gradient`); decided by autograd's own flag, not by the wording
        of torch's errors. The session skips white-box checks on a Target whose probe found
        no input gradient; this guards direct callers.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model  # registered as a submodule only when it is an nn.Module
        if isinstance(model, nn.Module):
            self.training = model.training
            first = next(itertools.chain(model.parameters(), model.buffers()), None)
            device = first.device if first is not None else torch.device("cpu")
        else:
            device = torch.device(getattr(model, "device", "cpu"))
        self.device_anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(contiguous_gradient(images))
        if images.requires_grad and torch.is_grad_enabled() and not logits.requires_grad:
            raise missing_input_gradient(self.model)
        return logits


@dataclass(frozen=True)
class CleanPoint:
    """What an attack's first step from the clean images needs, when it is already known: the
    logits [B,K] of the clean images and the input gradient [B,3,H,W] of the batch-mean
    cross-entropy towards the attack's goal, maximized (untargeted) or minimized (targeted), as
    :func:`clean_gradient_and_logits` gives them.

    ``batch_sizes``: the size of the batch whose mean gave each row (an int, or long [B] per
    row, for rows gathered from several batches): the mean scales row i by
    ``1 / batch_sizes[i]``, and :func:`craft` rescales it to the batch it attacks. Rows must be
    in the order of the images attacked.
    """

    logits: torch.Tensor
    gradient: torch.Tensor
    batch_sizes: torch.Tensor | int

    def sizes(self) -> torch.Tensor:
        """``batch_sizes`` as a float tensor [B] on the gradient's device."""
        n = self.gradient.shape[0]
        sizes = torch.as_tensor(self.batch_sizes, dtype=torch.float64, device=self.gradient.device)
        return sizes.expand(n) if sizes.dim() == 0 else sizes


class _KnownInputGradient(torch.autograd.Function):
    """The clean logits as the output of a pass that was not made, with the known input
    gradient as what flows back. That is ``J^T g`` for the ``g`` it was computed for: the
    gradient, with respect to these logits, of the batch-mean cross-entropy towards ``goal``
    (``sign`` -1: its negative, torchattacks' targeted cost). Whatever flows back is checked
    to be that, rescaled to this batch, so a change in the attack's cost is an internal error,
    not a silently wrong step. That the gradient belongs to these images and this goal is the
    caller's word (:class:`CleanPoint`)."""

    @staticmethod
    def forward(ctx: Any, images: torch.Tensor, logits: torch.Tensor, gradient: torch.Tensor,
                sizes: torch.Tensor, goal: torch.Tensor, sign: float) -> torch.Tensor:
        ctx.save_for_backward(logits, gradient, sizes, goal)
        ctx.sign = sign
        return logits.clone()

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor) -> tuple[Any, ...]:
        logits, gradient, sizes, goal = ctx.saved_tensors
        n = logits.shape[0]
        # the batch-mean cross-entropy's gradient at these logits, on a batch of n
        unit = torch.softmax(logits.double(), 1)
        unit[torch.arange(n, device=unit.device), goal] -= 1
        expected = ctx.sign * unit / n
        # the softmax rounds in the logits' precision: near-certain classes give (p - 1) ~ eps
        atol = 8 * torch.finfo(grad_logits.dtype).eps / max(n, 1)
        if not torch.allclose(grad_logits.double(), expected, rtol=1e-3, atol=atol):
            raise RuntimeError(
                "the attack's cost at the clean images is not the batch-mean cross-entropy a known "
                "clean-point gradient belongs to: internal error"
            )
        if bool((sizes == n).all()):
            return gradient, None, None, None, None, None  # on the batch it came from: as computed
        return gradient * (sizes / n).to(gradient.dtype).view(-1, *([1] * (gradient.dim() - 1))), None, None, None, None, None


class _FirstPassKnown(LogitsModule):
    """A :class:`LogitsModule` whose first call, at the clean images, returns the known logits
    and gradient (:class:`CleanPoint`) instead of a pass; every later call is the model's."""

    def __init__(self, module: LogitsModule, images: torch.Tensor, point: CleanPoint, goal: torch.Tensor,
                 targeted: bool):
        super().__init__(module)
        self.images, self.point, self.goal, self.sign = images, point, goal, -1.0 if targeted else 1.0
        self.pending = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.pending:
            self.pending = False
            if images.shape == self.images.shape and torch.equal(images.detach(), self.images):
                p = self.point
                return _KnownInputGradient.apply(images, p.logits, p.gradient, p.sizes(), self.goal, self.sign)
        return self.model(images)


def build_attack(
    model: Any,
    method: str,
    norm: str,
    eps: float | torch.Tensor,
    *,
    steps: int = 1,
    alpha: float | torch.Tensor | None = None,
    random_start: bool = False,
    targeted: bool = False,
    decay: float = 1.0,
) -> torchattacks.attack.Attack:
    """The torchattacks attack for one method, norm and budget, configured the one way every
    check uses.

    Methods (sources: Goodfellow et al. 2015, Madry et al. 2018, Dong et al. 2018; the
    implementations are torchattacks' ``FGSM``, ``PGD``, ``PGDL2`` and ``MIFGSM``):

    - ``fgsm``: one step of size ``eps`` from the clean image. Linf: ``x + eps * sign(grad)``
      (FGSM, Goodfellow et al.); L2: ``x + eps * grad / ||grad||``, the fast gradient method,
      run as one PGD-L2 step. ``steps``, ``alpha`` and ``random_start`` do not apply.
    - ``pgd``: projected gradient descent (Madry et al.): ``steps`` steps of size ``alpha``
      (sign steps for Linf, normalized-gradient steps for L2), each projected back onto the
      ``eps`` ball, from a uniformly random point of the ball when ``random_start``.
    - ``mifgsm``: momentum iterative FGSM (Dong et al.), Linf only: ``steps`` sign steps of
      size ``alpha`` along the accumulated gradient (each normalized by its mean absolute value,
      the running sum decayed by ``decay``), projected onto the ball, from the clean image.

    Every step is clipped to [0,1]. The loss is the cross-entropy of the logits: maximized for
    the true classes (untargeted), or, when ``targeted``, minimized towards the labels passed
    to the attack, which are then the target classes (``set_mode_targeted_by_label``). The
    model runs in eval mode during the attack (``set_model_training_mode`` at its defaults;
    see :class:`LogitsModule` for what that reaches), and torchattacks' own normalization is
    not used: the model takes [0,1] pixels and normalizes inside.

    :param model: a :class:`LogitsModule`, or a Target or ``nn.Module`` mapping images
        [B,3,H,W] in [0,1] to logits [B,K], which is wrapped in one.
    :param method: one of :data:`METHODS`.
    :param norm: ``"linf"`` or ``"l2"``.
    :param eps: the budget in [0,1] pixel units (8/255 ~ 0.0314 Linf; the L2 norm of the whole
        perturbation), one for the batch or a tensor [B] of per-image budgets on the images'
        device (then without ``random_start``: torchattacks draws its start with one radius).
    :param steps: gradient steps (``pgd``, ``mifgsm``).
    :param alpha: the step size in pixel units, a float or a tensor [B] (``pgd``, ``mifgsm``;
        required there). Each check states its own rule, e.g. ``rel_step_size * eps`` or
        Madry et al.'s ``2.5 * eps / steps``.
    :param random_start: start PGD from a uniformly random point of the ball.
    :param targeted: minimize the loss towards the given labels instead of maximizing it.
    :param decay: MI-FGSM's momentum decay mu (1.0 in Dong et al.).
    :returns: the attack; call it with contiguous images [B,3,H,W] in [0,1] and labels [B]
        (:func:`craft` does, and checks the result against the budget).
    :raises ValueError: an unknown method or norm, MI-FGSM under L2, ``steps < 1``, a missing
        or non-positive ``alpha``, a parameter that does not apply to the method, or per-image
        budgets with ``random_start``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attack {method!r}; expected one of {', '.join(METHODS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if method == "mifgsm" and norm != "linf":
        raise ValueError(f"attack 'mifgsm' has no {norm} form; it is defined for linf only")
    if method == "fgsm" and (steps != 1 or alpha is not None or random_start):
        raise ValueError("fgsm is one step of size eps from the clean image: steps, alpha and random_start do not apply")
    if method != "mifgsm" and decay != 1.0:
        raise ValueError(f"decay is MI-FGSM's momentum; it does not apply to {method}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method != "fgsm" and (alpha is None or not bool(torch.all(torch.as_tensor(alpha) > 0))):
        raise ValueError(f"{method} needs a step size alpha > 0, got {alpha!r}")
    per_image = isinstance(eps, torch.Tensor)
    if per_image and random_start:
        raise ValueError("per-image budgets need a deterministic attack (random_start=False)")
    module = model if isinstance(model, LogitsModule) else LogitsModule(model)
    # torchattacks broadcasts Linf budgets and every step size against the images [B,C,H,W],
    # but L2 budgets against the per-image norms [B].
    eps_img = eps.reshape(-1, 1, 1, 1) if per_image else eps
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.reshape(-1, 1, 1, 1)
    if method == "fgsm":
        if norm == "linf":
            attack = torchattacks.FGSM(module, eps=eps_img)
        else:
            attack = torchattacks.PGDL2(module, eps=eps, alpha=eps_img, steps=1, random_start=False)
    elif method == "pgd":
        if norm == "linf":
            attack = torchattacks.PGD(module, eps=eps_img, alpha=alpha, steps=steps, random_start=random_start)
        else:
            attack = torchattacks.PGDL2(module, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    else:
        attack = torchattacks.MIFGSM(module, eps=eps_img, alpha=alpha, steps=steps, decay=decay)
    attack.set_model_training_mode(model_training=False, batchnorm_training=False, dropout_training=False)
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    return attack


def craft(
    model: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str,
    norm: str,
    eps: float | torch.Tensor,
    *,
    steps: int = 1,
    alpha: float | torch.Tensor | None = None,
    random_start: bool = False,
    targeted: bool = False,
    decay: float = 1.0,
    clean_point: CleanPoint | None = None,
) -> torch.Tensor:
    """Adversarial images from the attack :func:`build_attack` builds with the same arguments.

    ``images`` [B,3,H,W] in [0,1] may be in any memory layout: torchattacks copies the layout
    it is given and flattens with ``.view``, so they go in contiguous, and the result
    [B,3,H,W] is contiguous and detached. ``labels`` [B] are the true classes, or the target
    classes when ``targeted``.

    ``clean_point``: the clean logits and the gradient of this attack's cost at ``images``
    towards ``labels`` (:class:`CleanPoint`), when already known, for an attack whose first
    pass is at the clean images (``pgd`` without ``random_start``, ``mifgsm``). torchattacks'
    loop then reads them for its first step instead of a forward+backward pass; its step is
    the one it takes from a gradient it computed itself (Linf and MI-FGSM read the sign; L2
    the direction). Saves one forward+backward pass per image.

    :raises ValueError: as :func:`build_attack`; a ``clean_point`` for an attack that does
        not start at the clean images, or whose rows do not match ``images``.
    :raises RuntimeError: a perturbation left its budget or an image left [0,1] beyond float
        rounding: success rates for perturbations outside the threat model would overstate
        the attack.
    :raises TargetError: no gradient reaches the input (see :class:`LogitsModule`).
    """
    images = images.contiguous()
    if clean_point is not None:
        if method == "fgsm" or random_start:
            raise ValueError(f"a known clean point serves an iterative attack from the clean images, not {method}"
                             + (" with a random start" if random_start else ""))
        if clean_point.gradient.shape != images.shape or clean_point.logits.shape[0] != images.shape[0]:
            raise ValueError(f"a clean point of {tuple(clean_point.gradient.shape)} for images of {tuple(images.shape)}")
        inner = model if isinstance(model, LogitsModule) else LogitsModule(model)
        model = _FirstPassKnown(inner, images, clean_point, labels, targeted)
    attack = build_attack(
        model, method, norm, eps, steps=steps, alpha=alpha, random_start=random_start, targeted=targeted, decay=decay
    )
    adversarial = attack(images, labels).detach()
    _check_budget(norm, images, adversarial, eps)
    return adversarial


def clean_gradient(model: nn.Module, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool = False) -> torch.Tensor:
    """The input gradient [B,3,H,W] that torchattacks' FGSM (and the first step of PGD from
    the clean image) takes on this batch: of the batch-mean cross-entropy towards ``goal``,
    maximized (untargeted: ``goal`` are the true classes) or minimized (``targeted``: the target
    classes; the gradient of ``-CE``). Computed exactly as torchattacks computes it (same
    module call, loss and reduction), so a step along it is bit-identical to torchattacks'.

    ``model`` returns logits [B,K] for ``images`` [B,3,H,W] (a :class:`LogitsModule`, or a
    proxy in eval mode). The mean makes each image's gradient 1/B of its own loss's gradient:
    that scale changes no sign and no direction, but it does depend on the batch, so a step
    from it is torchattacks' step on this batch, not on another one.
    """
    return clean_gradient_and_logits(model, images, goal, targeted=targeted)[0]


def clean_gradient_and_logits(
    model: nn.Module, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`clean_gradient` [B,3,H,W] and the logits [B,K] of the forward pass it came from
    (detached): a second forward pass of the clean images, which ``whitebox.masking`` compares
    with the shared clean pass to find randomized outputs."""
    x = images.contiguous().clone().detach()
    x.requires_grad = True
    logits = model(x)
    loss = nn.CrossEntropyLoss()(logits, goal.clone().detach())
    cost = -loss if targeted else loss
    (grad,) = torch.autograd.grad(cost, x, retain_graph=False, create_graph=False)
    return grad.detach(), logits.detach()


def fgsm_step(images: torch.Tensor, gradient: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """FGSM from a precomputed clean-point gradient (:func:`clean_gradient`): ``x + eps *
    sign(g)`` for Linf, ``x + eps * g / ||g||`` for L2, clamped to [0,1]; ``eps`` one budget
    or a tensor [B] of per-image budgets. One forward pass scores the result; no backward.

    Bit-identical to ``auditkit.toolkit.craft(model, images, labels, "fgsm", norm, eps)`` given
    the same gradient (tests/plugins/whitebox/test_whitebox_gradients.py,
    tests/plugins/transfer/test_transfer_cost.py): the L2 step repeats
    torchattacks' PGD-L2 arithmetic, the ``1e-10`` added to the gradient norm and the projection
    onto the ball, which is idle (the step has length eps at most) but rounds.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
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


def _check_budget(norm: str, images: torch.Tensor, adversarial: torch.Tensor, eps: float | torch.Tensor) -> None:
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    limit = torch.as_tensor(eps, dtype=size.dtype, device=size.device) * (1 + _BUDGET_SLACK) + _BUDGET_SLACK
    over = size > limit
    if bool(over.any()) or adversarial.min() < -_BUDGET_SLACK or adversarial.max() > 1 + _BUDGET_SLACK:
        worst = float((size - limit).max())
        raise RuntimeError(
            f"the {norm} attack left its budget or the [0,1] pixel range (worst excess {worst:.3g}); "
            "refusing to report success rates for perturbations outside the threat model"
        )
