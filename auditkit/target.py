"""The model under audit, wrapped: pixel-space input with the model's normalization inside,
outputs reduced to logits, capabilities detected once, and the user's model left as found."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from auditkit.errors import TargetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PASSTHROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Identity)


def reduce_to_logits(output: Any) -> torch.Tensor:
    """Reduce a model's output to its logits tensor: a tensor as is; an object with
    ``.logits`` (Hugging Face outputs, torchvision GoogLeNetOutputs); a dict's ``logits`` key
    or its only tensor; a tuple's or list's first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict):
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        raise TargetError(f"model returned a dict without a 'logits' key (keys: {sorted(output)}); expected logits")
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TargetError(f"model returned {type(output).__name__}; expected a logits tensor [batch, classes]")


@dataclass(frozen=True)
class LayerInfo:
    """A hookable module seen during the probe forward pass, in call order."""

    name: str
    module: nn.Module = field(repr=False, compare=False)
    output_shape: tuple[int, ...]
    order: int


@dataclass(frozen=True)
class GapHead:
    """A head detected structurally as global average pooling followed by one linear layer.

    ``pool`` is the pooling module's name: its *input* is the feature map f_k(i,j) that the
    class activation map is built from. ``weight`` [K,C] and ``bias`` [K] are the linear
    layer's parameters (views of the model's own; never modify them)."""

    pool: str
    linear: str
    weight: torch.Tensor = field(repr=False)
    bias: torch.Tensor | None = field(repr=False)
    feature_shape: tuple[int, ...]
    between: tuple[str, ...] = ()


class Target:
    """A white-box model under audit.

    Call it with images in [0,1] pixel space, float [B,3,H,W] on :attr:`device`; it
    normalizes, runs the model and returns logits [B,K]. Gradients flow to the input, so
    attacks and inversions work in pixel space. :meth:`query` is the black-box view of the
    same model (no gradients, softmax scores, every image counted in :attr:`queries`).
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
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Target needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.name = name
        self.role = role
        self.spec = spec or type(model).__name__
        self.device = torch.device(device)
        self.description = description
        self.info: dict[str, Any] = {}  # provenance shown in reports (e.g. how a baseline was trained)
        self.hookable = hookable
        self.input_size = tuple(input_size) if input_size is not None else None
        self.num_classes: int | None = None
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

    # -- lifecycle: enter puts the model in eval mode on the device, exit restores it ----------

    def __enter__(self) -> "Target":
        modes = {n: m.training for n, m in self.model.named_modules()}
        first = next(iter(self.model.parameters()), None)
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
        """Put the user's model back: training flags per module and the original device."""
        if self._saved is None:
            return
        modes, device = self._saved
        if device is not None:
            self.model.to(device)
        for n, m in self.model.named_modules():
            if n in modes:
                m.training = modes[n]
        self._saved = None

    # -- forward ---------------------------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise TargetError(f"{self.name}: expected images [batch, 3, H, W], got shape {list(x.shape)}")
        try:
            out = self.model(self.normalize(x))
        except RuntimeError as exc:
            if self.input_size is not None and tuple(x.shape[1:]) != tuple(self.input_size):
                raise TargetError(
                    f"{self.name}: model rejected input of shape {list(x.shape[1:])}; "
                    f"it expects {list(self.input_size)} ({str(exc).splitlines()[0]})"
                ) from exc
            raise TargetError(
                f"{self.name}: model rejected input of shape {list(x.shape[1:])}: {str(exc).splitlines()[0]}"
            ) from exc
        logits = reduce_to_logits(out)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise TargetError(
                f"{self.name}: expected logits [batch={x.shape[0]}, classes], got shape {list(logits.shape)}"
            )
        return logits

    forward = __call__

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Black-box access: softmax scores [B,K], no gradients; counts every image queried."""
        self.queries += int(x.shape[0])
        return torch.softmax(self(x).float(), dim=1)

    returns = "scores"

    # -- capabilities ----------------------------------------------------------------------

    def probe(self, example: torch.Tensor) -> torch.Tensor:
        """Run one forward pass on ``example`` (on the device), recording every module's output
        shape in call order and detecting a GAP head. Returns the logits."""
        calls: list[tuple[str, nn.Module, Any]] = []
        handles = []
        if self.hookable:
            try:
                for name, module in self.model.named_modules():
                    if name:
                        handles.append(module.register_forward_hook(_Recorder(calls, name)))
            except (RuntimeError, NotImplementedError, AttributeError):  # e.g. TorchScript modules
                self.hookable = False
        try:
            with torch.no_grad():
                logits = self(example)
        finally:
            for h in handles:
                h.remove()
        self.num_classes = int(logits.shape[1])
        if self.input_size is None:
            self.input_size = tuple(int(s) for s in example.shape[1:])
        self._layers = [
            LayerInfo(name, module, tuple(out.shape), i)
            for i, (name, module, out, _) in enumerate(calls)
            if isinstance(out, torch.Tensor)
        ]
        self._gap_head = _detect_gap_head(calls, self.num_classes)
        return logits

    @property
    def layers(self) -> list[LayerInfo]:
        """Hookable modules with a tensor output, in call order (empty when not hookable)."""
        if self._layers is None:
            raise RuntimeError("Target.probe() has not run yet")
        return self._layers

    def layer(self, name: str) -> nn.Module:
        modules = dict(self.model.named_modules())
        if name not in modules or not name:
            near = [n for n in modules if n and name.split(".")[-1] in n][:5]
            raise KeyError(f"{self.name} has no layer {name!r}" + (f"; similar: {near}" if near else ""))
        return modules[name]

    @property
    def gap_head(self) -> GapHead | None:
        return self._gap_head

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"white_box", "scores"}
        if self.hookable and self._layers:
            caps.add("layers")
        if self._gap_head is not None:
            caps.add("gap_head")
        return frozenset(caps)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
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


class BlackBoxTarget:
    """A model known only through its answers: ``predict(images in [0,1]) -> scores [B,K]``
    (``returns="scores"``) or labels [B] (``returns="labels"``). No gradients, no layers.
    Every image sent is counted in :attr:`queries`."""

    white_box = False
    hookable = False
    gap_head = None

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
        self.input_size = tuple(input_size) if input_size is not None else None
        self.device = torch.device(device)
        self.description = description
        self.queries = 0
        self.layers: list[LayerInfo] = []

    def __enter__(self) -> "BlackBoxTarget":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def restore(self) -> None:
        pass

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Scores [B,K] (``returns="scores"``) or labels [B] (``returns="labels"``), on :attr:`device`."""
        self.queries += int(x.shape[0])
        out = self.predict(x)
        out = torch.as_tensor(out, device=self.device)
        if self.returns == "labels":
            if out.ndim != 1 or out.shape[0] != x.shape[0]:
                raise TargetError(f"{self.name}: expected labels [batch={x.shape[0]}], got shape {list(out.shape)}")
            return out.long()
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise TargetError(f"{self.name}: expected scores [batch={x.shape[0]}, classes], got shape {list(out.shape)}")
        return out.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise TargetError(f"{self.name} is a black box: it has no gradients, only query()")

    def probe(self, example: torch.Tensor) -> torch.Tensor:
        out = self.query(example)
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


def _detect_gap_head(calls: list[tuple[str, nn.Module, Any, Any]], num_classes: int) -> GapHead | None:
    """Structural detection: the last module called is a Linear producing the logits, and the
    only modules between it and a global average pool are pass-throughs (dropout, flatten,
    identity). Numerical confirmation (does the CAM identity hold?) is the CAM check's job."""
    # Only leaf modules matter: a container's call wraps its children's.
    leaves = [c for c in calls if not any(True for _ in c[1].children())]
    if not leaves:
        return None
    lin_name, lin, lin_out, _ = leaves[-1]
    if not isinstance(lin, nn.Linear) or lin_out is None or lin_out.shape[-1] != num_classes:
        return None
    between: list[str] = []
    for name, module, out, feat in reversed(leaves[:-1]):
        if isinstance(module, _PASSTHROUGH):
            between.append(name)
            continue
        if not _is_global_avg_pool(module, feat, out):
            return None
        if feat.shape[1] != lin.in_features:
            return None
        return GapHead(
            pool=name,
            linear=lin_name,
            weight=lin.weight,
            bias=lin.bias,
            feature_shape=tuple(int(s) for s in feat.shape[1:]),
            between=tuple(reversed(between)),
        )
    return None


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
