"""Class activation maps (Zhou et al. 2016) for a global-average-pooling + linear head, and the
two identities that confirm such a head numerically: logits from CAM, and Grad-CAM from CAM."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from auditkit import Target, TargetError
from auditkit.toolkit import ActivationLayout

# Floor for the scales that errors are divided by: a scale of exactly zero means both sides of
# the identity are exactly zero, and 0 / tiny stays 0 instead of becoming NaN.
_TINY = torch.finfo(torch.float64).tiny


@dataclass
class FeaturePass:
    """One forward pass of a target with the feature map recorded.

    ``features`` [B,C,h,w] is the input of the pooling module (the f_k(i,j) of CAM), detached;
    ``logits`` [B,K] the target's logits, detached; ``grad_cam`` [B,h,w] float64 the Grad-CAM
    maps at ``features`` for the requested classes, or None when no classes were given or no
    gradient reaches the features. ``gradient_reaches_features`` is False when classes were
    given and autograd finds no path from the logits back to the features (a detach, or a
    ``torch.no_grad()`` block, in ``forward``): Grad-CAM is then undefined, not zero.
    ``gradients`` [B,C,h,w] are the d y_c / d f_k(i,j) ``grad_cam`` came from, in the
    features' dtype, or None.
    """

    features: torch.Tensor
    logits: torch.Tensor
    grad_cam: torch.Tensor | None = None
    gradient_reaches_features: bool = True
    gradients: torch.Tensor | None = None


@dataclass
class IdentityErrors:
    """How far one identity is from holding, per image.

    ``abs_err`` [B]: the largest absolute difference between the two sides in that image.
    ``rel_err`` [B]: the largest difference divided by the magnitude of the terms summed on
    that element (see :func:`logit_identity_errors`); float rounding keeps it below about
    (C + h*w) machine epsilons at worst, typically far less. ``worst`` [B]: where ``abs_err`` was reached (a class index for
    the logit identity, a flat spatial index for the Grad-CAM identity).
    """

    abs_err: torch.Tensor
    rel_err: torch.Tensor
    worst: torch.Tensor


@contextlib.contextmanager
def capture_pool_input(pool: nn.Module, *, output: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input of ``pool`` on every forward pass inside the block::

        with capture_pool_input(target.layer(head.pool)) as store:
            logits = target(images)
        store["features"]  # [B,C,h,w], the pool's input on its last call, still in the graph

    The pool's input is by definition the feature map the CAM is built from, whichever
    module (or functional code in ``forward``) produced it. With ``output=True`` the module's
    output is recorded instead: the tokens a transformer's ``forward`` averages itself
    (``GapHead.features == "layer output"``). The hook only reads; it is removed when the
    block ends, whatever happens inside it.
    """
    store: dict[str, torch.Tensor] = {}

    def pre_hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            store["features"] = inputs[0]

    def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        if isinstance(out, torch.Tensor):
            store["features"] = out

    handle = pool.register_forward_hook(hook) if output else pool.register_forward_pre_hook(pre_hook)
    try:
        yield store
    finally:
        handle.remove()


def pool_input_pass(
    target: Target,
    pool: str,
    images: torch.Tensor,
    classes: torch.Tensor | None = None,
    *,
    layout: ActivationLayout | None = None,
    features: str = "pool input",
) -> FeaturePass:
    """Run ``target`` on ``images`` once, recording the input of the module named ``pool``.

    With ``classes`` [B], also compute Grad-CAM at that feature map for class ``classes[b]``
    of image b: alpha_k = mean_ij d y_c / d f_k(i,j), map = ReLU(sum_k alpha_k f_k). The
    gradient is taken with :func:`torch.autograd.grad` with respect to the features only, so
    no parameter gradient is computed or stored, and it covers every path from the features
    to the logit, not only the one through the pool.

    A transformer's head (:class:`auditkit.GapHead` with a ``layout``) pools tokens or a
    channels-last grid: the features (and their gradients) are rearranged to ``[B,C,h,w]``
    through ``layout``, class and register tokens dropped; with ``features="layer output"``
    they are the output of ``pool`` rather than its input.

    :param target: a white-box ``auditkit.Target`` (images in [0,1] pixel space).
    :param pool: name of the pooling module in ``target.model`` (or of the layer whose output
        ``forward`` averages).
    :param images: float [B,3,H,W] on the target's device.
    :param classes: long [B] or None.
    :raises TargetError: the pool was not called, or its input is not a [B,C,h,w] tensor (or
        does not fit ``layout``).
    """
    want_grad = classes is not None
    # The images, not the parameters, are made to require grad, so the features are in the
    # graph even when the user froze every parameter.
    x = images.detach().requires_grad_(want_grad)
    captured = "output" if features == "layer output" else "input"
    with capture_pool_input(target.layer(pool), output=captured == "output") as store, torch.set_grad_enabled(want_grad):
        logits = target(x)
        raw = store.get("features")
        if raw is None:
            raise TargetError(f"{target.name}: the module {pool!r} was not called during the forward pass")
        try:
            grid = raw if layout is None else layout.to_nchw(raw)
        except ValueError as exc:
            raise TargetError(f"{target.name}: the {captured} of {pool!r}: {exc}") from None
        if grid.ndim != 4 or grid.shape[0] != images.shape[0]:
            raise TargetError(
                f"{target.name}: the {captured} of {pool!r} has shape {list(raw.shape)}; "
                f"expected a feature map [batch={images.shape[0]}, channels, h, w]"
            )
        cam = None
        grads = None
        if want_grad and logits.requires_grad and raw.requires_grad:
            score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
            (grads,) = torch.autograd.grad(score, raw, allow_unused=True)
        if grads is not None:
            grads = grads if layout is None else layout.to_nchw(grads)
            alpha = grads.double().mean(dim=(2, 3))
            cam = F.relu(torch.einsum("bc,bchw->bhw", alpha, grid.detach().double()))
    return FeaturePass(
        grid.detach(), logits.detach(), cam, gradient_reaches_features=not want_grad or grads is not None, gradients=grads
    )


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAM_c(i,j) = sum_k w_ck f_k(i,j) (Zhou et al. 2016), one class per image.

    :param features: [B,C,h,w], the input of the global average pool.
    :param weight: [K,C], the linear layer's weight.
    :param classes: long [B], the class c of each image.
    :returns: [B,h,w] in the dtype of ``features`` (raw maps: no ReLU, no bias, no rescaling).
    """
    if features.ndim != 4 or weight.ndim != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"features [B,C,h,w] and weight [K,C] must agree on C; got {list(features.shape)} and {list(weight.shape)}"
        )
    w = weight.to(features.dtype)[classes.to(weight.device)]
    return torch.einsum("bc,bchw->bhw", w, features)


def logit_identity_errors(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, logits: torch.Tensor
) -> IdentityErrors:
    """How far ``logits`` are from mean_ij CAM_c(i,j) + b_c, for every image and class.

    The right side is computed in float64, as sum_k w_ck mean_ij f_k(i,j) + b_c (equal to
    mean_ij CAM_c(i,j) + b_c by linearity), so the error left is the model's own rounding.
    The relative error divides by sum_k |w_ck| mean_ij |f_k(i,j)| + |b_c|: the magnitude of
    the terms the model summed, which bounds float rounding to about (C + h*w) machine
    epsilons times it, however much the terms cancel in the logit.
    """
    f = features.double()
    w = weight.detach().double().to(f.device)
    if bias is None:
        b = torch.zeros(w.shape[0], dtype=torch.float64, device=f.device)
    else:
        b = bias.detach().double().to(f.device)
    if logits.shape != (f.shape[0], w.shape[0]):
        raise TargetError(
            f"logits of shape {list(logits.shape)} do not match the linear head's {w.shape[0]} classes "
            f"for {f.shape[0]} images"
        )
    from_cam = f.mean(dim=(2, 3)) @ w.T + b
    scale = f.abs().mean(dim=(2, 3)) @ w.abs().T + b.abs()
    err = (logits.double() - from_cam).abs()
    abs_err, worst = err.max(dim=1)
    rel_err = (err / scale.clamp_min(_TINY)).amax(dim=1)
    return IdentityErrors(abs_err, rel_err, worst)


def grad_cam_identity_errors(
    grad_cam: torch.Tensor, features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor
) -> IdentityErrors:
    """How far Grad-CAM at the feature map is from ReLU(CAM_c) / (h*w), per image.

    With a GAP + linear head, d y_c / d f_k(i,j) = w_ck / (h*w) at every position, so the
    Grad-CAM weights are alpha_k = w_ck / (h*w) and Grad-CAM = ReLU(CAM_c) / (h*w) exactly.
    The relative error divides by sum_k |w_ck| |f_k(i,j)| / (h*w) at each position.
    """
    f = features.double()
    h, w_ = f.shape[-2:]
    expected = F.relu(class_activation_maps(f, weight.detach(), classes)) / (h * w_)
    scale = class_activation_maps(f.abs(), weight.detach().abs(), classes) / (h * w_)
    err = (grad_cam.double() - expected).abs().flatten(1)
    abs_err, worst = err.max(dim=1)
    rel_err = (err / scale.flatten(1).clamp_min(_TINY)).amax(dim=1)
    return IdentityErrors(abs_err, rel_err, worst)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation between ``a[i]`` and ``b[i]`` (each flattened), for every row i.

    :returns: (corr [B] float64, defined [B] bool). A row where either map is constant has
        no correlation: its ``defined`` is False and its ``corr`` NaN.
    """
    x = a.flatten(1).double()
    y = b.flatten(1).double()
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    nx = x.norm(dim=1)
    ny = y.norm(dim=1)
    defined = (nx > 0) & (ny > 0)
    corr = (x * y).sum(dim=1) / (nx * ny)
    corr = torch.where(defined, corr.clamp(-1.0, 1.0), torch.full_like(corr, float("nan")))
    return corr, defined
