"""Grad-CAM as a primitive shared by checks: batched, on the device, computing only the
gradient with respect to the layer's activations."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from auditkit.layouts import ActivationLayout
from auditkit.records import ImageRows


def grad_cam(
    target: Any,
    images: torch.Tensor,
    classes: torch.Tensor,
    layer: str,
    *,
    relu: bool = True,
    layout: ActivationLayout | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps at ``layer``'s resolution, and the logits.

    alpha_k = spatial mean of d y_c / d A^k; map = ReLU(sum_k alpha_k A^k) (no ReLU with
    ``relu=False``) (Selvaraju et al. 2017). One forward and one backward for the whole batch;
    the backward stops at the layer's activations (no parameter gradients are computed or
    stored).

    A layer whose output is not channels first (a ViT block's tokens ``[B,N,C]``, a Swin
    stage's ``[B,h,w,C]``) is read through its ``layout``: the activations and their
    gradients are rearranged to ``[B,C,h,w]``, class and register tokens dropped, before the
    weights are taken, exactly as pytorch-grad-cam's documented ``reshape_transform`` for ViT
    and Swin does. ``layout`` defaults to the one the target's probe recorded for ``layer``
    (:attr:`LayerInfo.layout`), else channels first.

    The layer's output is captured *before* anything downstream can modify it: the hook
    hands the rest of the network a copy, so a following in-place ReLU (torchvision AlexNet's
    ``features.10``) cannot turn the captured activations into post-ReLU values while the
    gradients stay pre-ReLU.

    :param target: a white-box ``auditkit.Target`` (images in [0,1] pixel space).
    :param images: float [B,3,H,W] on the target's device.
    :param classes: long [B], the class whose score y_c is explained for each image.
    :param layer: module name in ``target.model`` whose output holds an h x w grid.
    :param layout: where the grid is in the layer's output (:class:`~auditkit.layouts.ActivationLayout`).
    :returns: (maps [B,h,w], logits [B,num_classes] detached).
    :raises ValueError: the layer does not run, the logits do not depend on it, or its output
        does not fit ``layout``.
    """
    if layout is None:
        layout = _recorded_layout(target, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"Grad-CAM layer {layer!r} must output a tensor, got {type(output).__name__}")
        layout.to_nchw(output)  # raises on a shape that does not fit, before any work is done
        store["a"] = output
        return output.clone()

    handle = target.layer(layer).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            # An input that requires grad keeps the graph alive for a frozen model (no
            # parameter requires grad); the backward still stops at the activations.
            logits = target(images.detach().requires_grad_(True))
            if "a" not in store:
                raise ValueError(f"Grad-CAM layer {layer!r} did not run in the forward pass; expected a layer the logits are computed through")
            activations = store["a"]
            score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
            (grads,) = torch.autograd.grad(score, activations, allow_unused=True)
            if grads is None:
                raise ValueError(f"the logits do not depend on Grad-CAM layer {layer!r}; expected a layer the logits are computed through")
    finally:
        handle.remove()
    return grad_cam_from(layout.to_nchw(activations.detach()), layout.to_nchw(grads), relu=relu), logits.detach()


def grad_cam_from(activations: torch.Tensor, gradients: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
    """Grad-CAM maps [B,h,w] from a layer's activations A and the gradients d y_c / d A, both
    [B,K,h,w]: ReLU(sum_k mean_ij(d y_c / d A^k) A^k), in their dtype. The one formula
    :func:`grad_cam` uses, for a check that has both from a pass of its own (so that its
    maps are bit for bit those :func:`grad_cam` computes)."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activations).sum(dim=1)
    return F.relu(cam) if relu else cam


def evaluation_maps_key(layer: str, explains: str, n_images: int) -> tuple[str, str, str, int]:
    """The ``ctx.shared`` key of the :class:`EvaluationMaps` of one model for Grad-CAM at
    ``layer`` explaining ``explains`` (``"label"`` or ``"predicted"``) over ``n_images``
    evaluation images: every check that computes those maps fills and reads the same store."""
    return ("gradcam.maps", layer, explains, n_images)


class EvaluationMaps:
    """Raw Grad-CAM maps of the audited model for the evaluation images, one row per image (its
    position in the eval split), at the layer's resolution: ``[n_images, h, w]``, a per-image
    record (:class:`~auditkit.records.ImageRows`: in memory up to its limit, else in a
    temporary file), read back on the device.

    One per model, layer and explained-class mode, held in the model's shared store
    (``ctx.shared``, under :func:`evaluation_maps_key`) so that every check reads the same
    maps of the clean images: each image's map is computed once, by the first check whose
    batch reaches it (a Grad-CAM check, or cam.consistency's own pass at the same layer), and
    only for images some check looks at. A filled row never changes.
    """

    def __init__(self, n_images: int, device: torch.device):
        # [n_images, h, w] once h and w are known: in memory up to its limit, else in a file;
        # a row is filled once written
        self._maps = ImageRows(n_images, device)

    def rows(self, index: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The maps [B,h,w] of the images at positions ``index`` (long [B] on the device), a
        copy. ``compute()`` returns the maps of all B images; it is called only when some of
        them are not filled yet. The whole batch is computed, not only its missing images, so
        that each map comes out of a batch of the check that asked first, exactly as that
        check computes it when it runs alone."""
        new = ~self._maps.written(index)
        if not self._maps.started or bool(new.any()):
            fresh = compute()
            self._maps.write(index[new], fresh[new.to(fresh.device)])
            if bool(new.all()):
                return fresh
        return self._maps.read(index)

    def stored(self, index: torch.Tensor) -> torch.Tensor | None:
        """The maps [B,h,w] of the images at positions ``index`` (long [B] on the device), a
        copy, when every one is filled; None otherwise. Computes nothing: what a cost
        estimate reads to leave out the maps no check will compute again."""
        if not self._maps.started or not bool(self._maps.written(index).all()):
            return None
        return self._maps.read(index)


# Channels first at whatever grid the output has (ActivationLayout.to_nchw only checks the
# rank for this kind): the behaviour for layers the probe did not record.
_CHANNELS_FIRST = ActivationLayout("nchw", (0, 0))


def _recorded_layout(target: Any, layer: str) -> ActivationLayout:
    """The layout the probe recorded for ``layer``; channels first when there is no record
    (an unprobed copy) or the record holds no grid (the hook then says what is wrong)."""
    try:
        infos = target.layers
    except (AttributeError, RuntimeError):
        infos = []
    recorded = [info.layout for info in infos if info.name == layer]
    if recorded and recorded[-1] is not None:
        return recorded[-1]
    return _CHANNELS_FIRST


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of [B,h,w] maps to [B,H,W] (align_corners=False, as pytorch-grad-cam's cv2 resize)."""
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each map of [B,...] to [0,1]; an all-constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)
