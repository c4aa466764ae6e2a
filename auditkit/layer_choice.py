"""Which layer Grad-CAM explains: the user's choice from the settings, or the last layer with a
spatial output that the logits depend on, with the reason written out for the reports. Shared
by every check that computes Grad-CAM, so that they all explain the same layer of a model."""
from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from auditkit.errors import UsageError
from auditkit.layouts import ActivationLayout
from auditkit.target import is_normalization

# Adaptive pooling resizes its input to a grid fixed by the layer (AlexNet's 6x6 avgpool),
# so its "spatial" output says nothing about where in the image the evidence lies.
_RESAMPLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerChoice:
    """The layer Grad-CAM explains for one model, and why.

    :ivar name: module name in the model (``"layer4"``, ``"blocks.11.norm1"``).
    :ivar output_shape: the layer's output without the batch dimension: ``(C, h, w)``, or
        ``(h, w, C)`` or ``(N, C)`` for channels-last and token layers.
    :ivar source: ``"automatic"``, ``"setting layer"`` or ``"setting layers[<model>]"``.
    :ivar reason: one sentence for the reports saying why this layer.
    :ivar passed_over: later spatial layers that were not chosen, with the reason for each.
    :ivar layout: where the image grid is in the output; None means channels first
        ``[B,C,h,w]`` (see :attr:`grid_layout`).
    """

    name: str
    output_shape: tuple[int, ...]
    source: str
    reason: str
    passed_over: tuple[tuple[str, str], ...] = ()
    layout: ActivationLayout | None = None

    @property
    def grid_layout(self) -> ActivationLayout:
        """The layout, channels first when none was recorded."""
        if self.layout is not None:
            return self.layout
        return ActivationLayout("nchw", (int(self.output_shape[-2]), int(self.output_shape[-1])))

    def describe(self) -> str:
        """``layer4 [512,7,7] (automatic: ...)``, for messages."""
        shape = ",".join(str(s) for s in self.output_shape)
        kind = "" if self.grid_layout.kind == "nchw" else f" as {self.grid_layout.describe()}"
        return f"{self.name} [{shape}]{kind} ({self.source}: {self.reason})"

    def to_details(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "layer_output_shape": list(self.output_shape),
            "layer_layout": self.grid_layout.to_details(),
            "layer_source": self.source,
            "layer_reason": self.reason,
            "layers_passed_over": {name: why for name, why in self.passed_over},
        }


def choose_layer(
    target: Any,
    example: torch.Tensor,
    *,
    layer: str | None = None,
    layers: Mapping[str, str] | None = None,
) -> LayerChoice:
    """Pick the layer Grad-CAM explains for ``target``.

    ``layers[target.name]`` wins, then ``layer`` (for the model under audit only, role
    ``"target"``), then the automatic rule: the last module in call order whose output holds
    the image grid (channels first ``[B,C,h,w]``, channels last ``[B,h,w,C]`` or tokens
    ``[B,N,C]``, :func:`~auditkit.layouts.infer_layouts`; ``h*w > 1``), that runs once per
    forward pass (a module called twice, like torchvision's shared ReLU in a ResNet block,
    cannot be hooked unambiguously), that is not adaptive pooling (which resamples to a grid
    of its own), and on which the logits depend (checked with one forward and backward pass
    on ``example``). For channels-last and token layers the logits must depend on the grid
    positions themselves: after the last attention of a ViT whose head reads the class token,
    the patch tokens no longer reach the logits, so the rule lands on the last block's first
    norm (``blocks[-1].norm1`` in timm, ``layernorm_before`` in Hugging Face, ``ln_1`` in
    torchvision), the layer pytorch-grad-cam's documentation uses for ViTs. Only modules inside
    the model's body (``target.body_name``) compete: the single-child wrappers around it and
    the body itself are the whole network, never a layer of it, so a wrapped model gets the
    same layer as the plain one, under its qualified name.

    :param target: a probed white-box ``auditkit.Target`` with hookable layers.
    :param example: one or more images [B,3,H,W] on the target's device, for the dependence test.
    :raises UsageError: a configured layer does not exist, does not run, runs more than once,
        or holds no image grid; or the model has no layer that qualifies.
    """
    calls = Counter(info.name for info in target.layers)
    last_call = {info.name: info for info in target.layers}
    setting = applied_setting(target, layer=layer, layers=layers)
    if setting is not None:
        source, name = setting
        return _configured(target, name, source, calls, last_call)
    return _automatic(target, example, calls, last_call)


def applied_setting(target: Any, *, layer: Any = None, layers: Mapping[str, Any] | None = None) -> tuple[str, Any] | None:
    """The setting that names ``target``'s layer, as ``(source, module name)`` (source as in
    :attr:`LayerChoice.source`), or None when the layer is chosen automatically: all that
    :func:`choose_layer`'s answer depends on besides the model (the automatic rule's example
    image is always the first evaluation image)."""
    if layers and target.name in layers:
        return f"setting layers[{target.name!r}]", layers[target.name]
    if layer is not None and target.role == "target":
        return "setting layer", layer
    return None


def _configured(target: Any, name: Any, source: str, calls: Counter, last_call: dict) -> LayerChoice:
    if not isinstance(name, str) or not name:
        raise UsageError(f"Grad-CAM {source} must be a module name such as 'layer4', got {name!r}")
    modules = [n for n, _ in target.model.named_modules() if n]
    if name not in modules:
        close = difflib.get_close_matches(name, modules, n=3)
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UsageError(
            f"Grad-CAM {source}: {target.name} has no layer {name!r}{hint}; expected one of the model's module names"
        )
    if name not in calls:
        raise UsageError(
            f"Grad-CAM {source}: layer {name!r} of {target.name} does not run in the forward pass "
            "(or its output is not a tensor); expected a layer the logits are computed through"
        )
    if calls[name] > 1:
        raise UsageError(
            f"Grad-CAM {source}: layer {name!r} of {target.name} runs {calls[name]} times per forward pass; "
            "expected a layer that runs once (choose its parent block)"
        )
    info = last_call[name]
    if not _has_grid(info):
        why = info.no_grid or "its grid has one position"
        raise UsageError(
            f"Grad-CAM {source}: layer {name!r} of {target.name} outputs shape {list(info.output_shape)} ({why}); "
            "expected an output over the image grid: [batch, channels, h, w], [batch, h, w, channels] "
            "or tokens [batch, prefix + h*w, channels], with h*w > 1"
        )
    return LayerChoice(name, tuple(info.output_shape[1:]), source, "chosen in the configuration", layout=info.layout)


def _automatic(target: Any, example: torch.Tensor, calls: Counter, last_call: dict) -> LayerChoice:
    passed_over: list[tuple[str, str]] = []
    candidates: list[str] = []
    body = getattr(target, "body_name", "")
    inside = f"{body}." if body else ""
    seen: set[str] = set()
    for info in reversed(target.layers):
        if info.name in seen or not info.name.startswith(inside):
            continue
        seen.add(info.name)
        if not _has_grid(info):
            continue
        if calls[info.name] > 1:
            passed_over.append((info.name, f"runs {calls[info.name]} times per forward pass"))
        elif isinstance(info.module, _RESAMPLING):
            passed_over.append((info.name, "adaptive pooling resamples to a fixed grid that is not the image's"))
        else:
            candidates.append(info.name)
    if not candidates:
        raise UsageError(
            f"{target.name} has no layer whose output holds the image grid ([batch, channels, h, w], "
            "[batch, h, w, channels] or tokens, h*w > 1) that runs once per forward pass; Grad-CAM needs one "
            "(set the gradcam checks' layer or layers setting)"
        )
    layouts = {name: last_call[name].layout for name in candidates}
    used = _layers_the_logits_depend_on(target, example, layouts)
    # For tokens and channels-last grids the rule wants the last *normalization* layer the
    # grid reaches the logits through: the input of the last attention (blocks[-1].norm1),
    # not the query/key/value projections or MLP layers inside a block (Hugging Face's ViT
    # projects q, k, v with separate Linear layers as wide as the stream).
    fallback: tuple[str, str] | None = None
    class_token_only = False  # a later layer reaches the logits only through its class token
    for name in candidates:
        info = last_call[name]
        transformer = info.layout is not None and info.layout.kind != "nchw"
        if used.get(name) == "grid":
            if transformer and not is_normalization(info.module):
                reason = (
                    "the last layer over the image grid that runs once and whose grid positions the logits depend "
                    "on (no normalization layer qualifies)"
                )
                if fallback is None:
                    fallback = (name, reason)
                passed_over.append((name, "inside a block: for tokens the rule takes the last norm whose grid positions the logits depend on"))
                continue
            if fallback is not None and not transformer:
                break
            if transformer:
                reason = "the last normalization layer over the image grid that runs once and whose grid positions the logits depend on"
                if class_token_only:
                    reason += " (after it the logits read only the class token)"
            else:
                reason = "the last layer with a spatial output that runs once and that the logits depend on"
            return LayerChoice(name, tuple(info.output_shape[1:]), "automatic", reason, tuple(passed_over), layout=info.layout)
        if used.get(name) == "prefix":
            class_token_only = True
            passed_over.append((name, "the logits depend only on its class or register tokens, not on its grid positions"))
        else:
            passed_over.append((name, "the logits do not depend on its output"))
    if fallback is not None:
        name, reason = fallback
        info = last_call[name]
        kept = tuple((n, why) for n, why in passed_over if n != name)
        return LayerChoice(name, tuple(info.output_shape[1:]), "automatic", reason, kept, layout=info.layout)
    raise UsageError(
        f"the logits of {target.name} depend on none of its spatial layers ({', '.join(candidates[:5])}...); "
        "Grad-CAM needs one (set the gradcam checks' layer or layers setting)"
    )


def _layers_the_logits_depend_on(target: Any, example: torch.Tensor, layouts: Mapping[str, ActivationLayout | None]) -> dict[str, str]:
    """``"grid"`` for each layer whose grid positions the logits depend on, ``"prefix"`` when
    they depend only on its prefix tokens; absent when not at all. For channels-first layers a
    gradient that exists counts (as always for CNNs); for the others it must be non-zero
    somewhere on the grid."""
    names = list(layouts)
    store: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            store[name] = output

        return hook

    try:
        for name in names:
            handles.append(target.layer(name).register_forward_hook(recorder(name)))
        with torch.enable_grad():
            # The input requires grad so that a frozen model (no parameter requires grad)
            # still builds the graph the dependence test reads.
            logits = target(example[:1].detach().requires_grad_(True))
            outputs = [store[n] for n in names if n in store and store[n].requires_grad]
            grads = torch.autograd.grad(logits.sum(), outputs, allow_unused=True) if outputs else ()
    finally:
        for handle in handles:
            handle.remove()
    kept = [n for n in names if n in store and store[n].requires_grad]
    answers: dict[str, str] = {}
    for name, grad in zip(kept, grads):
        if grad is None:
            continue
        layout = layouts[name]
        on_grid = layout is None or layout.kind == "nchw" or bool(layout.to_nchw(grad).detach().ne(0).any())
        answers[name] = "grid" if on_grid else "prefix"
    return answers


def _has_grid(info: Any) -> bool:
    layout = getattr(info, "layout", None)
    if layout is None:
        return False
    return layout.grid[0] * layout.grid[1] > 1
