"""Supervised training of a classifier on an AuditData train split, with a classic SGD recipe,
an epoch and time budget, early stopping on validation loss, and AMP/channels_last on CUDA."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from auditkit.data.base import AuditData
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, reduce_to_logits


@dataclass(frozen=True)
class Recipe:
    """An SGD recipe. ``schedule="plateau"`` divides the learning rate by 10 when the
    validation loss has not improved for ``plateau_patience`` epochs, and for at least
    ``plateau_min_steps`` optimizer steps: on a few hundred images an epoch is a dozen steps,
    and a patience counted in epochs alone would cut the rate before training has begun.
    The rate rises linearly from zero over the first ``warmup_steps`` steps (Goyal et al.
    2017), which keeps a randomly initialized network from diverging in its first steps.
    ``aux_weight`` weights auxiliary classifier losses (GoogLeNet). Augmentation: random
    horizontal flips and translations of up to ``translate`` of the image side (the classic
    crop-and-flip)."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"
    plateau_patience: int = 2
    plateau_min_steps: int = 150
    warmup_steps: int = 50
    aux_weight: float = 0.0
    batch_size: int = 32
    translate: float = 0.1
    flip: bool = True


@dataclass(frozen=True)
class Budget:
    """How much training a baseline gets: at most ``max_epochs`` epochs and ``max_seconds``
    of wall time, stopping early after ``patience`` epochs without a better validation loss
    (the best weights are kept; the patience is stretched so that the learning rate can be
    divided at least once before training stops). ``val_fraction`` of the train split is
    held out."""

    max_epochs: int = 30
    max_seconds: float = 300.0
    patience: int = 5
    val_fraction: float = 0.15


@dataclass
class TrainingReport:
    epochs: int
    seconds: float
    best_epoch: int
    val_loss: float
    val_acc: float
    train_images: int
    val_images: int
    stopped: str
    steps: int = 0
    final_lr: float = 0.0
    lr_drops: int = 0


def _augment(x: torch.Tensor, recipe: Recipe, g: torch.Generator) -> torch.Tensor:
    if recipe.flip:
        flip = torch.rand(x.shape[0], generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if recipe.translate > 0:
        pad = max(1, int(round(recipe.translate * x.shape[-1])))
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
        x = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    return x


def train_classifier(
    model: nn.Module,
    data: AuditData,
    recipe: Recipe,
    budget: Budget,
    *,
    device: torch.device,
    seed: int = 0,
    progress: Callable[..., Iterable] | None = None,
    name: str = "model",
) -> TrainingReport:
    """Train ``model`` in place on ``data``'s train split (images in [0,1], ImageNet
    normalization applied here as in the audit) and keep the weights with the best
    validation loss. Deterministic for a seed on the CPU."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    split = data.split("train")
    n = len(split)
    perm = torch.randperm(n, generator=g).tolist()
    n_val = max(1, int(round(budget.val_fraction * n))) if n > 4 else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    on_cuda = device.type == "cuda"
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / recipe.batch_size))
    plateau_patience = max(recipe.plateau_patience, math.ceil(recipe.plateau_min_steps / steps_per_epoch))
    stop_patience = max(budget.patience, 2 * plateau_patience + 1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=plateau_patience)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, recipe.warmup_steps)))
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda)
    best = (math.inf, 0.0, 0)
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    stopped = "max_epochs"
    epochs_run = 0
    steps = 0
    lr_drops = 0
    epochs: Iterable[int] = range(budget.max_epochs)
    if progress is not None:
        epochs = progress(epochs, total=budget.max_epochs, desc=f"training baseline {name}")
    for epoch in epochs:
        model.train()
        order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=g).tolist()]
        for batch in data.batches("train", recipe.batch_size, indices=order):
            x = _augment(batch.images.to(device), recipe, g)
            y = batch.labels.to(device)
            x = (x - mean) / std
            if on_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
                out = model(x)
                loss = _loss(out, y, recipe.aux_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
            if warmup.last_epoch < recipe.warmup_steps:
                warmup.step()
        epochs_run = epoch + 1
        val_loss, val_acc = evaluate(model, data, val_idx or train_idx, device, mean, std)
        if recipe.schedule == "plateau" and warmup.last_epoch >= recipe.warmup_steps:  # not mid-warm-up
            before = opt.param_groups[0]["lr"]
            sched.step(val_loss)
            lr_drops += int(opt.param_groups[0]["lr"] < before)
        if val_loss < best[0] - 1e-4:
            best = (val_loss, val_acc, epoch + 1)
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 - best[2] >= stop_patience:
            stopped = "early_stop"
            break
        if time.perf_counter() - start > budget.max_seconds:
            stopped = "time_budget"
            break
    model.load_state_dict(best_state)
    model.to("cpu")
    if on_cuda:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return TrainingReport(
        epochs=epochs_run,
        seconds=round(time.perf_counter() - start, 2),
        best_epoch=best[2],
        val_loss=round(best[0], 5),
        val_acc=round(best[1], 5),
        train_images=len(train_idx),
        val_images=len(val_idx),
        stopped=stopped,
        steps=steps,
        final_lr=float(opt.param_groups[0]["lr"]),
        lr_drops=lr_drops,
    )


def _loss(out: Any, y: torch.Tensor, aux_weight: float) -> torch.Tensor:
    aux = [getattr(out, name, None) for name in ("aux_logits1", "aux_logits2")]
    loss = F.cross_entropy(reduce_to_logits(out), y)
    for a in aux:
        if isinstance(a, torch.Tensor) and aux_weight:
            loss = loss + aux_weight * F.cross_entropy(a, y)
    return loss


@torch.no_grad()
def evaluate(
    model: nn.Module, data: AuditData, indices: list[int], device: torch.device, mean: torch.Tensor, std: torch.Tensor
) -> tuple[float, float]:
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in data.batches("train", 128, indices=indices):
        x = (batch.images.to(device) - mean) / std
        y = batch.labels.to(device)
        logits = reduce_to_logits(model(x)).float()
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += int(y.numel())
    return total_loss / max(count, 1), correct / max(count, 1)
