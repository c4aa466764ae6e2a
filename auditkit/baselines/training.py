"""Supervised training of a baseline for a budget of optimizer steps: on a stream of freshly
generated images when the data is generated (:class:`auditkit.data.synthetic.ShapesStream`),
else on the data's train split; one-cycle schedule, bf16 autocast and channels_last on CUDA,
and a wall-clock safety cap checked after every step."""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from auditkit.data.base import AuditData, subset
from auditkit.data.synthetic import shapes_stream
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, reduce_to_logits

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "constant")
# The default budget: enough for every classic baseline to learn the default synthetic task
# (64 px, 4 shapes on clutter) to >= 0.95 (measured on a GPU: 625 steps of 128 images take
# ResNet-18 to 0.98, AlexNet with AdamW needs about twice as many).
DEFAULT_STEPS = 1500
# The safety cap on wall time per baseline, in seconds: a budget in steps that a slow machine
# cannot finish in this time is stopped, and the report says so (stopped="time_cap").
DEFAULT_MAX_SECONDS = 600.0
# A generated stream is produced in chunks of this many batches, in a background thread.
STREAM_CHUNK_BATCHES = 8
# A prediction share of one class at or above this, beyond that class's share of the labels,
# marks a (nearly) constant predictor.
CONSTANT_SHARE = 0.95


@dataclass(frozen=True)
class Recipe:
    """How a baseline is trained. ``optimizer``: ``"sgd"`` (momentum ``momentum``, Nesterov
    when ``nesterov``) or ``"adamw"`` (beta1 ``momentum``). ``schedule="onecycle"``: the rate
    rises from ``lr / 25`` to ``lr`` over the first ``warmup_fraction`` of the steps and
    anneals (cosine) to nearly zero at the last step, while the momentum cycles 0.95 -> 0.85
    -> 0.95 (Smith & Topin 2018); ``"constant"`` keeps ``lr``. ``aux_weight`` weights
    auxiliary classifier losses (GoogLeNet). Augmentation, on a fixed train split only: random
    horizontal flips (``flip``) and random translations of up to ``translate`` of the image
    side (the classic crop-and-flip). A generated stream is fresh data and gets none."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.25
    aux_weight: float = 0.0
    batch_size: int = 128
    flip: bool = True
    translate: float = 0.125

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"recipe schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class Budget:
    """How much training a baseline gets, independent of the machine: ``steps`` optimizer
    steps of the recipe's batch size, or, when ``epochs`` is set, that many passes over the
    train split's size (``epochs * ceil(train images / batch size)`` steps; on generated
    data the steps draw fresh images all the same). ``max_seconds`` is only a safety cap on
    wall time, checked after every step; when it binds, the report says
    ``stopped="time_cap"`` and the result depends on the machine's speed.
    ``val_images``: at most this many validation images (see :func:`train_classifier`)."""

    steps: int = DEFAULT_STEPS
    epochs: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    val_images: int = 1024

    def steps_for(self, train_images: int, batch_size: int) -> int:
        if self.epochs is None:
            return int(self.steps)
        return int(self.epochs) * max(1, math.ceil(train_images / batch_size))


@dataclass
class TrainingReport:
    """What a training run did. ``stopped``: ``"steps"`` (the budget ran out, as planned) or
    ``"time_cap"`` (the safety cap bound first). ``data``: ``"stream"`` (fresh generated
    images) or ``"train split"``. Validation: ``val_acc`` and ``val_loss`` on ``val_images``
    images (``val_source`` says which), and the share of the most predicted class
    (``majority_fraction``, class ``majority_class``) beside that class's share of the labels
    (``majority_label_fraction``): a constant predictor shows as a share near 1."""

    steps: int
    steps_budget: int
    images_seen: int
    seconds: float
    images_per_second: float
    stopped: str
    data: str
    data_description: str
    augmentation: str
    train_images: int | None
    val_images: int
    val_source: str
    val_loss: float
    val_acc: float
    majority_class: int
    majority_fraction: float
    majority_label_fraction: float
    train_loss: float | None
    final_lr: float
    device: str


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
    """Train ``model`` in place for ``budget`` (images in [0,1]; ImageNet normalization
    applied here, as in the audit) and return it in eval mode, on the CPU, in contiguous
    memory, with the weights of the last step (the one-cycle schedule ends at a rate near
    zero, so the last weights are the settled ones).

    Data: generated data (:func:`auditkit.data.synthetic.shapes_stream`) trains on fresh
    images from the task's own stream, disjoint from the eval and train images, and
    validates on the train split (which training does not use), or on a separate stream
    chunk when there is none. Other data trains on the train split in reshuffled passes,
    holding out 15% of it (at most ``budget.val_images``) for validation.

    Deterministic for a seed on the CPU: batches, augmentation and initialization draw from
    seeded generators, and the background thread that prepares batches produces them in a
    fixed order.
    """
    torch.manual_seed(seed)
    stream = shapes_stream(data)
    bs = recipe.batch_size
    if stream is not None:
        train_images = len(data.train) if data.train is not None else 0
        if train_images:
            val = subset(data.train, range(min(train_images, budget.val_images)))
            val_source = "the data's train split (not trained on: training drew fresh images)"
        else:
            val = stream.chunk("val", budget.val_images)
            val_source = "a separate chunk of the generated stream"
        steps = budget.steps_for(train_images or bs, bs)
        # On a GPU the CPU only feeds it, so several threads generate; on a CPU, one (it
        # competes with training for the cores).
        workers = max(1, min(4, (os.cpu_count() or 1) // 4)) if device.type == "cuda" else 1
        batches = _stream_batches(stream, recipe, workers)
        data_kind, description, n_train = "stream", stream.describe(), None
        augmentation = "none (every image is fresh)"
    else:
        split = data.split("train")
        n = len(split)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = min(budget.val_images, max(1, round(0.15 * n))) if n > 4 else 0
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        if len(train_idx) < 2:
            raise ValueError(f"data {data.spec!r}: {len(train_idx)} training images are too few to train a baseline")
        val = subset(split, val_idx or train_idx)
        val_source = f"{len(val_idx)} held-out images of the train split" if val_idx else "the training images (too few to hold any out)"
        steps = budget.steps_for(len(train_idx), bs)
        batches = _split_batches(data, train_idx, recipe, seed)
        data_kind, description, n_train = "train split", f"{len(train_idx)} images of data {data.spec!r}", len(train_idx)
        augmentation = ", ".join(
            (["random horizontal flips"] if recipe.flip else [])
            + ([f"random translations up to {recipe.translate:.0%} of the side"] if recipe.translate > 0 else [])
        ) or "none"
    if steps < 1:
        raise ValueError(f"a training budget of {steps} steps: expected at least 1")

    on_cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float16
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    model.train()
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    opt = _optimizer(model, recipe)
    sched = None
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=steps, pct_start=recipe.warmup_fraction, anneal_strategy="cos",
            div_factor=25.0, final_div_factor=1e4, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
        )
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda and amp_dtype == torch.float16)
    tail = max(1, min(50, steps // 5))  # the training loss is the mean of the last steps
    loss_sum = torch.zeros((), device=device)
    stopped, done, seen = "steps", 0, 0
    counter: Iterable[int] = range(steps)
    if progress is not None:
        counter = progress(counter, total=steps, desc=f"training baseline {name}")
    start = time.perf_counter()
    with _prefetched(batches, pin=on_cuda) as feed:
        for step in counter:
            images, labels, flip, shift = next(feed)
            x = images.to(device, non_blocking=True)
            y = labels.to(device, non_blocking=True)
            if flip is not None:
                x = torch.where(flip.to(device, non_blocking=True).view(-1, 1, 1, 1), x.flip(-1), x)
            if shift is not None:
                x = _translate(x, *shift)
            x = (x - mean) / std
            if on_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=on_cuda):
                loss = _loss(model(x), y, recipe.aux_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            if step >= steps - tail:
                loss_sum += loss.detach().float()
            done, seen = step + 1, seen + int(labels.shape[0])
            if done < steps and time.perf_counter() - start > budget.max_seconds:
                stopped = "time_cap"
                break
    if on_cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    val_loss, val_acc, counts, label_counts = evaluate(model, val, device, mean, std, amp_dtype if on_cuda else None)
    # Whatever layout training used, the baseline is handed back in contiguous (NCHW) memory:
    # a channels_last model returns channels_last input gradients, which attacks cannot flatten.
    model.to("cpu", memory_format=torch.contiguous_format)
    model.eval()
    n_val = int(counts.sum())
    n_tail = max(0, done - max(0, steps - tail))
    majority = int(counts.argmax())
    return TrainingReport(
        steps=done,
        steps_budget=steps,
        images_seen=seen,
        seconds=round(seconds, 2),
        images_per_second=round(seen / max(seconds, 1e-9), 1),
        stopped=stopped,
        data=data_kind,
        data_description=description,
        augmentation=augmentation,
        train_images=n_train,
        val_images=n_val,
        val_source=val_source,
        val_loss=round(val_loss, 5),
        val_acc=round(val_acc, 5),
        majority_class=majority,
        majority_fraction=round(float(counts[majority]) / max(n_val, 1), 5),
        majority_label_fraction=round(float(label_counts[majority]) / max(n_val, 1), 5),
        train_loss=round(float(loss_sum) / n_tail, 5) if n_tail else None,
        final_lr=float(opt.param_groups[0]["lr"]),
        device=str(device),
    )


def is_constant(report: dict[str, Any]) -> bool:
    """Whether a training report's validation predictions are (nearly) one class: at least
    :data:`CONSTANT_SHARE` of them, and more often than that class occurs among the labels."""
    share = report.get("majority_fraction")
    if share is None:
        return False
    return float(share) >= CONSTANT_SHARE and float(share) > float(report.get("majority_label_fraction", 0.0)) + 0.02


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay
    )


Item = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None", "tuple[int, int, int] | None"]


def _stream_batches(stream: Any, recipe: Recipe, workers: int = 1) -> Iterator[Item]:
    """Endless batches of fresh images: chunk after chunk of the stream, each image used
    once; ``workers`` threads generate the next chunks ahead (a chunk depends only on its
    index, so the order, and every image, is the same for any number of workers). No
    augmentation: fresh images are what augmentation imitates, and a flip would move a
    planted marker to another class's corner."""
    bs = recipe.batch_size
    n = bs * STREAM_CHUNK_BATCHES
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auditkit-shapes") as pool:
        pending = deque(pool.submit(stream.chunk, index, n) for index in range(workers))
        index = workers
        while True:
            chunk = pending.popleft().result()
            pending.append(pool.submit(stream.chunk, index, n))
            index += 1
            for start in range(0, n, bs):
                yield chunk.images[start : start + bs], chunk.labels[start : start + bs], None, None


def _split_batches(data: AuditData, train_idx: list[int], recipe: Recipe, seed: int) -> Iterator[Item]:
    """Endless batches from the train split, reshuffled every pass; the last batch of a pass
    is dropped when incomplete (batch normalization needs more than one image), unless the
    split is smaller than one batch."""
    g = torch.Generator().manual_seed(seed)
    bs = min(recipe.batch_size, len(train_idx))
    while True:
        order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=g).tolist()]
        usable = len(order) - len(order) % bs
        for batch in data.batches("train", bs, indices=order[:usable]):
            n = len(batch)
            flip = torch.rand(n, generator=g) < 0.5 if recipe.flip else None
            shift = None
            if recipe.translate > 0:
                pad = max(1, int(round(recipe.translate * batch.images.shape[-1])))
                dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
                shift = (pad, dx, dy)
            yield batch.images, batch.labels, flip, shift


def _translate(x: torch.Tensor, pad: int, dx: int, dy: int) -> torch.Tensor:
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


class _prefetched:
    """Run an iterator in a background thread, ``depth`` items ahead, so that generating or
    loading the next batches overlaps the training step; ``next(feed)`` re-raises the
    producer's exception. Leaving the block stops the thread."""

    _END = object()

    def __init__(self, iterator: Iterator[Item], *, pin: bool = False, depth: int = 3):
        self.iterator, self.pin = iterator, pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, name="auditkit-batches", daemon=True)

    def _work(self) -> None:
        try:
            for item in self.iterator:
                if self.pin:
                    item = (item[0].pin_memory(), item[1].pin_memory(), *item[2:])
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
        finally:
            close = getattr(self.iterator, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (its worker threads) runs now, in this thread

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> "_prefetched":
        self.thread.start()
        return self

    def __next__(self) -> Item:
        item = self.queue.get()
        if item is self._END:
            raise RuntimeError("the training batches ran out before the budget")
        if isinstance(item, BaseException):
            raise item
        return item

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def _loss(out: Any, y: torch.Tensor, aux_weight: float) -> torch.Tensor:
    aux = [getattr(out, name, None) for name in ("aux_logits1", "aux_logits2")]
    loss = F.cross_entropy(reduce_to_logits(out), y)
    for a in aux:
        if isinstance(a, torch.Tensor) and aux_weight:
            loss = loss + aux_weight * F.cross_entropy(a, y)
    return loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Any,
    device: torch.device,
    mean: torch.Tensor,
    std: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 256,
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Mean loss, accuracy, predicted-class counts and label counts of ``model`` on a split."""
    model.eval()
    was_cuda = device.type == "cuda"
    total_loss, correct, count = 0.0, 0, 0
    predicted: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for start in range(0, len(split), batch_size):
        if hasattr(split, "slice"):
            batch = split.slice(start, start + batch_size)
            images, y = batch.images, batch.labels
        else:
            items = [split[i] for i in range(start, min(start + batch_size, len(split)))]
            images = torch.stack([it["image"] for it in items]).float()
            y = torch.tensor([it["label"] for it in items])
        x = (images.to(device) - mean) / std
        if was_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = reduce_to_logits(model(x)).float()
        y = y.to(device)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(1)
        correct += int((pred == y).sum())
        count += int(y.numel())
        predicted.append(pred.cpu())
        labels.append(y.cpu())
    classes = int(max(torch.cat(predicted).max(), torch.cat(labels).max())) + 1 if count else 1
    return (
        total_loss / max(count, 1),
        correct / max(count, 1),
        torch.bincount(torch.cat(predicted), minlength=classes) if count else torch.zeros(1),
        torch.bincount(torch.cat(labels), minlength=classes) if count else torch.zeros(1),
    )
