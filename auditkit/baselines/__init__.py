"""Classic baselines (AlexNet, GoogLeNet, ResNet) for the audit's task: the torchvision
architectures, with weights from a user checkpoint, torchvision's pretrained weights (as they
are for ImageNet-1k tasks, fine-tuned for others), the on-disk cache, or training from scratch
with a recipe per architecture that learns the task."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torchvision
from torch import nn

from auditkit import weights as pretrained_weights
from auditkit.baselines.training import Budget, Recipe, TrainingReport, is_constant, train_classifier
from auditkit.data.base import AuditData
from auditkit.data.synthetic import shapes_stream
from auditkit.errors import UsageError
from auditkit.models.state_dict import load_state_dict, read_state_dict
from auditkit.stats import wilson_interval
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, Target

log = logging.getLogger(__name__)

# AlexNet's stride-4 11x11 stem and three max-pools need inputs of at least 63 px.
ALEXNET_MIN_SIZE = 63
# Bumped whenever training code changes what a recipe produces, so caches retrain.
RECIPE_VERSION = 3
# Fine-tuning from pretrained weights uses the recipe's peak learning rate divided by this.
FINE_TUNE_LR_DIVISOR = 10.0
# Parameters a pretrained checkpoint may lack or size differently for the task: the heads.
HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.")
# How a baseline starts when it is trained: "auto" is "scratch" on generated data (unlimited
# fresh images teach the architectures from scratch) and "pretrained" (ImageNet weights,
# fine-tuned) on everything else, the standard practice for a real dataset of any size.
INITS = ("auto", "scratch", "pretrained")

# The classic recipes are the reference; where these depart from them, the comment says why.
# Every recipe uses batches of 128 and the one-cycle schedule (Smith & Topin 2018) instead of
# step or plateau decays: with a budget of steps known in advance it reaches a settled,
# low-rate end without a validation signal, and it is the schedule under which the reference
# accuracies were measured (on a GPU, from scratch on 20,000 generated 64 px shapes, batch 128,
# flips: ResNet-18 with SGD 0.98 after 625 steps and 0.999 after 1875, AlexNet with AdamW
# 0.93 / 0.99, GoogLeNet with SGD lr 0.05 0.95 / 1.00).
RECIPES: dict[str, Recipe] = {
    # Krizhevsky et al. 2012 used SGD (momentum 0.9, weight decay 5e-4, lr 0.01). Without
    # batch normalization, plain SGD does not get AlexNet off the ground in a budget of
    # thousands of steps (measured: 0.31 on 4 classes after 9 epochs of 20,000 images), so
    # AlexNet trains with AdamW (Loshchilov & Hutter 2019), lr 3e-4, decoupled weight decay
    # 0.05; dropout 0.5 stays in torchvision's classifier.
    "alexnet": Recipe(optimizer="adamw", lr=3e-4, weight_decay=0.05),
    # Szegedy et al. 2015: the two auxiliary classifiers' losses weighted 0.3 in training and
    # the heads dropped at audit time, as there. Their SGD (momentum 0.9) learns slowly in a
    # short budget: 100 steps took it to 0.59-0.62 on the demo's 2-class task at peak rates
    # 0.02-0.1, where AdamW, lr 1e-3, weight decay 0.05, reached 0.91 (ResNet-18: 0.82 with
    # its SGD, 0.84 with AdamW, so it keeps its classic optimizer).
    "googlenet": Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.05, aux_weight=0.3),
    # He et al. 2016 (their CIFAR-10 recipe): SGD, momentum 0.9, lr 0.1 at batch 128, weight
    # decay 1e-4 (measured on the demo's task after 120 steps: 0.85, against 0.82 with 5e-4).
    "resnet18": Recipe(optimizer="sgd", lr=0.1, weight_decay=1e-4),
    "resnet50": Recipe(optimizer="sgd", lr=0.1, weight_decay=1e-4),
}

PRETRAINED = {
    "alexnet": "AlexNet_Weights.IMAGENET1K_V1",
    "googlenet": "GoogLeNet_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
}


class ResizeInput(nn.Module):
    """Upsample inputs smaller than ``min_size`` (bilinear) before the wrapped network:
    the documented adaptation that lets AlexNet run on small images."""

    def __init__(self, net: nn.Module, min_size: int):
        super().__init__()
        self.net = net
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> Any:
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            size = (max(self.min_size, round(h * scale)), max(self.min_size, round(w * scale)))
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net(x)


@dataclass
class BaselineSpec:
    arch: str
    num_classes: int
    image_size: int

    def adaptations(self) -> list[str]:
        notes = [f"classifier resized to {self.num_classes} classes"] if self.num_classes != 1000 else []
        if self.arch == "alexnet" and self.image_size < ALEXNET_MIN_SIZE:
            notes.append(f"inputs upsampled from {self.image_size} to {ALEXNET_MIN_SIZE} px (AlexNet needs >= 63)")
        if self.arch == "googlenet":
            notes.append("auxiliary classifiers used in training (weight 0.3), absent at audit time")
        return notes


def available() -> list[str]:
    return sorted(RECIPES)


def build(spec: BaselineSpec, *, aux_logits: bool = False, pretrained: bool = False) -> nn.Module:
    """The torchvision architecture sized for the task (random weights). ``pretrained``: it
    will receive torchvision's pretrained weights, so GoogLeNet gets the input transform its
    checkpoint expects (as torchvision's own builder does)."""
    kwargs: dict[str, Any] = {"weights": None, "num_classes": spec.num_classes}
    if spec.arch == "googlenet":
        kwargs.update(init_weights=not pretrained, aux_logits=aux_logits, transform_input=pretrained)
    net = torchvision.models.get_model(spec.arch, **kwargs)
    if spec.arch == "alexnet" and spec.image_size < ALEXNET_MIN_SIZE:
        return ResizeInput(net, ALEXNET_MIN_SIZE)
    return net


def cache_dir() -> Path:
    root = os.environ.get("AUDITKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "auditkit")
    return Path(root) / "baselines"


def cache_key(spec: BaselineSpec, data: AuditData, recipe: Recipe, budget: Budget, seed: int, init: str = "scratch") -> str:
    """The cache entry of one training: data fingerprint, architecture, recipe, the budget in
    steps (not the wall-time cap: a run that finished its steps does not depend on it), seed
    and initialization."""
    payload = {
        "init": init,
        "data": data.fingerprint(),
        "arch": spec.arch,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "recipe": asdict(recipe),
        "budget": {k: v for k, v in asdict(budget).items() if k != "max_seconds"},
        "seed": seed,
        "recipe_version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


# GoogLeNet's auxiliary heads' keys in a user's checkpoint, under any wrappers' prefixes.
_WRAPPED_AUX_KEY = re.compile(r"^(?:(?:module|_orig_mod|net)\.)*aux[12]\.")


def _strip_aux(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "net.aux1.", "net.aux2."))}


def is_generated(data: AuditData) -> bool:
    """Whether more images of ``data``'s task can be generated (built-in synthetic data)."""
    return shapes_stream(data) is not None


def resolve_init(init: str, data: AuditData) -> str:
    """``"scratch"`` or ``"pretrained"`` for ``init`` (``"auto"`` picks by the data).

    Raises:
        UsageError: ``init`` is not one of :data:`INITS`.
    """
    if init not in INITS:
        raise UsageError(f"--baseline-init {init!r}: expected one of {', '.join(INITS)}")
    if init != "auto":
        return init
    return "scratch" if is_generated(data) else "pretrained"


def needs_train_split(arch: str, data: AuditData, *, checkpoint: str | None = None, init: str = "auto") -> bool:
    """Whether training ``arch`` for ``data`` needs the data's train split: not with a
    checkpoint, not with pretrained weights used as they are (ImageNet-1k tasks), not on
    generated data (it trains on fresh images)."""
    if arch not in RECIPES or checkpoint:
        return False
    how = resolve_init(init, data)
    if how == "pretrained" and data.num_classes == 1000:
        return False
    return not is_generated(data)


def load_baseline(
    arch: str,
    data: AuditData,
    *,
    device: torch.device,
    seed: int = 0,
    checkpoint: str | None = None,
    budget: Budget | None = None,
    progress: Callable[..., Iterable] | None = None,
    use_cache: bool = True,
    weights_dir: str | None = None,
    init: str = "auto",
    offline: bool | None = None,
) -> Target:
    """A baseline Target (role "baseline", named after the architecture) for ``data``.

    Weights, in order: ``checkpoint`` (a state_dict path); for an ImageNet-1k task (1000
    classes) with ``init`` "auto" or "pretrained", torchvision's pretrained weights as they
    are; the cache of earlier trainings (keyed by data fingerprint, architecture, recipe,
    step budget, seed and initialization); otherwise training (:func:`train_classifier`) with
    the architecture's recipe (:data:`RECIPES`) for ``budget``, from scratch (``init``
    "scratch"; "auto" on generated data) or fine-tuned from the pretrained weights (classifier
    resized, peak learning rate / 10; "auto" on any other data). Pretrained weights come from
    ``weights_dir``, the torch hub cache, or are downloaded into it
    (:func:`auditkit.weights.load_state_dict`) unless ``offline``.

    Deterministic for a seed on the CPU: initialization and training draw from a seeded,
    forked random state, so the caller's random stream is left as it was.

    Raises:
        UsageError: unknown architecture or init, unreadable checkpoint, pretrained weights
            missing offline (the message names the file) or not downloadable.
    """
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _load_baseline(
            arch, data, device, seed, checkpoint, budget, progress, use_cache, weights_dir, init, offline
        )


def _load_baseline(
    arch: str,
    data: AuditData,
    device: torch.device,
    seed: int,
    checkpoint: str | None,
    budget: Budget | None,
    progress: Callable[..., Iterable] | None,
    use_cache: bool,
    weights_dir: str | None,
    init: str,
    offline: bool | None,
) -> Target:
    if arch not in RECIPES:
        raise UsageError(f"--baselines: unknown baseline {arch!r}; expected some of {', '.join(available())} or none")
    how = resolve_init(init, data)
    size = int(data.image_shape[-1])
    spec = BaselineSpec(arch, data.num_classes, size)
    budget = budget or Budget()
    recipe = RECIPES[arch]
    info: dict[str, Any] = {"adaptations": spec.adaptations()}

    def fetch() -> tuple[dict[str, torch.Tensor], Path]:
        return pretrained_weights.load_state_dict(
            PRETRAINED[arch], weights_dir=weights_dir, offline=offline, progress=sys.stderr.isatty(),
            what=f"baseline {arch}",
        )

    if checkpoint:
        model = build(spec)
        _load_checkpoint(model, checkpoint, arch)
        info["source"] = f"checkpoint {checkpoint}"
    elif how == "pretrained" and data.num_classes == 1000:
        model = build(spec, pretrained=True)
        state, path = fetch()
        _load_pretrained(model, state, path, arch, heads=False)
        info["source"] = f"pretrained {PRETRAINED[arch]} ({path})"
    else:
        init_text = "scratch"
        if how == "pretrained":
            recipe = replace(recipe, lr=recipe.lr / FINE_TUNE_LR_DIVISOR)
            init_text = f"pretrained {PRETRAINED[arch]}"
        info["recipe"] = asdict(recipe)
        key = cache_key(spec, data, recipe, budget, seed, init_text)
        path = cache_dir() / f"{arch}-{key}.pt"
        model = build(spec, pretrained=how == "pretrained")
        saved = _read_cache(path, budget) if use_cache else None
        if saved is not None:
            model.load_state_dict(saved["state_dict"])
            info.update(source="cache", cache_path=str(path), training=saved["report"])
            if how == "pretrained":
                info["init"] = f"{init_text}, classifier resized and fine-tuned"
        else:
            if (data.train is None or len(data.train) == 0) and not is_generated(data):
                raise UsageError(
                    f"baseline {arch}: data {data.spec!r} has no train split to train it on; "
                    "give a checkpoint or use --baselines none"
                )
            trainable = build(spec, aux_logits=True, pretrained=how == "pretrained")
            if how == "pretrained":
                state, file = fetch()
                _load_pretrained(trainable, state, file, arch, heads=True)
                info["init"] = f"{init_text} ({file}), classifier resized and fine-tuned"
            try:
                report = train_classifier(
                    trainable, data, recipe, budget, device=device, seed=seed, progress=progress, name=arch
                )
            except ValueError as exc:
                raise UsageError(f"baseline {arch}: {exc}") from exc
            model.load_state_dict(_strip_aux(trainable.state_dict()))
            record = asdict(report) | {"max_seconds": float(budget.max_seconds)}
            info.update(source="trained", training=record)
            if use_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save({"state_dict": model.state_dict(), "report": record}, tmp)
                os.replace(tmp, path)  # atomic: a concurrent or interrupted run never reads half a file
                info["cache_path"] = str(path)
    if info.get("training", {}).get("val_images"):
        info["quality"] = training_quality(info["training"], data.num_classes)
    target = Target(
        model, name=arch, role="baseline", spec=f"baseline:{arch}", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        device=device, description="; ".join(spec.adaptations()),
    )
    target.info = info
    return target


def _read_cache(path: Path, budget: Budget) -> dict[str, Any] | None:
    """A cached training, unless there is none, or its wall-time cap bound and this budget
    allows more time (a longer cap could reach further)."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    report = saved.get("report") or {}
    if report.get("stopped") == "time_cap" and float(budget.max_seconds) > float(report.get("max_seconds", 0.0)):
        return None
    return saved


def training_quality(report: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """Whether a trained baseline learned the task: its validation accuracy with a 95% Wilson
    interval against chance (1 / classes), and the share of its most predicted class.
    ``weak`` when the interval's lower end does not clear chance, or when it predicts one
    class for (nearly) every image (:func:`auditkit.baselines.training.is_constant`):
    comparisons against such a baseline say little. ``note`` says why in words."""
    n = int(report["val_images"])
    acc = float(report["val_acc"])
    chance = 1.0 / max(1, num_classes)
    low, high = wilson_interval(int(round(acc * n)), n)
    constant = is_constant(report)
    weak = not low > chance or constant
    quality: dict[str, Any] = {"val_acc": acc, "val_acc_ci_low": low, "val_acc_ci_high": high, "chance": chance, "weak": weak}
    if "majority_fraction" in report:
        quality.update(majority_fraction=float(report["majority_fraction"]), constant=constant)
    if weak:
        why = []
        if not low > chance:
            why.append(f"validation accuracy {acc:.2f} on {n} images is not above chance ({chance:.2f}) with 95% confidence")
        if constant:
            why.append(f"it predicts class {report.get('majority_class')} for {float(report['majority_fraction']):.0%} of "
                       f"{n} validation images")
        capped = " (its wall-time cap stopped training early)" if report.get("stopped") == "time_cap" else ""
        quality["note"] = (
            f"{' and '.join(why)}{capped}: comparisons against this baseline say little; train it longer "
            "(--baseline-steps), on a GPU, or give its weights (--baseline-weights)"
        )
    return quality


def pretrained_file(arch: str, weights_dir: str | None = None) -> Path | None:
    """The local file of ``arch``'s pretrained torchvision weights (``weights_dir``, then the
    torch hub cache), or None; nothing is downloaded."""
    return pretrained_weights.find_checkpoint(PRETRAINED[arch], weights_dir)


def _inner(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, ResizeInput) else model


def _load_pretrained(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str, *, heads: bool) -> None:
    """Load torchvision's pretrained ``arch`` weights (``state``, read from ``path``).
    ``heads=False``: the whole network, exactly (auxiliary heads dropped). ``heads=True``:
    every tensor whose shape fits; the classifier (and GoogLeNet's auxiliary classifiers) may
    stay freshly initialized for the task, but nothing else may be missing."""
    net = _inner(model)
    if not heads:
        try:
            net.load_state_dict(_strip_aux(state))
        except RuntimeError as exc:
            raise UsageError(f"baseline {arch}: {str(path)!r} is not torchvision's {PRETRAINED[arch]}: {exc}") from exc
        return
    own = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fitting]
    if any(not k.startswith(HEAD_PREFIXES) for k in missing):
        body = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
        raise UsageError(
            f"baseline {arch}: {str(path)!r} is not torchvision's {PRETRAINED[arch]}: it lacks or misshapes "
            f"{len(body)} tensors outside the classifier, e.g. {', '.join(body[:3])}"
        )
    net.load_state_dict(fitting, strict=False)


def _load_checkpoint(model: nn.Module, path: str, arch: str) -> None:
    """Load the user's state_dict for ``arch`` (``--baseline-weights``) with the reader of
    ``--weights``: the same accepted layouts, prefix stripping and one-line errors. Auxiliary
    heads are dropped, and so is the ``net.`` prefix of the small-image AlexNet wrapper."""
    what = f"--baseline-weights {arch}={path}"
    state = {k: v for k, v in read_state_dict(path, what).items() if not _WRAPPED_AUX_KEY.match(k)}
    net = _inner(model)
    load_state_dict(net, state, what, f"torchvision {arch} with {model_classes(net)} classes", extra_prefixes=("net.",))


def model_classes(net: nn.Module) -> int | None:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


__all__ = ["Budget", "Recipe", "TrainingReport", "RECIPES", "INITS", "available", "build", "load_baseline", "needs_train_split"]
