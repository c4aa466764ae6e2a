"""The proxy (substitute) model of Papernot et al. 2017: the default small ResNet, building a
proxy from a spec, training it on the target's answers, and Jacobian-based augmentation."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from auditkit.toolkit import NO_INPUT_GRADIENT, Target, TargetError, UsageError

BUILTIN_PROXY = "resnet"


# -- the default proxy ------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """He et al. 2016's basic residual block: two 3x3 conv+BN, identity (or 1x1 projection) skip."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ProxyResNet(nn.Module):
    """A small ResNet sized for the input: a 3x3 stem whose stride brings the first stage to at
    most 32 pixels (stride 1 up to 32 px, 2 up to 64 px, else a stride-2 conv and a stride-2
    max-pool), three stages of ``blocks`` basic blocks with ``width``, ``2*width`` and
    ``4*width`` channels (strides 1, 2, 2), global average pooling and one linear layer.
    With ``blocks=1`` it is an 8-layer ResNet (about 78k parameters at width 16).

    It takes pixels in [0, 1]; batch normalization absorbs any input scaling.
    """

    def __init__(self, num_classes: int, input_size: Sequence[int] = (3, 32, 32), width: int = 16, blocks: int = 1):
        super().__init__()
        if num_classes < 2 or width < 1 or blocks < 1:
            raise ValueError(f"need num_classes >= 2, width >= 1, blocks >= 1; got {num_classes}, {width}, {blocks}")
        side = min(int(input_size[-2]), int(input_size[-1]))
        stem: list[nn.Module] = [
            nn.Conv2d(3, width, 3, stride=1 if side <= 32 else 2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        if side > 64:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            layers = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class _TargetModule(nn.Module):
    """A loaded :class:`~auditkit.target.Target` as a trainable module: its model's parameters
    are this module's, and a forward pass is the Target's own (its normalization inside, its
    choice of logits), so the proxy takes pixels in [0, 1] like the target it imitates."""

    def __init__(self, target: Target):
        super().__init__()
        self.model = target.model  # registered: parameters(), train() and state_dict() reach it
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)


def build_proxy(spec: str, num_classes: int, input_size: Sequence[int], *, width: int = 16, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly initialized proxy taking pixels in [0, 1] and returning ``num_classes`` logits.

    :param spec: ``"resnet"`` (:class:`ProxyResNet` with ``width``), ``torchvision:NAME``
        (random init, ImageNet normalization inside), or a factory ``package.module:factory`` /
        ``path/to/file.py:factory`` (called with ``num_classes`` when it takes it). The model is
        deep-copied, so a factory that hands out a shared module never sees it trained.
    :raises UsageError: the spec cannot be built; the message says what was expected.
    """
    if spec == BUILTIN_PROXY:
        model: nn.Module = ProxyResNet(num_classes, input_size, width=width)
    else:
        from auditkit.toolkit import ModelOptions, load_model

        try:
            loaded = load_model(spec, ModelOptions(num_classes=num_classes, device=str(device)))
        except UsageError as exc:
            raise UsageError(f"transfer.proxy setting proxy={spec!r}: {exc}; expected 'resnet', torchvision:NAME or a factory spec") from exc
        target = copy.deepcopy(loaded)
        target.__enter__()  # on the device, normalization included; a fresh copy: nothing to restore
        model = _TargetModule(target)
    return model.to(device)


def require_input_gradient(proxy: nn.Module, example: torch.Tensor, spec: str) -> None:
    """Raise TargetError, with the session's message, when no gradient reaches the proxy's
    input: it could neither grow the query set nor be attacked. Asked of autograd on
    ``example[:1]`` in eval mode (``allow_unused``), not read from error messages."""
    was_training = proxy.training
    proxy.eval()
    try:
        x = example[:1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = proxy(x)
            grad = None
            if logits.requires_grad:
                (grad,) = torch.autograd.grad(logits.float().sum(), x, allow_unused=True)
    finally:
        proxy.train(was_training)
    if grad is None:
        raise TargetError(f"the proxy {spec!r}: {NO_INPUT_GRADIENT}")


# -- training -------------------------------------------------------------------------------------


@dataclass
class TrainingLog:
    """What proxy training did: epochs run per round, validation agreement after each epoch,
    why each round stopped (``"epochs"``, ``"plateau"``, ``"time"``), seconds spent, and
    training throughput."""

    epochs: list[int] = field(default_factory=list)
    val_agreement: list[float] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class TrainingPlan:
    """How to train the proxy each round: at most ``epochs`` epochs of Adam (``lr``) in batches
    of ``batch_size``, stopping once validation agreement has not improved for ``patience``
    epochs (0: never; the best weights are kept). ``deadline`` (``time.monotonic()``) is a
    safety cap checked before every step; when it passes, training stops ("time" in the log)
    and the check says so, since its results then depend on machine speed."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    patience: int = 3
    deadline: float | None = None


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability rows [B,K] (the target's scores) or class indices [B]."""
    if targets.ndim == 2:
        return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
    return F.cross_entropy(logits.float(), targets)


def train_proxy(
    proxy: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    plan: TrainingPlan,
    *,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    log: TrainingLog | None = None,
    progress: Callable[[Iterable, int, str], Iterable] | None = None,
) -> tuple[torch.optim.Optimizer, TrainingLog]:
    """Train ``proxy`` in place to imitate the target: ``targets`` are its scores [N,K]
    (probabilities) or labels [N]. Batched on the images' device, with AMP and channels_last
    on CUDA (the proxy is returned in contiguous memory, the layout every attack expects).
    Early stopping uses agreement (argmax of the proxy against ``val_labels``) on the
    validation images, never the evaluation images. Deterministic for a ``generator``.

    Returns the optimizer (pass it back to continue training next round) and the log.
    """
    log = log if log is not None else TrainingLog()
    device = images.device
    cuda = device.type == "cuda"
    if cuda:
        proxy.to(memory_format=torch.channels_last)
    if optimizer is None:
        optimizer = torch.optim.Adam(proxy.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype is torch.float16)
    n = int(images.shape[0])
    has_val = val_images is not None and val_labels is not None and len(val_images) > 0
    best = (-1.0, math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0
    stopped = "epochs"
    epochs_run = 0
    t0 = time.monotonic()
    epochs: Iterable[int] = range(plan.epochs)
    if progress is not None:
        epochs = progress(epochs, plan.epochs, f"proxy training round {len(log.epochs) + 1}")
    for _ in epochs:
        proxy.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, plan.batch_size):
            # The deadline is a safety cap, not a budget: checked every step, and the check
            # reports it when it binds (results then depend on machine speed).
            if plan.deadline is not None and time.monotonic() > plan.deadline:
                stopped = "time"
                break
            idx = order[start : start + plan.batch_size]
            if idx.numel() < 2 and n >= 2:
                continue  # batch norm cannot train on a single image
            x = images[idx]
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=cuda):
                loss = soft_cross_entropy(proxy(x), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            log.images_seen += int(idx.numel())
        if stopped == "time":
            break
        epochs_run += 1
        if has_val:
            agreement, loss_value = evaluate_agreement(proxy, val_images, val_labels, plan.batch_size)
            log.val_agreement.append(agreement)
            if agreement > best[0] or (agreement == best[0] and loss_value < best[1]):
                best, since_best = (agreement, loss_value), 0
                best_state = {k: v.detach().clone() for k, v in proxy.state_dict().items()}
            else:
                since_best += 1
            if plan.patience and since_best >= plan.patience:
                stopped = "plateau"
                break
    if best_state is not None:
        proxy.load_state_dict(best_state)
    # Whatever layout training used (channels_last on CUDA, or a factory's own), the proxy
    # goes back to contiguous memory, the layout the attacks and augmentation expect.
    proxy.to(memory_format=torch.contiguous_format)
    proxy.eval()
    log.epochs.append(epochs_run)
    log.stopped.append(stopped)
    log.seconds += time.monotonic() - t0
    return optimizer, log


@torch.no_grad()
def evaluate_agreement(proxy: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(agreement, cross-entropy) of ``proxy`` in eval mode against ``labels`` on ``images``."""
    proxy.eval()
    agree, loss, n = 0, 0.0, int(images.shape[0])
    for start in range(0, n, batch_size):
        logits = proxy(images[start : start + batch_size]).float()
        target = labels[start : start + batch_size]
        agree += int((logits.argmax(1) == target).sum())
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
    return agree / max(n, 1), loss / max(n, 1)


# -- Jacobian-based dataset augmentation ----------------------------------------------------------


class Reservoir:
    """Uniform sample of at most ``k`` rows from a stream of batches (Vitter's algorithm R):
    every row offered has the same chance ``k / offered`` to be kept, and memory stays at ``k``
    rows however long the stream. Deterministic for a ``generator``."""

    def __init__(self, k: int, generator: torch.Generator | None = None):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k = k
        self.generator = generator
        self.offered = 0
        self._rows: torch.Tensor | None = None
        self._count = 0

    def offer(self, rows: torch.Tensor) -> None:
        """Offer a batch of rows (any tensor with the items along dim 0)."""
        for i in range(int(rows.shape[0])):
            self.offered += 1
            if self._count < self.k:
                if self._rows is None:
                    self._rows = torch.empty((self.k, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
                self._rows[self._count] = rows[i]
                self._count += 1
                continue
            j = int(torch.randint(self.offered, (1,), generator=self.generator))
            if j < self.k:
                self._rows[j] = rows[i]

    def items(self) -> torch.Tensor | None:
        """The kept rows (at most ``k``), or None when nothing was offered or ``k`` is 0."""
        return None if self._rows is None else self._rows[: self._count]


def jacobian_augmentation(
    proxy: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: float,
    k: int,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Papernot et al.'s new query points ``clip(x + step * sign(d logit_proxy[label(x)] / dx), 0, 1)``
    for every ``x`` in ``images`` (``labels`` are the target's answers), of which at most ``k``
    are kept by reservoir sampling so the query budget is never exceeded.

    The gradient of the logit rather than the softmax output: the softmax saturates and its
    gradient vanishes on confidently classified points. Returns [<=k,3,H,W] or None.
    """
    reservoir = Reservoir(k, generator)
    if k == 0:
        return None
    proxy.eval()
    for start in range(0, int(images.shape[0]), batch_size):
        x = images[start : start + batch_size].detach().clone().requires_grad_(True)
        logits = proxy(x)
        picked = logits.gather(1, labels[start : start + batch_size].view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, x)
        reservoir.offer((x.detach() + step * grad.sign()).clamp_(0.0, 1.0))
    return reservoir.items()
