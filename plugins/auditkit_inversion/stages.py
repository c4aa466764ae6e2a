"""Which layers to invert: the output of each stage of the network (each block of a
transformer), found from the module tree and the probe forward's output shapes and layouts,
or the module names the user configured, preceded by the calibration anchor (the first
convolution's output)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

# Modules that only reshape or (in eval mode) copy their input: never a stage's output.
_PASSTHROUGH = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)
# Normalizations carry parameters but belong to the layer they follow, like activations.
_NORMALIZATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Layouts of a transformer's stream: patch tokens (ViT) or a channels-last grid (Swin).
_TRANSFORMER_LAYOUTS = ("tokens", "nhwc")


@dataclass(frozen=True)
class Stage:
    """One layer to invert.

    :ivar name: the module's name in the model (``named_modules``); its output is inverted.
    :ivar output_shape: the module's output shape in the probe forward (batch first).
    :ivar order: position of the module's output in the forward's call order.
    :ivar depth: fraction of the network's leaf modules that have run when this output
        exists (0 = at the input, 1 = at the logits); comparable across architectures.
    """

    name: str
    output_shape: tuple[int, ...]
    order: int
    depth: float


class LayerSelectionError(ValueError):
    """A configured layer cannot be inverted; the message says which and what was expected."""


def default_stages(
    model: nn.Module, layers: Sequence[Any], num_classes: int | None, body: str = ""
) -> tuple[list[Stage], list[str]]:
    """The output of each stage of ``model``, in call order, and notes on what was left out.

    Everything is read from the probe's record of calls (``layers``), not from which
    containers a ``forward`` happens to call. The units are the children of the model's body
    (``body``: the qualified name of the network inside single-child wrappers,
    ``Target.body_name``; "" for the model itself; a lone called child is descended too) that
    ran, in call order; a child that never ran itself but whose own children did (a
    ``forward`` looping over ``self.backbone.children()`` or a ``ModuleList``) is replaced by
    those children. A unit is then opened up into its own units when they form more than one
    stage: a ``nn.Sequential`` (so ``features = Sequential(conv, relu, pool, conv, ...)`` yields
    one stage per block while ResNet's ``layer1`` stays whole), and, outside a Sequential, any
    other network whose stages each run once (a ``backbone`` ResNet in front of a ``head``
    yields the ResNet's stages; a residual block, whose shared ReLU runs several times, stays
    whole). A unit whose output is a transformer's stream (``LayerInfo.layout`` of kind
    ``"tokens"`` or ``"nhwc"``) is opened up only when it holds a stack of blocks (a
    ``Sequential`` or ``ModuleList`` of modules with children: torchvision's ViT
    ``encoder``), so a transformer block is never split into its attention and MLP layers.
    Units are then grouped into stages:

    * a unit with weights or children (convolution, linear, residual block) starts a new
      stage unless it keeps the spatial size of the stage it follows: the stages of a CNN are
      its resolution levels (ResNet's ``layer1..4``, VGG's blocks), and every linear layer
      on vectors is a stage of its own (AlexNet's fc6, fc7);
    * a unit on a transformer's stream always starts a new stage: every block of a ViT is a
      stage (its blocks all keep the same grid, so resolution levels would merge them), as
      are the patch embedding and each stage of a Swin (whose blocks stay together inside
      it, as a ResNet's do);
    * activations, normalizations and local pooling belong to the stage they follow, and the
      stage's output is the last of them (VGG's block ends at its max-pool); the one after a
      transformer's last block (its final norm, what the head reads) is a stage of its own;
    * a global pooling (output 1x1) is a stage of its own: it is the embedding a model
      serves, the layer whose leakage matters most;
    * dropout, flatten and identity never end a stage (they do not change the information);
    * the last stage is dropped when it produces the logits (the classifier head), and so is
      a stage whose module runs more than once per forward (its output is ambiguous).

    :param model: the raw model (``target.model``); stage names are qualified inside it.
    :param layers: ``target.layers`` (``LayerInfo(name, module, output_shape, order, layout)`` in call order).
    :param num_classes: the logits' width, to recognize the classifier head.
    :param body: ``target.body_name``.
    :returns: (stages, notes): the stages in call order and human-readable notes on what was skipped.
    """
    calls: dict[str, int] = {}
    first: dict[str, Any] = {}
    for info in layers:
        calls[info.name] = calls.get(info.name, 0) + 1
        first.setdefault(info.name, info)
    modules = dict(model.named_modules())
    leaf_orders = sorted(info.order for info in layers if not any(True for _ in info.module.children()))

    def called_children(prefix: str) -> list[str]:
        names: list[str] = []
        for child, _ in modules[prefix].named_children():
            full = f"{prefix}.{child}" if prefix else child
            # A container that never ran itself hands on the children the forward called.
            names.extend([full] if full in first else called_children(full))
        return sorted(names, key=lambda n: first[n].order)

    units = called_children(body)
    while len(units) == 1 and called_children(units[0]):
        units = called_children(units[0])
    units = _open_units(units, modules, first, calls, called_children, inside_sequential=False)
    groups = _group(units, modules, first)

    notes: list[str] = []
    stages: list[Stage] = []
    for group in groups:
        name = _group_output(group, modules)
        if name is None:
            continue
        if calls[name] > 1:
            notes.append(f"{name} skipped: it runs {calls[name]} times per forward")
            continue
        if not getattr(first[name], "per_image", True):
            notes.append(f"{name} skipped: its first dimension is not the batch (windows or parameters, not images)")
            continue
        stages.append(_stage(first[name], leaf_orders))
    if stages and _is_logits(stages[-1].output_shape, num_classes):
        notes.append(f"{stages[-1].name} skipped: it is the classifier head (outputs the logits)")
        stages.pop()
    return stages, notes


def configured_stages(names: Sequence[str], layers: Sequence[Any]) -> list[Stage]:
    """The configured module names as stages, sorted in call order.

    :raises LayerSelectionError: a name that is not a hookable module with a tensor output
        (listing close names), a module that runs more than once per forward, or a duplicate.
    """
    calls: dict[str, int] = {}
    first: dict[str, Any] = {}
    for info in layers:
        calls[info.name] = calls.get(info.name, 0) + 1
        first.setdefault(info.name, info)
    leaf_orders = sorted(info.order for info in layers if not any(True for _ in info.module.children()))
    seen: set[str] = set()
    stages = []
    for name in names:
        if name in seen:
            raise LayerSelectionError(f"layer {name!r} is configured twice; expected each layer once")
        seen.add(name)
        if name not in first:
            close = difflib.get_close_matches(name, list(first), n=5, cutoff=0.5)
            hint = f"; close names: {close}" if close else f"; hookable layers: {list(first)[:12]}"
            raise LayerSelectionError(
                f"layer {name!r} is not a module of the model with a tensor output{hint}"
            )
        if calls[name] > 1:
            raise LayerSelectionError(
                f"layer {name!r} runs {calls[name]} times per forward, so its output is ambiguous; "
                "expected a module that runs once (pick the module after it)"
            )
        stages.append(_stage(first[name], leaf_orders))
    return sorted(stages, key=lambda s: s.order)


def anchor_stage(layers: Sequence[Any]) -> tuple[Stage | None, str]:
    """The calibration anchor: the earliest feature layer, where the input is still (nearly)
    all there, so that what the optimization reaches there is its own limit, not a loss.

    It is the output of the first ``nn.Conv2d`` in call order (the stem's first convolution),
    else of the first module with a spatial ([B,C,H,W]) output; either must run once per
    forward and must not be a pass-through (identity, dropout).

    :param layers: ``target.layers``, in call order.
    :returns: (stage, source): the anchor and ``"first convolution"`` or ``"first spatial
        layer"``; (None, "") when the model has neither.
    """
    calls: dict[str, int] = {}
    first: dict[str, Any] = {}
    for info in layers:
        calls[info.name] = calls.get(info.name, 0) + 1
        first.setdefault(info.name, info)
    leaf_orders = sorted(info.order for info in layers if not any(True for _ in info.module.children()))
    candidates = sorted(
        (info for name, info in first.items()
         if calls[name] == 1 and len(info.output_shape) == 4 and not isinstance(info.module, _PASSTHROUGH)),
        key=lambda info: info.order,
    )
    for source, wanted in (("first convolution", nn.Conv2d), ("first spatial layer", nn.Module)):
        info = next((i for i in candidates if isinstance(i.module, wanted)), None)
        if info is not None:
            return _stage(info, leaf_orders), source
    return None, ""


def _stage(info: Any, leaf_orders: Sequence[int]) -> Stage:
    depth = sum(1 for o in leaf_orders if o <= info.order) / max(len(leaf_orders), 1)
    return Stage(info.name, tuple(info.output_shape), info.order, depth)


def _open_units(
    units: list[str],
    modules: dict[str, nn.Module],
    first: dict[str, Any],
    calls: dict[str, int],
    called_children: Any,
    *,
    inside_sequential: bool,
) -> list[str]:
    """Replace each unit by its own units where they form more than one stage: always for a
    Sequential; for another module with children only outside Sequentials (a sub-network
    such as a backbone, not a block of a stage), only when each stage's output runs once,
    which a residual block's shared activation does not, and, on a transformer's stream,
    only when it holds a stack of blocks (an encoder, not a block)."""
    out: list[str] = []
    for name in units:
        children = called_children(name)
        sequential = isinstance(modules[name], nn.Sequential)
        block = _in_stream(first[name]) and not _holds_stack(modules[name])
        if children and (sequential or not (inside_sequential or block)):
            expanded = _open_units(
                children, modules, first, calls, called_children, inside_sequential=inside_sequential or sequential
            )
            outputs = [_group_output(g, modules) for g in _group(expanded, modules, first)]
            outputs = [o for o in outputs if o is not None]
            if len(outputs) > 1 and (sequential or all(calls[o] == 1 for o in outputs)):
                out.extend(expanded)
                continue
        out.append(name)
    return out


def _kind(module: nn.Module, shape: tuple[int, ...]) -> str:
    if any(True for _ in module.children()):
        return "compute"
    if isinstance(module, _PASSTHROUGH):
        return "passthrough"
    if _is_global_pool(module, shape):
        return "global_pool"
    if isinstance(module, _NORMALIZATION) or not any(True for _ in module.parameters(recurse=False)):
        return "follower"
    return "compute"


def _is_global_pool(module: nn.Module, shape: tuple[int, ...]) -> bool:
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
    return isinstance(module, pools) and len(shape) == 4 and tuple(shape[2:]) == (1, 1)


def _in_stream(info: Any) -> bool:
    layout = getattr(info, "layout", None)
    return layout is not None and layout.kind in _TRANSFORMER_LAYOUTS


def _holds_stack(module: nn.Module) -> bool:
    # A stack of blocks: a container of modules with children of their own. A transformer
    # block holds none (its MLP, a Sequential in torchvision, holds layers).
    return any(
        isinstance(m, _CONTAINERS) and any(any(True for _ in c.children()) for c in m.children())
        for m in module.modules()
    )


def _group(units: list[str], modules: dict[str, nn.Module], first: dict[str, Any]) -> list[list[str]]:
    kinds = [_kind(modules[name], tuple(first[name].output_shape)) for name in units]
    last_block = max(
        (i for i, (name, kind) in enumerate(zip(units, kinds)) if kind == "compute" and _in_stream(first[name])),
        default=-1,
    )
    groups: list[list[str]] = []
    resolution: tuple[int, ...] | None = None  # spatial size of the current stage's compute units
    has_compute = False
    after_last_block = False  # the current stage is a transformer's last block, nothing after it yet
    for i, (name, kind) in enumerate(zip(units, kinds)):
        shape = tuple(first[name].output_shape)
        spatial = tuple(shape[2:]) if len(shape) == 4 else None
        if kind == "global_pool":
            groups.append([name])
            resolution, has_compute = None, True
            after_last_block = False
        elif kind == "compute":
            if _in_stream(first[name]):
                # a channels-last shape's shape[2:] is no resolution, and no block joins another
                joins = groups and not has_compute
                spatial = None
            else:
                joins = groups and (not has_compute or (spatial is not None and spatial == resolution))
            if joins:
                groups[-1].append(name)
            else:
                groups.append([name])
            resolution, has_compute = spatial, True
            after_last_block = i == last_block
        else:
            if not groups or (kind == "follower" and after_last_block):
                groups.append([])
            groups[-1].append(name)
            after_last_block = after_last_block and kind == "passthrough"
    return groups


def _group_output(group: list[str], modules: dict[str, nn.Module]) -> str | None:
    for name in reversed(group):
        if not isinstance(modules[name], _PASSTHROUGH):
            return name
    return None


def _is_logits(shape: tuple[int, ...], num_classes: int | None) -> bool:
    return num_classes is not None and len(shape) == 2 and shape[-1] == num_classes
