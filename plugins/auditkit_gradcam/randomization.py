"""The ``gradcam.randomization`` check (Adebayo et al. 2018): randomize a copy of the model block
by block from the logits down and measure how much of the Grad-CAM map survives each step."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

import auditkit
from auditkit import Artifact, Check, Cost, Findings, Threshold
from auditkit.toolkit import AuditContext, Batch, is_constant, minmax_normalize, upsample

from auditkit_gradcam.maps import Explainer, GradCamSettings, plan_maps
from auditkit_gradcam.rendering import overlay_image, png_bytes, strip
from auditkit_gradcam.statistics import spearman_rows, ssim_rows

# Containers whose children are the blocks: a Sequential of stages or a ModuleList of layers
# groups too much to be one randomization step.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# At most this many randomization steps appear in the picture strip (the curve shows them all).
_STRIP_STEPS = 7


@dataclass(frozen=True)
class Block:
    """One randomization step: a module (by name) and the parameters it owns that no later
    (closer to the logits) block owns."""

    name: str
    parameters: tuple[str, ...]


def cascade_blocks(model: nn.Module, call_order: list[str], body: str = "") -> list[Block]:
    """The model's blocks with parameters, from the logits down.

    Blocks are the children of the model's body (``body``: the qualified name of the network
    inside single-child wrappers, ``Target.body_name``; "" for the model itself), opened up
    recursively into their children where they group too much to be one step:

    * containers (``Sequential``, ``ModuleList``, ``ModuleDict``) always: ResNet's ``fc``,
      ``layer4.1``, ``layer4.0``, ..., ``conv1``; AlexNet's classifier and feature layers one
      by one;
    * any other module that holds more than half of the body's parameters and a stack of
      blocks (a container of modules with children of their own): a sub-network or a stage,
      not a block; the modules of the same class beside it (the other stages) are opened up
      with it. Hugging Face's ``ViTForImageClassification`` gives ``classifier``,
      ``vit.layernorm``, ``vit.layers.11``, ..., ``vit.layers.0``, ``vit.embeddings`` instead
      of ``classifier`` and the whole ``vit``; torchvision's ViT opens its ``encoder`` into
      ``encoder.ln`` and the encoder layers; timm's Swin and ConvNeXt come out block by block
      (``layers.3.blocks.1``, ``layers.3.blocks.0``, ``layers.3.downsample``, ...), as
      torchvision's ConvNeXt, a Sequential of stages, does; a CNN behind a parameter-free
      module in a Sequential (``Sequential(normalize, resnet)``) gives ResNet's blocks. A
      transformer block holds no stack, so a lone block stays one step. In torchvision's
      CNNs (and timm's ResNets and EfficientNets) no module holding a stack holds half of the
      parameters (the layers that do, AlexNet's and VGG's first linear layers, have no
      children), so their blocks are the ones of the rule above.

    Names are qualified inside ``model``, so a wrapped ResNet gives ``net.fc``,
    ``net.layer4.1``, ... in the same order as the plain one. They are ordered by when their
    forward pass ends (``call_order``, module names in call order, as ``Target.layers``), last
    first; blocks that do not run (auxiliary heads in eval mode) are left out. Parameters held
    directly by the body, by the wrappers around it or by a module opened up (a ViT's class
    token and position embedding) come last, as one step. A parameter shared by two blocks
    belongs to the first one randomized.
    """
    position: dict[str, int] = {}
    for i, name in enumerate(call_order):
        position[name] = i

    def ran_at(name: str) -> int:
        prefix = name + "."
        hits = [i for n, i in position.items() if n == name or n.startswith(prefix)]
        return max(hits) if hits else -1

    root = model.get_submodule(body) if body else model
    prefix = f"{body}." if body else ""
    opened: list[str] = []
    candidates = [
        (name, module) for name, module in _blocks_of(root, prefix, _n_parameters(root), opened)
        if any(True for _ in module.parameters())
    ]
    timed = sorted(((ran_at(name), name, module) for name, module in candidates if ran_at(name) >= 0), reverse=True)
    seen: set[int] = set()
    blocks = []
    for _, name, module in timed:
        owned = []
        for pname, p in module.named_parameters(prefix=name):
            if id(p) not in seen:
                seen.add(id(p))
                owned.append(pname)
        if owned:
            blocks.append(Block(name, tuple(owned)))
    # The modules opened up, the body and the wrappers around it ("" and each prefix of the
    # body's name), deepest first.
    parts = body.split(".") if body else []
    holders = {".".join(parts[:i]) for i in range(len(parts) + 1)} | set(opened)
    own = []
    for holder in sorted(holders, key=lambda h: (-h.count(".") - bool(h), h)):
        for n, p in model.get_submodule(holder).named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                own.append(f"{holder}.{n}" if holder else n)
    if own:
        blocks.append(Block("(model's own parameters)", tuple(own)))
    return blocks


def _blocks_of(module: nn.Module, prefix: str, total: int, opened: list[str]) -> Iterator[tuple[str, nn.Module]]:
    # A stage holding most of the weights opens its sibling stages too, so that all stages
    # come out block by block, as a Sequential of stages does.
    stage_types = {type(child) for child in module.children() if _is_subnetwork(child, total)}
    for name, child in module.named_children():
        full = prefix + name
        container = isinstance(child, _CONTAINERS) and any(True for _ in child.children())
        if container or type(child) in stage_types:
            opened.append(full)
            yield from _blocks_of(child, full + ".", total, opened)
        else:
            yield full, child


def _is_subnetwork(module: nn.Module, total: int) -> bool:
    return 2 * _n_parameters(module) > total and _holds_stack(module)


def _holds_stack(module: nn.Module) -> bool:
    # A stack of blocks: a container of modules with children of their own. A transformer
    # block holds none (its MLP, a Sequential in torchvision, holds layers), so a lone block
    # (a one-block stage, a one-block model) stays one step.
    return any(
        isinstance(m, _CONTAINERS) and any(any(True for _ in c.children()) for c in m.children())
        for m in module.modules()
    )


def _n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


@torch.no_grad()
def randomize_(model: nn.Module, block: Block, generator: torch.Generator) -> None:
    """Redraw every parameter of ``block`` in place from N(0, rms^2), rms being that tensor's
    own root mean square: the learned values, their signs and their mean are gone, the scale
    that keeps activations alive stays. (Adebayo et al. re-initialize with a truncated normal;
    a scale-matched Gaussian does the same for any module, including ones without
    ``reset_parameters``. Keeping each tensor's mean would keep learned information: a layer
    whose weights all share a sign would still compute the same map.)"""
    params = dict(model.named_parameters())
    for name in block.parameters:
        p = params[name]
        rms = p.detach().double().pow(2).mean().sqrt().cpu()
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        p.copy_((noise * rms).to(device=p.device, dtype=p.dtype))


class GradCamRandomization(Check):
    """Cascading model-parameter randomization (Adebayo et al. 2018, "Sanity checks for
    saliency maps").

    On a deep copy of the model, blocks are re-drawn at random one after another from the
    logits down (see :func:`cascade_blocks`); after each step the Grad-CAM maps of the same
    images and classes are compared with the original maps by Spearman rank correlation and
    SSIM (both maps upsampled to the image, SSIM on min-max normalized maps). An explanation of
    the model must change once the model's weights are gone; a map that stays the same is
    explaining the input, not the model. ``max_rank_corr`` is the largest mean rank
    correlation over the steps; the check fails when it exceeds 0.5, i.e. when, after some
    step, the map still ranks the pixels more like the trained model's map than unlike it.
    Images whose original map is empty are left out; a randomized map that is empty counts as
    rank correlation 0 (it keeps no ordering).
    """

    id = "gradcam.randomization"
    shards = True
    requires = ("white_box", "layers")
    headline = ("max_rank_corr",)
    quick_settings = {"max_images": 8}
    metrics = ("max_rank_corr", "final_rank_corr", "max_ssim", "final_ssim", "n_blocks", "n_images", "empty_original_maps")
    directions = {
        "max_rank_corr": "lower", "final_rank_corr": "lower", "max_ssim": "lower", "final_ssim": "lower",
        "n_*": None, "empty_original_maps": None,
    }
    thresholds = (Threshold("max_rank_corr", "max", 0.5),)
    # A mean over images (with a non-empty original map) against a bar: as many as a one-sided
    # sign test over the images needs to reach the 5% level at all (0.5^n < 0.05 -> 5).
    min_sample = 5

    @dataclass
    class Settings(GradCamSettings):
        """Settings of ``gradcam.randomization`` (and those of :class:`GradCamSettings`).

        ``max_images``: at most this many evaluation images (default 16): every block
        randomized costs one Grad-CAM pass over them, so the check costs (blocks + 1) passes
        (12 for ResNet-18, 22 for EfficientNet-Lite0), or one fewer when another Grad-CAM
        check has already computed the original maps (they are shared).
        """

        check_id: ClassVar[str] = "gradcam.randomization"

        max_images: int | None = 16

    def estimate(self, ctx: AuditContext) -> Cost:
        """Gradient: the original maps no earlier check shared and the layer probe
        (:func:`plan_maps`), then one Grad-CAM pass of the randomized copy per block and per
        image whose original map is not empty. Where the original maps are already shared
        that count is exact (the empty ones are left out as the run leaves them out); where
        this check computes them itself, every image is counted (an upper bound, exact when
        no map is empty)."""
        plan = plan_maps(ctx, self.settings)
        if not plan.batches:
            return Cost(gradient=plan.gradient_passes)
        n_blocks = len(_blocks(ctx.target))
        if not n_blocks:  # skipped once the layer is chosen, before any map
            return Cost(gradient=plan.probe_passes)
        size = getattr(ctx.target, "input_size", None)
        randomized = 0
        for index, stored in zip(plan.batches, plan.stored):
            if stored is None or size is None:
                randomized += len(index)
            else:  # what run keeps: the maps upsampled to the images' size, as evaluation_maps gives them
                randomized += int((~is_constant(upsample(stored, tuple(size[-2:])))).sum())
        return Cost(gradient=plan.gradient_passes + n_blocks * randomized)

    def run(self, ctx: AuditContext) -> Findings:
        explainer = Explainer(ctx, self.settings)
        blocks = _blocks(ctx.target)
        if not blocks:
            auditkit.skip(f"{ctx.target.name} has no parameters to randomize")
        steps = len(blocks)
        # per batch, by its first evaluation position: the sums of each block's rank
        # correlations and SSIMs over the batch's images [steps] (summed in evaluation order
        # after the loop, on one process or several), and the first picture strip
        batch_sums: list[tuple[int, tuple[torch.Tensor, torch.Tensor]]] = []
        strips: list[tuple[int, list[Any]]] = []
        n_used = 0
        n_empty = 0

        def randomize_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes is freed when it returns, not kept by
            # the loop's variables through the next batch's work.
            nonlocal n_used, n_empty
            classes = explainer.classes(batch)
            original = explainer.evaluation_maps(batch)
            keep = ~is_constant(original)
            n_empty += int((~keep).sum())
            if not bool(keep.any()):
                return
            images, classes, original = batch.images[keep], classes[keep], original[keep]
            original_norm = minmax_normalize(original)
            # A fresh copy and a generator seeded the same way for every batch: each batch sees
            # the same randomized weights, and memory does not grow with the number of images.
            twin = copy.copy(ctx.target)
            twin.model = copy.deepcopy(ctx.target.model)
            generator = torch.Generator().manual_seed(ctx.seed)
            show = not strips
            strip_pictures = [overlay_image(images[0], original[0])] if show else []
            shown_steps = set(_spread(steps, _STRIP_STEPS))
            rank_batch = torch.zeros(steps, dtype=torch.float64, device=ctx.device)
            ssim_batch = torch.zeros(steps, dtype=torch.float64, device=ctx.device)
            for step, block in enumerate(blocks):
                randomize_(twin.model, block, generator)
                randomized = explainer.maps(twin, images, classes)
                rank = torch.nan_to_num(spearman_rows(original, randomized), nan=0.0)
                rank_batch[step] = rank.double().sum()
                ssim_batch[step] = ssim_rows(original_norm, minmax_normalize(randomized)).double().sum()
                if show and step in shown_steps:
                    strip_pictures.append(overlay_image(images[0], randomized[0]))
            batch_sums.append((int(batch.index[0]), (rank_batch, ssim_batch)))
            if show:
                strips.append((int(batch.index[0]), strip_pictures))
            n_used += int(keep.sum())
            del twin

        for batch in ctx.progress(ctx.batches(limit=explainer.n_images), total=ctx.n_batches(limit=explainer.n_images),
                                  desc="randomizing blocks"):
            randomize_batch(batch)

        # every process's batches (one process: its own), summed in evaluation order
        world = ctx.world
        n_used, n_empty = world.all_sum(n_used), world.all_sum(n_empty)
        rank_sum = torch.zeros(steps, dtype=torch.float64, device=ctx.device)
        ssim_sum = torch.zeros(steps, dtype=torch.float64, device=ctx.device)
        for rank_batch, ssim_batch in world.gather_ordered(batch_sums):
            rank_sum += rank_batch.to(ctx.device)
            ssim_sum += ssim_batch.to(ctx.device)
        firsts = world.gather_ordered(strips)
        strip_pictures = firsts[0] if firsts else []
        layer = explainer.layer
        if n_used == 0:
            nan = math.nan
            return Findings(
                metrics={"max_rank_corr": nan, "final_rank_corr": nan, "max_ssim": nan, "final_ssim": nan,
                         "n_blocks": float(steps), "n_images": 0.0, "empty_original_maps": float(n_empty)},
                failures=[f"the Grad-CAM maps of the original model are empty on all {n_empty} images at layer "
                          f"{layer.name}: there is no explanation to test"],
                details={**layer.to_details(), "explained_class": explainer.explains_note},
            )
        rank_curve = (rank_sum / n_used).tolist()
        ssim_curve = (ssim_sum / n_used).tolist()
        metrics = {
            "max_rank_corr": max(rank_curve),
            "final_rank_corr": rank_curve[-1],
            "max_ssim": max(ssim_curve) if not any(math.isnan(s) for s in ssim_curve) else math.nan,
            "final_ssim": ssim_curve[-1],
            "n_blocks": float(steps),
            "n_images": float(n_used),
            "empty_original_maps": float(n_empty),
        }
        names = [b.name for b in blocks]
        worst_step = max(range(steps), key=lambda i: rank_curve[i])
        rule = "; ".join(t.describe() for t in self.active_thresholds) or "no thresholds (report only)"
        message = (
            f"layer {layer.describe()}; explaining {explainer.explains_note} on {n_used} images"
            + (f" ({n_empty} with an empty original map left out)" if n_empty else "")
            + f": cascading randomization of {steps} blocks ({names[0]} ... {names[-1]}); mean rank correlation "
            f"with the original map after each block: {', '.join(f'{r:.2f}' for r in rank_curve)}; "
            f"max_rank_corr {metrics['max_rank_corr']:.3f} (after {names[worst_step]}); "
            f"final_ssim {metrics['final_ssim']:.3f}; rule: {rule}"
        )
        x = list(range(steps + 1))
        artifacts = [
            Artifact("rank_correlation_by_block", "curve",
                     {"x": x, "y": [1.0, *rank_curve], "label": "Spearman rank correlation with the original map",
                      "x_labels": ["original", *names]},
                     caption="mean Spearman rank correlation of Grad-CAM maps after randomizing each block, logits first"),
            Artifact("ssim_by_block", "curve",
                     {"x": x, "y": [1.0, *ssim_curve], "label": "SSIM with the original map", "x_labels": ["original", *names]},
                     caption="mean SSIM of min-max normalized Grad-CAM maps after randomizing each block, logits first"),
        ]
        if strip_pictures:
            shown = [names[i] for i in _spread(steps, _STRIP_STEPS)]
            artifacts.append(
                Artifact("maps_by_block", "image/png", png_bytes(strip(strip_pictures)),
                         caption="first image: original map, then after randomizing up to " + ", ".join(shown))
            )
        return Findings(
            metrics=metrics,
            message=message,
            artifacts=artifacts,
            details={
                **layer.to_details(),
                "explained_class": explainer.explains_note,
                "blocks": names,
                "rank_corr_by_block": dict(zip(names, rank_curve)),
                "ssim_by_block": dict(zip(names, ssim_curve)),
                "rule": rule,
            },
        )


def _blocks(target: Any) -> list[Block]:
    """The randomization steps of ``target``'s model (:func:`cascade_blocks`), from its probe's record."""
    return cascade_blocks(target.model, [info.name for info in target.layers], getattr(target, "body_name", ""))


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` step indices spread over 0..n-1, always including the last."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
