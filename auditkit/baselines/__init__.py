"""Classic baselines (AlexNet, GoogLeNet, ResNet) for the audit's task: built from the
torchvision architectures, with weights from a user checkpoint, local pretrained weights,
the on-disk cache, or training with each architecture's classic recipe."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torchvision
from torch import nn

from auditkit.baselines.training import Budget, Recipe, TrainingReport, train_classifier
from auditkit.data.base import AuditData
from auditkit.errors import UsageError
from auditkit.stats import wilson_interval
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, Target

log = logging.getLogger(__name__)

# AlexNet's stride-4 11x11 stem and three max-pools need inputs of at least 63 px.
ALEXNET_MIN_SIZE = 63
# Bumped whenever training code changes what a recipe produces, so caches retrain.
RECIPE_VERSION = 2
# Fine-tuning from pretrained weights uses the recipe's learning rate divided by this.
FINE_TUNE_LR_DIVISOR = 10.0
# Parameters a pretrained checkpoint may lack or size differently for the task: the heads.
HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.")

RECIPES: dict[str, Recipe] = {
    # Krizhevsky et al. 2012: SGD, momentum 0.9, weight decay 5e-4, dropout 0.5 (in the
    # torchvision classifier), learning rate 0.01 divided by 10 when validation stops improving.
    "alexnet": Recipe(lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="plateau"),
    # Szegedy et al. 2015: SGD momentum 0.9; the two auxiliary classifiers' losses weighted
    # 0.3 during training, the auxiliary heads dropped at audit time.
    "googlenet": Recipe(lr=0.01, momentum=0.9, weight_decay=2e-4, schedule="plateau", aux_weight=0.3),
    # He et al. 2016: SGD momentum 0.9, weight decay 1e-4, batch normalization, learning rate
    # 0.1 at batch 256 divided by 10 on plateaus; 0.01 here for batches of 32 (the linear
    # scaling rule of Goyal et al. 2017 gives 0.0125).
    "resnet18": Recipe(lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="plateau"),
    "resnet50": Recipe(lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="plateau"),
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
    payload = {
        "init": init,
        "data": data.fingerprint(),
        "arch": spec.arch,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "recipe": asdict(recipe),
        "budget": asdict(budget),
        "seed": seed,
        "recipe_version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _strip_aux(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "net.aux1.", "net.aux2."))}


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
) -> Target:
    """A baseline Target (role "baseline", named after the architecture) for ``data``.

    Weights, in order: ``checkpoint`` (a state_dict path); pretrained torchvision weights as
    they are when the task has 1000 classes and the file is local (``weights_dir``, then the
    torch hub cache; never downloaded); the cache of earlier trainings keyed by data
    fingerprint, architecture, recipe, budget, seed and initialization; otherwise training on
    the data's train split with the architecture's classic recipe: fine-tuned from the local
    pretrained weights when they exist (classifier resized, learning rate / 10), from scratch
    when they do not.

    Deterministic for a seed on the CPU: initialization and training draw from a seeded,
    forked random state, so the caller's random stream is left as it was.
    """
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _load_baseline(arch, data, device, seed, checkpoint, budget, progress, use_cache, weights_dir)


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
) -> Target:
    if arch not in RECIPES:
        raise UsageError(f"--baselines: unknown baseline {arch!r}; expected some of {', '.join(available())} or none")
    size = int(data.image_shape[-1])
    spec = BaselineSpec(arch, data.num_classes, size)
    budget = budget or Budget()
    recipe = RECIPES[arch]
    info: dict[str, Any] = {"adaptations": spec.adaptations(), "recipe": asdict(recipe)}
    pretrained = None if checkpoint else pretrained_file(arch, weights_dir)
    if checkpoint:
        model = build(spec)
        _load_checkpoint(model, checkpoint, arch)
        info["source"] = f"checkpoint {checkpoint}"
    elif pretrained is not None and data.num_classes == 1000:
        model = build(spec, pretrained=True)
        _load_pretrained(model, pretrained, arch, heads=False)
        info["source"] = f"pretrained {PRETRAINED[arch]} ({pretrained})"
    else:
        init = "scratch" if pretrained is None else f"pretrained {PRETRAINED[arch]}"
        if pretrained is not None:
            recipe = replace(recipe, lr=recipe.lr / FINE_TUNE_LR_DIVISOR)
            info.update(recipe=asdict(recipe), init=f"{init} ({pretrained}), classifier resized and fine-tuned")
        key = cache_key(spec, data, recipe, budget, seed, init)
        path = cache_dir() / f"{arch}-{key}.pt"
        model = build(spec, pretrained=pretrained is not None)
        if use_cache and path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
            info.update(source="cache", cache_path=str(path), training=saved["report"])
        else:
            if data.train is None or len(data.train) == 0:
                raise UsageError(
                    f"baseline {arch}: data {data.spec!r} has no train split to train it on; "
                    "give a checkpoint or use --baselines none"
                )
            trainable = build(spec, aux_logits=True, pretrained=pretrained is not None)
            if pretrained is not None:
                _load_pretrained(trainable, pretrained, arch, heads=True)
            report = train_classifier(
                trainable, data, recipe, budget, device=device, seed=seed, progress=progress, name=arch
            )
            model.load_state_dict(_strip_aux(trainable.state_dict()))
            info.update(source="trained", training=asdict(report))
            if use_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save({"state_dict": model.state_dict(), "report": asdict(report)}, tmp)
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


def training_quality(report: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """Whether a trained baseline learned the task: its validation accuracy with a 95% Wilson
    interval against chance (1 / classes). ``weak`` when the interval's lower end does not
    clear chance, so comparisons against the baseline say little; ``note`` says so in words."""
    n = int(report["val_images"])
    acc = float(report["val_acc"])
    chance = 1.0 / max(1, num_classes)
    low, high = wilson_interval(int(round(acc * n)), n)
    weak = not low > chance
    quality: dict[str, Any] = {"val_acc": acc, "val_acc_ci_low": low, "val_acc_ci_high": high, "chance": chance, "weak": weak}
    if weak:
        quality["note"] = (
            f"validation accuracy {acc:.2f} on {n} images is not above chance ({chance:.2f}) with 95% confidence: "
            "comparisons against this baseline say little; train it longer (--baseline-epochs, --baseline-seconds), "
            "on a GPU, or give its weights (baseline_weights)"
        )
    return quality


def pretrained_file(arch: str, weights_dir: str | None = None) -> Path | None:
    """The local file of ``arch``'s pretrained torchvision weights (``weights_dir``, then the
    torch hub cache), or None; nothing is downloaded."""
    from auditkit.models.loaders import find_pretrained_file

    enum_name, member = PRETRAINED[arch].split(".")
    return find_pretrained_file(getattr(getattr(torchvision.models, enum_name), member), weights_dir)


def _inner(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, ResizeInput) else model


def _load_pretrained(model: nn.Module, path: Path, arch: str, *, heads: bool) -> None:
    """Load torchvision's pretrained ``arch`` weights from ``path``. ``heads=False``: the
    whole network, exactly (auxiliary heads dropped). ``heads=True``: every tensor whose shape
    fits; the classifier (and GoogLeNet's auxiliary classifiers) may stay freshly initialized
    for the task, but nothing else may be missing."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"baseline {arch}: cannot read pretrained weights {str(path)!r}: {exc}") from exc
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
    if not os.path.isfile(path):
        raise UsageError(f"baseline {arch}: checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"baseline {arch}: cannot read checkpoint {path!r} as a state_dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net = _inner(model)
    state = _strip_aux({k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()})
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise UsageError(
            f"baseline {arch}: checkpoint {path!r} does not fit torchvision {arch} with {model_classes(net)} classes: "
            + "; ".join(problems[:3])
        ) from exc


def model_classes(net: nn.Module) -> int | None:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


__all__ = ["Budget", "Recipe", "TrainingReport", "RECIPES", "available", "build", "load_baseline"]
