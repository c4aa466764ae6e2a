"""The model under audit, wrapped: pixel-space input with the model's normalization inside,
outputs reduced to logits, capabilities detected once, and the user's model left as found."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from auditkit.errors import TargetError, UsageError
from auditkit.layouts import ActivationLayout, infer_layouts

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NO_INPUT_GRADIENT = (
    "no gradient reaches the input: the model's forward stops it (torch.no_grad(), .detach() or a "
    "non-differentiable step inside forward); white-box checks need input gradients"
)
"""Why a white-box check is skipped on a :class:`Target` whose :attr:`Target.input_gradient` is False."""

DATA_PARALLEL_TYPES: tuple[type[nn.Module], ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)
"""Wrappers that only replicate a network across devices; the Target runs their ``.module``."""

DATA_PARALLEL_PREFIX = "module."
"""The prefix a :data:`DATA_PARALLEL_TYPES` wrapper adds to every key of its network's state_dict."""

_PASSTHROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Identity)
_POOLING = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.LPPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d, nn.AvgPool1d, nn.MaxPool1d,
)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()  # torch >= 2.4
)


def relative_tolerance(dtype: torch.dtype, floor: float = 1e-4) -> float:
    """The relative error an exact identity between two computed quantities may show when the
    model computes in ``dtype``: ``max(floor, 4 * torch.finfo(dtype).eps)``.

    Each side of an identity such as CAM's ``logit_c = mean_ij CAM_c(i,j) + b_c`` is rounded
    to ``dtype`` when the model stores it (the feature map, the logits): up to eps/2 relative
    each time, and the two sides are rounded independently a couple of times, so a few eps is
    what a correct model may miss by; 4 eps covers that without hiding a real departure
    (which is of the order of the features themselves). ``floor`` is what float32 and float64
    models get, where the order of accumulation, not the storage format, dominates. Values:
    1e-4 for float32 (4 eps = 4.8e-7 is below the floor), 3.1e-2 for bfloat16 (eps 7.8e-3),
    3.9e-3 for float16 (eps 9.8e-4).

    :param dtype: a floating torch dtype, e.g. :attr:`Target.compute_dtype`.
    :param floor: the smallest tolerance returned.
    :raises TypeError: ``dtype`` is not a floating dtype.
    """
    return max(float(floor), 4.0 * float(torch.finfo(dtype).eps))


def unwrap_data_parallel(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """The network inside ``nn.DataParallel`` / ``DistributedDataParallel`` wrappers (any
    depth), and one step per wrapper removed, e.g. ``("DataParallel -> module",)``. A model
    without such a wrapper is returned as is with no steps."""
    steps: list[str] = []
    while isinstance(model, DATA_PARALLEL_TYPES):
        steps.append(f"{type(model).__name__} -> module")
        model = model.module
    return model, tuple(steps)


def find_body(model: nn.Module) -> tuple[nn.Module, str, tuple[str, ...]]:
    """Descend single-child wrappers for structure: a module with exactly one child, no
    parameters or buffers of its own, and a child that has children of its own (so it is a
    network, not a layer). Returns the innermost such child (the model itself when it is not
    a wrapper), its qualified name inside ``model`` ("" for the model itself), and one step
    per wrapper descended, e.g. ``("Wrapper.net",)``. Nothing is changed; the forward pass
    still goes through the wrappers."""
    body, names, steps = model, [], []
    while True:
        children = list(body.named_children())
        if len(children) != 1:
            break
        if any(True for _ in body.parameters(recurse=False)) or any(True for _ in body.buffers(recurse=False)):
            break
        name, child = children[0]
        if not any(True for _ in child.children()):
            break
        steps.append(f"{type(body).__name__}.{name}")
        names.append(name)
        body = child
    return body, ".".join(names), tuple(steps)


# -- outputs -> logits ---------------------------------------------------------------------------


def reduce_to_logits(output: Any, num_classes: int | None = None) -> torch.Tensor:
    """Reduce a model's output to its logits tensor [B,K].

    A tensor is returned as is; so are an object's ``.logits`` (Hugging Face outputs,
    torchvision's GoogLeNetOutputs) and a dict's ``"logits"``. Any other output holding several
    tensors (a tuple or list, a dict without ``"logits"``, a dataclass or Hugging Face-style
    output without logits) gives the one tensor of shape [B, ``num_classes``]; with
    ``num_classes`` unknown, the one 2-D tensor among them. A container holding a single
    tensor gives that tensor.

    :raises TargetError: no tensor, or none or several that fit; the message lists every
        tensor's shape and what was expected (an embedding is never taken for the logits).
    """
    return _select_logits(output, num_classes)[0]


def _select_logits(output: Any, num_classes: int | None, batch: int | None = None) -> tuple[torch.Tensor, str | None]:
    """The logits and, when they were chosen among a container's tensors, which ones
    ("output 1 of a tuple of 2")."""
    if isinstance(output, torch.Tensor):
        return output, None
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits, None
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"], None
    if isinstance(output, Mapping):
        kind, items = "dict", [(repr(k), v) for k, v in output.items()]
    elif isinstance(output, (tuple, list)):
        kind, items = type(output).__name__, [(str(i), v) for i, v in enumerate(output)]
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        kind = type(output).__name__
        items = [(repr(f.name), getattr(output, f.name)) for f in dataclasses.fields(output)]
    else:
        raise TargetError(f"model returned {type(output).__name__}; expected a logits tensor [batch, classes]")
    tensors = [(label, v) for label, v in items if isinstance(v, torch.Tensor)]
    if not tensors:
        raise TargetError(
            f"model returned a {kind} of {len(items)} without any tensor; expected a logits tensor [batch, classes]"
        )
    where = f"of a {kind} of {len(items)}"
    if len(tensors) == 1:
        return tensors[0][1], f"output {tensors[0][0]} {where}"

    def fits(t: torch.Tensor) -> bool:
        return (
            t.ndim == 2
            and (batch is None or t.shape[0] == batch)
            and (num_classes is None or t.shape[1] == num_classes)
        )

    matches = [(label, t) for label, t in tensors if fits(t)]
    if len(matches) == 1:
        return matches[0][1], f"output {matches[0][0]} {where}"
    shapes = ", ".join(f"{label}: {list(t.shape)}" for label, t in tensors)
    b = "batch" if batch is None else f"batch={batch}"
    if num_classes is None:
        expected = (
            f"expected logits [{b}, classes] in exactly one 2-D tensor; found {len(matches)}, and the number of "
            "classes that would tell them apart is not known (Target.expect_classes)"
        )
    else:
        expected = f"expected logits [{b}, {num_classes}] in exactly one tensor; found {len(matches)}"
    raise TargetError(f"model returned a {kind} of {len(items)} with tensors {{{shapes}}}; {expected}")


def contiguous_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged on the way forward; on the way back, its gradient in the default
    contiguous (NCHW) memory format, whatever layout the model computed in.

    Third-party attack and attribution code (torchattacks' L2 attacks, captum) flattens input
    gradients with ``.view``, which fails on the channels_last gradient of a channels_last
    model. :class:`Target` applies this to every input; wrap any other model handed to such
    code (a proxy, an adapter) the same way."""
    return _ContiguousGrad.apply(x)


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; the backward hands on the gradient in the default (contiguous NCHW)
    layout, whatever memory format the model computed in. Third-party attack and attribution
    code calls ``.view`` on input gradients, which fails on a channels_last gradient."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()

    @staticmethod
    def vmap(info: Any, in_dims: Any, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return x.view_as(x), in_dims[0]


def _input_gradient(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """The gradient of each image's largest logit with respect to ``x``, or None when none
    reaches it. Decided by what autograd produces, not by the wording of its errors; taken
    w.r.t. ``x`` only, so the parameters' ``.grad`` stay as they are."""
    if not (x.requires_grad and logits.requires_grad):
        return None
    try:
        (grad,) = torch.autograd.grad(logits.float().max(dim=1).values.sum(), x, allow_unused=True)
    except RuntimeError:  # the graph was cut inside forward
        return None
    return grad


def is_normalization(module: nn.Module) -> bool:
    """A normalization layer: torch's (batch, layer, group, local response, RMS norms) or one
    whose class says so (timm's ``LayerNorm2d``, Hugging Face's own)."""
    return isinstance(module, _NORMS) or "Norm" in type(module).__name__


def declared_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The image size ``(H, W)`` a model says it takes, when it says so: timm's
    ``pretrained_cfg["input_size"]`` or a ``patch_embed.img_size``, Hugging Face's
    ``config.image_size``. None for the rest (most CNNs take any size)."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None) if embed is not None and getattr(embed, "strict_img_size", True) else None
    if size is None:
        config = getattr(model, "config", None)
        size = getattr(config, "image_size", None)
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        size = cfg.get("input_size")[-2:] if isinstance(cfg, dict) and cfg.get("input_size") else None
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return (int(size[0]), int(size[1]))
    return None


def _lowest_precision(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    floating = [d for d in dtypes if d.is_floating_point]
    if not floating:
        return torch.float32
    return max(floating, key=lambda d: torch.finfo(d).eps)


@dataclass(frozen=True)
class LayerInfo:
    """A hookable module seen during the probe forward pass, in call order.

    ``layout`` says where the image grid is in the output (channels first or last, or tokens,
    :class:`~auditkit.layouts.ActivationLayout`), or is None, with ``no_grid`` saying why
    (a vector, attention weights, a layer inside a transformer block). ``per_image`` is False
    when the output's first dimension is not the batch (Swin's windows folded into it, a
    tensor computed from the parameters alone): no per-image quantity can be read from it."""

    name: str
    module: nn.Module = field(repr=False, compare=False)
    output_shape: tuple[int, ...]
    order: int
    layout: ActivationLayout | None = None
    no_grid: str | None = None
    per_image: bool = True


@dataclass(frozen=True)
class GapHead:
    """A head detected structurally as global average pooling followed by one linear layer.

    ``pool`` is the pooling module's name: its *input* is the feature map f_k(i,j) that the
    class activation map is built from. ``weight`` [K,C] and ``bias`` [K] are the linear
    layer's parameters (views of the model's own; never modify them). ``feature_shape`` is
    the feature map's ``(C, h, w)``.

    Transformers pool over tokens or a channels-last grid: ``layout`` then says where the
    grid is in the feature tensor (:class:`~auditkit.layouts.ActivationLayout`; None means
    channels first), and ``features`` whether the feature map is the ``"pool input"`` (a
    pooling module, as timm's Swin head) or the ``"layer output"`` of the module ``pool``
    names, when ``forward`` takes the mean over the patch tokens itself (timm's ViT with
    ``global_pool="avg"``: ``x[:, num_prefix_tokens:].mean(1)``). The mean over the grid is
    then global average pooling, and the CAM identities hold as for a CNN.

    ``feature_layer`` names the module whose output the feature map is (ResNet's ``layer4``),
    when the probe saw one; Grad-CAM at that layer explains the same tensor."""

    pool: str
    linear: str
    weight: torch.Tensor = field(repr=False)
    bias: torch.Tensor | None = field(repr=False)
    feature_shape: tuple[int, ...]
    between: tuple[str, ...] = ()
    layout: ActivationLayout | None = None
    features: str = "pool input"
    feature_layer: str | None = None


@runtime_checkable
class AuditTarget(Protocol):
    """What every model under audit offers, white box (:class:`Target`) or black box
    (:class:`BlackBoxTarget`): what a check may rely on without knowing which it has.

    :ivar name: the model's name in the reports ("target", "resnet18"...).
    :ivar role: ``"target"`` (the user's model) or ``"baseline"``.
    :ivar spec: how the model was given (a spec string, a file, a class name).
    :ivar device: where images must be for :meth:`query` and ``__call__``.
    :ivar white_box: True for a :class:`Target`: gradients and layers may be available
        (see :attr:`capabilities`).
    :ivar returns: ``"scores"`` (a score per class) or ``"labels"`` (a class per image).
    :ivar num_classes: K, once known (after :meth:`probe`), else None.
    :ivar input_size: the input size the model expects, ``(C, H, W)``, when known.
    :ivar queries: images sent through :meth:`query` so far (the black-box query count).
    :ivar capabilities: what the model supports, among ``"scores"``, ``"white_box"``
        (input gradients), ``"layers"`` (hookable modules), ``"gap_head"``; checks name
        the ones they need in ``Check.requires``.
    """

    name: str
    role: str
    spec: str
    device: torch.device
    white_box: bool
    returns: str
    num_classes: int | None
    input_size: tuple[int, ...] | None
    queries: int

    @property
    def capabilities(self) -> frozenset[str]: ...

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[B,K]`` (probabilities) or labels ``[B]`` for images ``[B,3,H,W]`` in
        [0,1] on :attr:`device`, without gradients; counts the images in :attr:`queries`."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Target:
    """A white-box model under audit.

    Call it with images in [0,1] pixel space, float [B,3,H,W] on :attr:`device`; it
    normalizes, runs the model and returns float32 logits [B,K]. Gradients flow to the input
    and come back contiguous (NCHW) whatever the model's memory format, so attacks and
    inversions work in pixel space. :meth:`query` is the black-box view of the same model (no
    gradients, softmax scores, every image counted in :attr:`queries`).

    ``nn.DataParallel`` / ``DistributedDataParallel`` wrappers are removed when the Target is
    built: :attr:`model` is the network inside, and layer names (:attr:`layers`,
    :meth:`layer`, :meth:`capture`) are qualified names inside :attr:`model`. Single-child
    wrappers stay in the forward pass but are seen through for structure (:attr:`body`).

    Attributes set when the Target is built:

    :ivar model: the module run by the forward pass (the user's model, DataParallel removed).
    :ivar body: the innermost network of :attr:`model` whose children are the model's blocks
        (single-child wrappers without parameters or buffers of their own descended).
    :ivar body_name: :attr:`body`'s qualified name inside :attr:`model`; "" when the model is
        its own body.
    :ivar unwrapped: the steps taken to reach :attr:`body`, in words, e.g.
        ``("DataParallel -> module", "Wrapper.net")``; empty when none.
    :ivar num_classes_hint: the number of classes the data has (:meth:`expect_classes`), used
        to pick the logits among several output tensors; None when unknown.

    Attributes set by :meth:`probe`:

    :ivar num_classes: K, the size of the logits.
    :ivar output_choice: which of several output tensors are the logits, in words
        ("output 1 of a tuple of 2"); None when the model returns the logits directly.
    :ivar compute_dtype: the lowest-precision floating dtype among the recorded layer outputs
        and the logits: float32 for an ordinary model, bfloat16 under bf16 autocast, float16
        for a ``.half()`` model. Tolerances of exact identities: :func:`relative_tolerance`.
    :ivar input_gradient: whether a gradient reached the input in the probe's backward pass
        (autograd produced a tensor for it; its values, zero or not, are the white-box checks'
        to judge); when False, ``"white_box"`` is not among :attr:`capabilities` (True until
        the probe has tested it).
    :ivar gap_head_reason: why no GAP head was found, in words; None when one was found.
    """

    white_box = True

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str = "target",
        role: str = "target",
        spec: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        input_size: Sequence[int] | None = None,
        hookable: bool = True,
        description: str = "",
        num_classes_hint: int | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Target needs a torch.nn.Module, got {type(model).__name__}")
        self._user_model = model  # what restore() puts back; DataParallel wrappers included
        self.model, parallel_steps = unwrap_data_parallel(model)
        self.body, self.body_name, body_steps = find_body(self.model)
        self.unwrapped: tuple[str, ...] = parallel_steps + body_steps
        self.name = name
        self.role = role
        self.spec = spec or type(model).__name__
        self.device = torch.device(device)
        self.description = description
        self.info: dict[str, Any] = {}  # provenance shown in reports (e.g. how a baseline was trained)
        self.hookable = hookable
        self.input_size = tuple(input_size) if input_size is not None else None
        # The model's own evaluation preprocessing (an auditkit.data.preprocess.Preprocess, e.g.
        # from its pretrained weights' transforms()), when the loader knows it; the data is
        # brought to it (AuditData.fit_to). None: the images keep their native size if they can.
        self.expected_preprocess: Any = None
        self.num_classes: int | None = None
        self.num_classes_hint: int | None = None
        if num_classes_hint is not None:
            self.expect_classes(num_classes_hint)
        self.output_choice: str | None = None
        self.compute_dtype: torch.dtype = torch.float32
        self.input_gradient = True
        self.gap_head_reason: str | None = None
        self.queries = 0
        mean_t = torch.zeros(3) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(3) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean_t.numel() not in (1, 3) or std_t.numel() not in (1, 3) or bool((std_t <= 0).any()):
            raise ValueError(f"normalization must be 1 or 3 values with std > 0, got mean={mean}, std={std}")
        self.mean_std = (tuple(mean_t.reshape(-1).tolist()), tuple(std_t.reshape(-1).tolist()))
        self._mean = mean_t.reshape(1, -1, 1, 1)
        self._std = std_t.reshape(1, -1, 1, 1)
        self._layers: list[LayerInfo] | None = None
        self._gap_head: GapHead | None = None
        self._saved: tuple[dict[str, bool], torch.device | None] | None = None

    def expect_classes(self, num_classes: int) -> None:
        """Tell the Target how many classes the data has, before :meth:`probe`: when the model
        returns several tensors, the logits are the one of shape [B, ``num_classes``].

        :raises ValueError: ``num_classes`` is not a positive integer.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes_hint = num_classes

    # -- lifecycle: enter puts the model in eval mode on the device, exit restores it ----------

    def __enter__(self) -> "Target":
        modes = {n: m.training for n, m in self._user_model.named_modules()}
        first = next(iter(self._user_model.parameters()), None)
        self._saved = (modes, None if first is None else first.device)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # torch.export modules refuse .eval()
            self.model.eval()
        self.model.to(self.device)
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the user's model back: training flags per module (wrappers included) and the
        original device."""
        if self._saved is None:
            return
        modes, device = self._saved
        if device is not None:
            self.model.to(device)
        for n, m in self._user_model.named_modules():
            if n in modes:
                m.training = modes[n]
        self._saved = None

    # -- forward ---------------------------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0].float()

    forward = __call__

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str | None]:
        """The model's logits in the dtype it computed them in, and which output they were."""
        if x.ndim != 4:
            raise TargetError(f"{self.name}: expected images [batch, 3, H, W], got shape {list(x.shape)}")
        if x.requires_grad and torch.is_grad_enabled():
            x = _ContiguousGrad.apply(x)
        inputs = self.normalize(x)
        dtype = self._parameter_dtype()
        if dtype is not None and dtype != torch.float32 and inputs.dtype != dtype:
            inputs = inputs.to(dtype)  # a .half() / bfloat16 model takes inputs of its own dtype
        try:
            out = self.model(inputs.contiguous())
        except RuntimeError as exc:  # a shape mismatch inside torch
            raise self._rejected(x, exc) from exc
        try:
            logits, choice = _select_logits(out, self.num_classes_hint, batch=int(x.shape[0]))
        except TargetError as exc:
            raise TargetError(f"{self.name}: {exc}") from None
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise TargetError(
                f"{self.name}: expected logits [batch={x.shape[0]}, classes], got shape {list(logits.shape)}"
            )
        return logits, choice

    def _rejected(self, x: torch.Tensor, exc: BaseException) -> TargetError:
        """The one-line error for a model that refused the images ``x``."""
        first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        if self.input_size is not None and tuple(x.shape[1:]) != tuple(self.input_size):
            error = TargetError(
                f"{self.name}: model rejected input of shape {list(x.shape[1:])}; it expects {list(self.input_size)} ({first})"
            )
            error.expected_size = tuple(int(s) for s in self.input_size[-2:])
            return error
        declared = declared_input_size(self.model)
        hint = f"; the model declares {declared[0]}x{declared[1]} px input" if declared and tuple(x.shape[-2:]) != declared else ""
        error = TargetError(f"{self.name}: model rejected input of shape {list(x.shape[1:])}: {first}{hint}")
        error.expected_size = declared if hint else None
        return error

    def _parameter_dtype(self) -> torch.dtype | None:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Black-box access: softmax scores [B,K], no gradients; counts every image queried."""
        self.queries += int(x.shape[0])
        return torch.softmax(self(x).float(), dim=1)

    returns = "scores"

    # -- capabilities ----------------------------------------------------------------------

    def probe(self, example: torch.Tensor) -> torch.Tensor:
        """Run one forward pass on ``example`` (on the device), recording every module's output
        shape in call order, the compute dtype and the GAP head (or why there is none), and
        one backward pass from the largest logit of each image to test whether a gradient
        reaches the input (:attr:`input_gradient`; the parameters' ``.grad`` are left
        untouched). Returns the float32 logits, detached.

        :raises TargetError: the model rejects the images or its output holds no logits (see
            :func:`reduce_to_logits`).
        """
        calls: list[tuple[str, nn.Module, Any, Any]] = []
        handles = []
        if self.hookable:
            try:
                for name, module in self.model.named_modules():
                    if name:
                        handles.append(module.register_forward_hook(_Recorder(calls, name)))
            except (RuntimeError, NotImplementedError, AttributeError):  # e.g. TorchScript modules
                self.hookable = False
        x = example.detach().clone().requires_grad_(True) if example.is_floating_point() else example
        grad = None
        try:
            try:
                with torch.enable_grad():
                    logits, self.output_choice = self._forward(x)
                    grad = _input_gradient(logits, x)
            except (AssertionError, ValueError) as exc:
                # A model that checks its input itself (timm's ViT asserts the image size,
                # Hugging Face's raises ValueError): the first forward is where that shows.
                raise self._rejected(example, exc) from exc
            except (RuntimeError, TargetError):
                # A forward that cannot run with gradients on (e.g. .numpy() inside): no gradient
                # reaches the input. Run it as the audit will, without them; its errors are real.
                calls.clear()
                with torch.no_grad():
                    logits, self.output_choice = self._forward(example)
        finally:
            for h in handles:
                h.remove()
        logits = logits.detach()
        self.num_classes = int(logits.shape[1])
        if self.input_size is None:
            self.input_size = tuple(int(s) for s in example.shape[1:])
        recorded = [(i, name, module, tuple(out.shape)) for i, (name, module, out, _) in enumerate(calls) if isinstance(out, torch.Tensor)]
        batch = int(example.shape[0])
        layouts = infer_layouts([(name, module, shape) for _, name, module, shape in recorded], tuple(example.shape[-2:]), batch)
        self._layers = [
            LayerInfo(name, module, shape, i, layout, why, per_image=bool(shape) and shape[0] == batch)
            for (i, name, module, shape), (layout, why) in zip(recorded, layouts)
        ]
        self.compute_dtype = _lowest_precision([logits.dtype] + [out.dtype for _, _, out, _ in calls if out is not None])
        if self.hookable:
            layout_of = {i: layout for (i, *_), (layout, _) in zip(recorded, layouts)}
            self._gap_head, self.gap_head_reason = _detect_gap_head(calls, self.num_classes, layout_of)
        else:
            self._gap_head = None
            self.gap_head_reason = "its layers cannot be hooked (TorchScript or torch.export), so its head cannot be seen"
        # A gradient that exists but is zero or non-finite (a quantizing step, a saturated or
        # constant model) still reaches the input: that is gradient masking, which the white-box
        # checks exist to measure and flag, not a reason to skip them.
        self.input_gradient = grad is not None
        return logits.float()

    @property
    def layers(self) -> list[LayerInfo]:
        """Hookable modules with a tensor output, in call order (empty when not hookable)."""
        if self._layers is None:
            raise RuntimeError("Target.probe() has not run yet")
        return self._layers

    def layer(self, name: str) -> nn.Module:
        """The module named ``name`` inside :attr:`model` (DataParallel's ``module.`` prefix is
        not part of the name).

        :raises KeyError: no such module; the message suggests similar names."""
        modules = dict(self.model.named_modules())
        if name not in modules or not name:
            near = [n for n in modules if n and name.split(".")[-1] in n][:5]
            if name.startswith(DATA_PARALLEL_PREFIX) and name[len(DATA_PARALLEL_PREFIX):] in modules:
                near = [name[len(DATA_PARALLEL_PREFIX):]]  # a DataParallel-qualified name
            raise KeyError(f"{self.name} has no layer {name!r}" + (f"; similar: {near}" if near else ""))
        return modules[name]

    @property
    def gap_head(self) -> GapHead | None:
        return self._gap_head

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"scores"}
        if self.input_gradient:
            caps.add("white_box")
        if self.hookable and self._layers:
            caps.add("layers")
        if self._gap_head is not None:
            caps.add("gap_head")
        return frozenset(caps)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        probed = self._layers is not None
        return {
            "name": self.name,
            "role": self.role,
            "spec": self.spec,
            "params": self.num_params(),
            "white_box": self.white_box,
            "gap_head": self._gap_head is not None,
            "input_size": list(self.input_size) if self.input_size else None,
            "num_classes": self.num_classes,
            "normalization": {"mean": list(self.mean_std[0]), "std": list(self.mean_std[1])},
            "input_gradient": self.input_gradient,
            **({"compute_dtype": str(self.compute_dtype).removeprefix("torch.")} if probed else {}),
            **({"output": self.output_choice} if self.output_choice else {}),
            **({"unwrapped": list(self.unwrapped)} if self.unwrapped else {}),
            **({"gap_head_reason": self.gap_head_reason} if probed and self.gap_head_reason else {}),
            **({"info": self.info} if self.info else {}),
        }

    @contextlib.contextmanager
    def capture(self, *names: str) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of the named layers during forward passes inside the block::

            with target.capture("layer4") as feats:
                logits = target(x)
            feats["layer4"]  # [B,C,H,W], still attached to the graph

        Hooks are removed when the block ends, whatever happens inside it."""
        store: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for name in names:
                handles.append(self.layer(name).register_forward_hook(_storer(store, name)))
            yield store
        finally:
            for h in handles:
                h.remove()


class _MalformedAnswer(TargetError):
    """A black box answered something that is neither scores nor labels."""


class BlackBoxTarget:
    """A model known only through its answers: ``predict(images in [0,1]) -> scores [B,K]``
    (``returns="scores"``) or labels [B] (``returns="labels"``). No gradients, no layers.
    Every image sent is counted in :attr:`queries`."""

    white_box = False
    hookable = False
    gap_head = None
    gap_head_reason = "the model is a black box: its layers cannot be seen"
    input_gradient = False
    unwrapped: tuple[str, ...] = ()

    def __init__(
        self,
        predict: Callable[[torch.Tensor], Any],
        *,
        returns: str = "scores",
        name: str = "target",
        role: str = "target",
        spec: str | None = None,
        num_classes: int | None = None,
        input_size: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
        description: str = "",
    ):
        if returns not in ("scores", "labels"):
            raise ValueError(f"returns must be 'scores' or 'labels', got {returns!r}")
        self.predict = predict
        self.returns = returns
        self.name = name
        self.role = role
        self.spec = spec or getattr(predict, "__name__", type(predict).__name__)
        self.num_classes = num_classes
        self.num_classes_hint: int | None = None
        self.input_size = tuple(input_size) if input_size is not None else None
        self.device = torch.device(device)
        self.description = description
        self.queries = 0
        self.layers: list[LayerInfo] = []

    def expect_classes(self, num_classes: int) -> None:
        """The number of classes the data has (as :meth:`Target.expect_classes`); recorded in
        :attr:`num_classes_hint`. A black box's scores are one tensor, so nothing is chosen by it.

        :raises ValueError: ``num_classes`` is not a positive integer.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes_hint = num_classes

    def __enter__(self) -> "BlackBoxTarget":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def restore(self) -> None:
        pass

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Scores [B,K] (``returns="scores"``) or labels [B] (``returns="labels"``), on :attr:`device`.

        :raises TargetError: the black box answered something else (strings, None, a dict,
            another shape, non-integer labels); the message names what came back.
        """
        self.queries += int(x.shape[0])
        answer = self.predict(x)
        batch = int(x.shape[0])
        if self.returns == "labels":
            expected = f"expected labels, a [{batch}] array of integer class indices"
        else:
            expected = (
                f"expected scores, a [{batch}, num_classes] array of numbers (a [{batch}] array of integer labels "
                "needs returns='labels')"
            )
        try:
            out = torch.as_tensor(answer, device=self.device)
        except (TypeError, ValueError, RuntimeError, OverflowError):  # strings, None, dicts, ragged rows
            raise _MalformedAnswer(f"{self.name}: the black box returned {_describe_answer(answer)}; {expected}") from None
        numeric = not (out.is_complex() or out.dtype == torch.bool)
        if self.returns == "labels":
            if not numeric or out.ndim != 1 or out.shape[0] != batch:
                raise _MalformedAnswer(f"{self.name}: the black box returned {_describe_answer(answer, out)}; {expected}")
            if out.is_floating_point() and not bool((out == out.round()).all()):
                raise _MalformedAnswer(
                    f"{self.name}: the black box returned labels that are not all integers "
                    f"({_describe_answer(answer, out)}); {expected}"
                )
            return out.long()
        if not numeric or out.ndim != 2 or out.shape[0] != batch:
            raise _MalformedAnswer(f"{self.name}: the black box returned {_describe_answer(answer, out)}; {expected}")
        return out.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise TargetError(f"{self.name} is a black box: it has no gradients, only query()")

    def probe(self, example: torch.Tensor) -> torch.Tensor:
        """Query ``example`` once, uncounted, to learn the number of classes and input size.

        :raises UsageError: the answer is not scores [B,K] or labels [B] (as :meth:`query`
            says): what was given as the model does not answer as a black box must.
        """
        try:
            out = self.query(example)
        except _MalformedAnswer as exc:
            raise UsageError(str(exc)) from None
        self.queries -= int(example.shape[0])  # the probe is the host's, not a check's
        if self.returns == "scores":
            self.num_classes = int(out.shape[1])
        if self.input_size is None:
            self.input_size = tuple(int(s) for s in example.shape[1:])
        return out

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"scores"} if self.returns == "scores" else set())

    def num_params(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "spec": self.spec,
            "params": None,
            "white_box": False,
            "gap_head": False,
            "input_size": list(self.input_size) if self.input_size else None,
            "num_classes": self.num_classes,
            "returns": self.returns,
        }


def _describe_answer(answer: Any, as_tensor: torch.Tensor | None = None) -> str:
    """What a black box returned, for an error message: its type, and its shape and dtype or
    its first value. ``as_tensor``: the answer converted, to give the shape of nested lists."""
    if answer is None:
        return "None"
    if isinstance(answer, torch.Tensor):
        return f"a tensor of dtype {str(answer.dtype).removeprefix('torch.')} and shape {list(answer.shape)}"
    kind = type(answer).__name__
    if isinstance(answer, Mapping):
        return f"{_article(kind)} {kind} with keys {_SHORT.repr(list(answer)[:5])}"
    shape, dtype = getattr(answer, "shape", None), getattr(answer, "dtype", None)
    if shape is not None and dtype is not None:  # a NumPy array, or another library's tensor
        first = next(iter(getattr(answer, "flat", ())), None)
        first = first.item() if hasattr(first, "item") else first
        return f"an array ({kind}) of dtype {dtype} and shape {list(shape)}, first value {_SHORT.repr(first)}"
    if isinstance(answer, (list, tuple)):
        if not answer:
            return f"an empty {kind}"
        shape_text = f" (shape {list(as_tensor.shape)})" if as_tensor is not None else ""
        return (
            f"a {kind} of {len(answer)} items of type {type(answer[0]).__name__}{shape_text}, "
            f"first {_SHORT.repr(answer[0])}"
        )
    return f"{_article(kind)} {kind}, {_SHORT.repr(answer)}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist = 40, 40, 4


class _Recorder:
    """Forward hook that appends (name, module, output, first input) to a call list."""

    def __init__(self, calls: list, name: str):
        self.calls, self.name = calls, name

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        self.calls.append((self.name, module, output if isinstance(output, torch.Tensor) else None, first))


def _storer(store: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        store[name] = output

    return hook


def _detect_gap_head(
    calls: list[tuple[str, nn.Module, Any, Any]], num_classes: int, layout_of: Mapping[int, ActivationLayout | None] | None = None
) -> tuple[GapHead | None, str | None]:
    """Structural detection: the last module called is a Linear producing the logits, and the
    only modules between it and a global average pool are pass-throughs (dropout, flatten,
    identity). Returns the head, or None and why there is none. Numerical confirmation (does
    the CAM identity hold?) is the CAM check's job.

    A pool over tokens or a channels-last grid (``layout_of``: the layout of each call's
    output, by position in ``calls``) counts when its output is, on the probe's images, the
    mean over the grid positions of its input; so does ``forward``'s own mean over the patch
    tokens of the last layer before the linear one."""
    layout_of = layout_of or {}
    # Only leaf modules matter: a container's call wraps its children's.
    leaves = [(i, c) for i, c in enumerate(calls) if not any(True for _ in c[1].children())]
    # pass-throughs after the linear layer (timm's ClassifierHead ends with an Identity flatten)
    while len(leaves) > 1 and isinstance(leaves[-1][1][1], _PASSTHROUGH) and _is_logits(leaves[-1][1][2], num_classes):
        leaves.pop()
    positions = [i for i, _ in leaves]
    leaves = [c for _, c in leaves]
    if not leaves:
        return None, "no layer ran as a module during the probe, so its head cannot be seen"
    lin_name, lin, lin_out, lin_in = leaves[-1]
    if not isinstance(lin, nn.Linear):
        return None, f"the last layer is {type(lin).__name__} ('{lin_name}'), not Linear"
    if lin_out is None or lin_out.ndim != 2 or lin_out.shape[-1] != num_classes:
        shape = None if lin_out is None else list(lin_out.shape[1:])
        return None, f"the last layer '{lin_name}' outputs {shape}, not the {num_classes} logits"
    between: list[str] = []
    blocker = None
    for position in range(len(leaves) - 2, -1, -1):
        name, module, out, feat = leaves[position]
        if isinstance(module, _PASSTHROUGH):
            between.append(name)
            continue
        if _is_global_avg_pool(module, feat, out):
            if feat.shape[1] != lin.in_features:
                return None, (
                    f"the pooled feature map of '{name}' has {feat.shape[1]} channels but the linear layer "
                    f"'{lin_name}' takes {lin.in_features} inputs"
                )
            return GapHead(
                pool=name,
                linear=lin_name,
                weight=lin.weight,
                bias=lin.bias,
                feature_shape=tuple(int(s) for s in feat.shape[1:]),
                between=tuple(reversed(between)),
                feature_layer=_producer(calls, positions[position], feat),
            ), None
        grid = _grid_mean(calls, positions[position], layout_of, lin, lin_in)
        if grid is not None:
            layout, features, source = grid
            pools_input = features is feat
            return GapHead(
                pool=name if pools_input else calls[source][0],
                linear=lin_name,
                weight=lin.weight,
                bias=lin.bias,
                feature_shape=(int(features.shape[-1]), *layout.grid),
                between=tuple(reversed(between + ([] if source == positions[position] or pools_input else [name]))),
                layout=layout,
                features="pool input" if pools_input else "layer output",
                feature_layer=_producer(calls, positions[position], feat) if pools_input else calls[source][0],
            ), None
        blocker = position
        break
    if blocker is not None:
        why = _why_no_token_head(calls, positions[blocker], layout_of, lin_name, lin_in)
        if why is not None:
            return None, why
    return None, _why_no_gap_head(calls, leaves, blocker)


def _why_no_token_head(
    calls: list[tuple[str, nn.Module, Any, Any]],
    position: int,
    layout_of: Mapping[int, ActivationLayout | None],
    lin_name: str,
    lin_in: Any,
) -> str | None:
    """Why a transformer's head is no GAP head: it reads the class token, or a norm sits
    between the mean over the grid and the linear layer (timm's ``fc_norm``). None when
    neither is what the probe saw."""
    name, module, out, feat = calls[position]
    layout = layout_of.get(position)
    if (
        layout is not None and layout.kind == "tokens" and layout.prefix_tokens > 0
        and isinstance(lin_in, torch.Tensor) and lin_in.ndim == 2 and out.shape[-1] == lin_in.shape[-1]
        and torch.allclose(lin_in.detach().float(), out[:, 0].detach().float(), rtol=1e-5, atol=1e-6)
    ):
        return (
            f"the linear layer '{lin_name}' reads the class token of '{name}', not a mean over the image grid, so "
            "there is no class activation map"
        )
    if not isinstance(feat, torch.Tensor) or feat.ndim != 2:
        return None
    for i in range(position - 1, -1, -1):
        source = layout_of.get(i)
        src_out = calls[i][2]
        if source is None or source.kind == "nchw" or src_out.shape[-1] != feat.shape[-1]:
            continue
        try:
            mean = source.to_nchw(src_out.detach()).float().mean(dim=(2, 3))
        except ValueError:
            continue
        if mean.shape == feat.shape and torch.allclose(mean, feat.detach().float(), rtol=1e-4, atol=1e-5):
            kind = "norm" if is_normalization(module) else "layer"
            return (
                f"a {kind} ({type(module).__name__} '{name}') sits between the mean over the grid of '{calls[i][0]}' "
                f"and the linear layer '{lin_name}'"
            )
        break
    return None


def _producer(calls: list[tuple[str, nn.Module, Any, Any]], position: int, tensor: Any) -> str | None:
    """The module whose output ``tensor`` is, the last before the call at ``position`` (a
    container returning its last child's output wins over the child, as in the layer choice)."""
    for i in range(position - 1, -1, -1):
        if calls[i][2] is tensor:
            return calls[i][0]
    return None


def _is_logits(out: Any, num_classes: int) -> bool:
    return isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[-1] == num_classes


def _grid_mean(
    calls: list[tuple[str, nn.Module, Any, Any]],
    position: int,
    layout_of: Mapping[int, ActivationLayout | None],
    lin: nn.Linear,
    lin_in: Any,
) -> tuple[ActivationLayout, torch.Tensor, int] | None:
    """The layout, the tensor whose mean over the grid is what the linear layer ``lin`` reads,
    and the position of the call that produced it, when the call at ``position`` is such a
    mean or produced the tensor that is averaged; None otherwise. Three cases, read on the
    probe's images to float rounding: ``forward`` takes the mean of this call's output (timm's
    ViT with ``global_pool="avg"``); this module pools its input (timm's Swin head); this
    module pools the last grid output after ``forward`` rearranged it (Hugging Face's Swin
    transposes its tokens for an ``AdaptiveAvgPool1d``)."""
    name, module, out, feat = calls[position]
    if out is None:
        return None
    candidates = []
    own = layout_of.get(position)
    if own is not None and own.kind != "nchw" and isinstance(lin_in, torch.Tensor):
        candidates.append((own, out, lin_in, position))
    if isinstance(feat, torch.Tensor):
        source = [i for i in range(position) if calls[i][2] is feat]
        layout = layout_of.get(source[-1]) if source else None
        if layout is not None and layout.kind != "nchw":
            candidates.append((layout, feat, out, source[-1]))
        elif not source and isinstance(module, _POOLING):
            last = [i for i in range(position) if (layout_of.get(i) is not None and layout_of[i].kind != "nchw")]
            if last:
                candidates.append((layout_of[last[-1]], calls[last[-1]][2], out, last[-1]))
    for layout, features, pooled, source_position in candidates:
        if features.shape[-1] != lin.in_features:
            continue
        try:
            mean = layout.to_nchw(features.detach()).float().mean(dim=(2, 3))
        except ValueError:
            continue
        pooled = pooled.detach().float()
        if pooled.reshape(mean.shape[0], -1).shape == mean.shape and torch.allclose(
            pooled.reshape(mean.shape), mean, rtol=1e-4, atol=1e-5 * float(mean.abs().max().clamp_min(1))
        ):
            return layout, features, source_position
    return None


def _why_no_gap_head(calls: list[tuple[str, nn.Module, Any, Any]], leaves: list, blocker: int | None) -> str:
    """Why the layers before the final Linear (``leaves[-1]``) are no GAP head; ``blocker`` is
    the position in ``leaves`` of the last non-pass-through layer before it (None: none ran)."""
    lin_name, lin, _, lin_in = leaves[-1]
    # The head: the layers after the last spatial (or token) output, all working on vectors.
    head = []
    for name, module, out, _ in reversed(leaves):
        if out is not None and out.ndim >= 3 and math.prod(out.shape[2:]) > 1:
            break
        head.append((name, module))
    linears = [name for name, module in head if isinstance(module, nn.Linear)]
    if len(linears) > 1:
        return f"the head has {len(linears)} linear layers (a fully connected head, as AlexNet's)"

    functional = _functional_pooling(calls, lin, lin_in)
    if functional is not None:
        return (
            f"the pooling is functional (F.adaptive_avg_pool2d or a mean over H, W inside forward, after "
            f"'{functional}'): there is no pooling module whose input is the feature map f_k(i,j) that CAM needs"
        )
    if blocker is None:
        return f"nothing runs as a module before the linear layer '{lin_name}', so no pooling can be seen"
    b_name, b_module, b_out, _ = leaves[blocker]
    # A global average pool further back, with something other than a pass-through after it?
    for name, module, out, feat in reversed(leaves[:blocker]):
        if _is_global_avg_pool(module, feat, out):
            kind = "norm" if is_normalization(b_module) else (
                "nonlinearity" if type(b_module).__module__ == nn.modules.activation.__name__ else "layer"
            )
            return (
                f"a {kind} ({type(b_module).__name__} '{b_name}') sits between the pooling '{name}' and the "
                f"linear layer '{lin_name}'"
            )
        if isinstance(module, nn.Linear) or (out is not None and out.ndim >= 3 and math.prod(out.shape[2:]) > 1):
            break
    if isinstance(b_module, _POOLING):
        shape = None if b_out is None else list(b_out.shape[1:])
        return (
            f"the pooling '{b_name}' is {type(b_module).__name__} with output {shape}, not global average "
            "pooling to 1x1"
        )
    shape = None if b_out is None else list(b_out.shape[1:])
    return (
        f"the layer before the linear layer '{lin_name}' is {type(b_module).__name__} '{b_name}' (output "
        f"{shape}), not global average pooling"
    )


def _functional_pooling(calls: list[tuple[str, nn.Module, Any, Any]], lin: nn.Linear, lin_in: Any) -> str | None:
    """The name of the module whose feature map forward() pools without a module: the last
    module output of shape [B,C,H,W] with H*W > 1, when the final Linear reads [B,C] and only
    pass-throughs ran between the two. None when that is not what happened."""
    if not isinstance(lin_in, torch.Tensor) or lin_in.ndim != 2:
        return None
    last = None
    for position, (_, _, out, _) in enumerate(calls):
        if out is not None and out.ndim == 4:
            last = position
    if last is None:
        return None
    name, _, out, _ = calls[last]
    if math.prod(out.shape[2:]) <= 1 or out.shape[1] != lin_in.shape[1] or out.shape[1] != lin.in_features:
        return None
    after = [m for _, m, _, _ in calls[last + 1:] if m is not lin and not any(True for _ in m.children())]
    if any(not isinstance(module, _PASSTHROUGH) for module in after):
        return None
    return name


def _is_global_avg_pool(module: nn.Module, feat: Any, out: Any) -> bool:
    if not isinstance(feat, torch.Tensor) or feat.ndim != 4 or not isinstance(out, torch.Tensor):
        return False
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return all(s == 1 for s in size)
    if isinstance(module, nn.AvgPool2d):
        return out.shape[-2:] == (1, 1) and math.prod(out.shape[-2:]) == 1
    return False
