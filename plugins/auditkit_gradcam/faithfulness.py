"""The ``gradcam.faithfulness`` check (Petsiuk et al. 2018): delete or insert pixels in the order
Grad-CAM ranks them and watch the class probability, beside the same curves for a random order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from auditkit import Artifact, Check, Cost, Findings, Threshold, UsageError
from auditkit.toolkit import AuditContext, Batch

from auditkit_gradcam.maps import Explainer, GradCamSettings, check_fraction, check_positive_int, plan_maps
from auditkit_gradcam.statistics import bootstrap_mean_interval, paired_sign_test

FILLS = ("black", "gray", "blur")
# The fills that are one constant image whatever the image (black, gray): the model's answer to
# it is computed once per run, from one image, and read for every image, instead of once per
# image. Only batch-size numerics can tell the two apart: bit for bit the same on the CPU for
# TinyGAPNet, and for ResNet-18 at 64 px with black; with gray, ResNet-18's one-image forward
# differs from its batched one by up to 2.2e-8 in probability (the metrics by up to 5.4e-9).
CONSTANT_SUBSTRATES = frozenset({"black", "gray"})
# One-sided significance level of the default pass rule.
SIGNIFICANCE = 0.05
# Petsiuk et al. blur the insertion start with an 11x11 Gaussian of sigma 5 at 224 x 224.
BLUR_SIGMA_AT_224 = 5.0
BLUR_WINDOW_AT_224 = 11
_VERB = {"deletion": "deleted", "insertion": "inserted"}
# A class probability that moves less than this over every curve has not moved at all.
_FLAT = 1e-6


def saliency_ranks(saliency: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rank [B,H*W] of every pixel in the order of decreasing ``saliency`` [B,H,W] (0 = most
    salient). Ties (the many zeros of a ReLU'd map) are broken at random, not by position,
    so the order of unexplained pixels carries no spatial bias."""
    flat = saliency.flatten(1)
    shuffle = random_ranks(flat.shape[0], flat.shape[1], generator, flat.device)
    order = torch.argsort(shuffle, dim=1)  # a random permutation of pixel indices
    by_saliency = torch.argsort(flat.gather(1, order), dim=1, descending=True, stable=True)
    deletion_order = order.gather(1, by_saliency)
    ranks = torch.empty_like(deletion_order)
    ranks.scatter_(1, deletion_order, torch.arange(flat.shape[1], device=flat.device).expand_as(deletion_order))
    return ranks


def random_ranks(b: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A uniformly random rank [B,n] of n pixels for each of b images (drawn on the CPU from
    ``generator`` so that it repeats for a seed on any device)."""
    return torch.argsort(torch.rand(b, n, generator=generator), dim=1).argsort(dim=1).to(device)


def step_counts(n_pixels: int, steps: int) -> list[int]:
    """How many pixels are deleted (or inserted) after each of ``steps`` equal steps, 0 first."""
    return [round(s * n_pixels / steps) for s in range(steps + 1)]


def trapezoid_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves [B,S+1] sampled at S equal steps over [0,1] (trapezoidal rule)."""
    s = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / s


def gaussian_blur(images: torch.Tensor, sigma: float, window: int) -> torch.Tensor:
    """Depthwise Gaussian blur of [B,3,H,W] with reflected borders."""
    half = window // 2
    coords = torch.arange(window, device=images.device, dtype=images.dtype) - half
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, -1)
    c = images.shape[1]
    pad = min(half, images.shape[-1] - 1, images.shape[-2] - 1)
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect") if pad > 0 else images
    if pad < half:  # a tiny image: crop the window to what the reflection can supply
        g = g[..., half - pad : half + pad + 1]
        g = g / g.sum()
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def substrate(images: torch.Tensor, kind: str) -> torch.Tensor:
    """What deleted pixels become, or what insertion starts from: ``black``, ``gray`` (0.5) or
    ``blur`` (Petsiuk et al.'s Gaussian blur, sigma 5 px at 224 scaled with the image)."""
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "gray":
        return torch.full_like(images, 0.5)
    scale = min(images.shape[-2:]) / 224.0
    sigma = max(BLUR_SIGMA_AT_224 * scale, 0.5)
    window = max(3, 2 * round(BLUR_WINDOW_AT_224 * scale / 2) + 1)
    return gaussian_blur(images, sigma, window)


class GradCamFaithfulness(Check):
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE).

    Pixels are ordered by the Grad-CAM map of the explained class (upsampled to the image;
    ties broken at random). Deletion replaces the most salient pixels first, in ``steps``
    equal steps, with black; insertion starts from a blurred copy and puts the most salient
    original pixels back first. After each step the softmax probability of the explained
    class is measured; ``deletion_auc`` (low is faithful) and ``insertion_auc`` (high is
    faithful) are the areas under the mean curves. The same curves for a random pixel order
    (``*_auc_random``) are the chance level. The check passes when Grad-CAM's order beats the
    random order on both curves, each at the one-sided 5% level of an exact paired sign test
    over the images (``deletion_p_value``, ``insertion_p_value``); the paired gains
    (``deletion_gain = deletion_auc_random - deletion_auc``, ``insertion_gain = insertion_auc -
    insertion_auc_random``) are reported with bootstrap intervals. It fails outright when the
    class probability never moves (the model ignores its input, so no order can be faithful).
    """

    id = "gradcam.faithfulness"
    shards = True
    requires = ("white_box",)
    headline = ("deletion_auc", "insertion_auc")
    quick_settings = {"max_images": 12}
    metrics = (
        "deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random",
        *(f"{name}{part}" for name in ("deletion_gain", "insertion_gain") for part in ("", "_ci_low", "_ci_high")),
        "deletion_p_value", "insertion_p_value", "n_images", "steps",
    )
    directions = {
        "deletion_auc": "lower",
        "insertion_auc": "higher",
        "*_random": None,  # the random-map control
        "deletion_gain*": "higher",
        "insertion_gain*": "higher",
        "*_p_value": "lower",
        "n_images": None,
        "steps": None,
    }
    thresholds = (
        Threshold("deletion_p_value", "max", SIGNIFICANCE),
        Threshold("insertion_p_value", "max", SIGNIFICANCE),
    )
    # The exact one-sided sign tests at SIGNIFICANCE can only reach it from 5 images (0.5^n < 0.05).
    min_sample = 5

    @dataclass
    class Settings(GradCamSettings):
        """Settings of ``gradcam.faithfulness`` (and those of :class:`GradCamSettings`).

        ``max_images``: at most this many evaluation images (default 32); each costs about
        ``4 * steps`` forward passes.
        ``steps``: equal steps from no pixel to all pixels, each of round(pixels / steps)
        pixels (default 20, 5% of the image a step; Petsiuk et al. take 224 steps of 224
        pixels at 224 x 224, which costs ten times as many forward passes).
        ``deletion_fill``: what deleted pixels become: ``black`` (Petsiuk et al.), ``gray``, ``blur``.
        ``insertion_start``: what insertion starts from: ``blur`` (Petsiuk et al.), ``black``, ``gray``.
        ``confidence``, ``bootstrap_resamples``: the paired bootstrap intervals of the gains.
        """

        check_id: ClassVar[str] = "gradcam.faithfulness"

        max_images: int | None = 32
        steps: int = 20
        deletion_fill: Literal["black", "gray", "blur"] = "black"
        insertion_start: Literal["black", "gray", "blur"] = "blur"
        confidence: float = 0.95
        bootstrap_resamples: int = 2000

        def __post_init__(self) -> None:
            super().__post_init__()
            where = f"settings of {self.check_id!r}"
            check_positive_int(where, "steps", self.steps)
            for name in ("deletion_fill", "insertion_start"):
                if getattr(self, name) not in FILLS:
                    raise UsageError(f"{where}: {name} must be one of {', '.join(FILLS)}, got {getattr(self, name)!r}")
            check_fraction(where, "confidence", self.confidence)
            check_positive_int(where, "bootstrap_resamples", self.bootstrap_resamples)

    def run(self, ctx: AuditContext) -> Findings:
        s = self.settings
        explainer = Explainer(ctx, s)
        clean = ctx.clean
        aucs: dict[str, list[torch.Tensor]] = {k: [] for k in ("deletion", "deletion_random", "insertion", "insertion_random")}
        positions: list[torch.Tensor] = []  # the evaluation positions of the aucs' rows
        batch_sums: list[tuple[int, dict[str, torch.Tensor]]] = []  # (first position, each curve's sum)
        # softmax [K] of a constant substrate (CONSTANT_SUBSTRATES), by kind: one forward per run
        constant_probs: dict[str, torch.Tensor] = {}
        moved = False
        n = 0

        def score_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes is freed when it returns, not kept by
            # the loop's variables through the next batch's work.
            nonlocal moved, n
            images = batch.images
            classes = explainer.classes(batch)
            saliency = explainer.evaluation_maps(batch)
            probs = clean.probs_at(batch.index)
            intact_p = probs.gather(1, classes.to(probs.device).view(-1, 1)).view(-1).to(images.device)
            ranks = {
                "": saliency_ranks(saliency, ctx.generator),
                "_random": random_ranks(images.shape[0], saliency[0].numel(), ctx.generator, images.device),
            }
            fill = substrate(images, s.deletion_fill)
            start = substrate(images, s.insertion_start)
            counts = step_counts(saliency[0].numel(), s.steps)
            # Both orders share their end points: the intact image, all pixels deleted, the
            # insertion start (the same images as the deletion's end when the two kinds agree).
            ends: dict[str, torch.Tensor] = {}
            for kind, substrate_images in ((s.deletion_fill, fill), (s.insertion_start, start)):
                if kind in CONSTANT_SUBSTRATES:
                    if kind not in constant_probs:
                        constant_probs[kind] = self._probabilities(ctx, substrate_images[:1])[0]
                    ends[kind] = constant_probs[kind][classes]
                elif kind not in ends:
                    ends[kind] = self._probability(ctx, substrate_images, classes)
            deleted_p, start_p = ends[s.deletion_fill], ends[s.insertion_start]
            sums: dict[str, torch.Tensor] = {}
            for suffix, rank in ranks.items():
                rank = rank.view(images.shape[0], 1, *images.shape[-2:])
                deletion = [intact_p]
                insertion = [start_p]
                for k in counts[1:-1]:
                    chosen = rank < k
                    deletion.append(self._probability(ctx, torch.where(chosen, fill, images), classes))
                    insertion.append(self._probability(ctx, torch.where(chosen, images, start), classes))
                deletion.append(deleted_p)
                insertion.append(intact_p)
                for name, points in (("deletion", deletion), ("insertion", insertion)):
                    curve = torch.stack(points, dim=1)
                    moved = moved or bool(((curve - curve[:, :1]).abs() > _FLAT).any())
                    aucs[name + suffix].append(trapezoid_auc(curve))
                    sums[name + suffix] = curve.double().sum(dim=0)
            batch_sums.append((int(batch.index[0]), sums))
            positions.append(batch.index.to(ctx.device))
            n += images.shape[0]

        for batch in ctx.progress(ctx.batches(limit=explainer.n_images), total=ctx.n_batches(limit=explainer.n_images),
                                  desc="deletion and insertion"):
            score_batch(batch)

        # every process's images (one process: as they are), in evaluation order
        world = ctx.world
        index = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long, device=ctx.device)
        _, auc = world.gather_rows(index, {k: torch.cat(v).double() for k, v in aucs.items()} if positions else {})
        n, moved = world.all_sum(n), any(world.all_gather(moved))
        curve_sums: dict[str, torch.Tensor] = {}
        for sums in world.gather_ordered(batch_sums):
            for name, total in sums.items():  # summed batch after batch, as one process sums them
                curve_sums[name] = curve_sums.get(name, 0) + total.to(ctx.device)
        metrics: dict[str, float] = {
            "deletion_auc": float(auc["deletion"].mean()),
            "insertion_auc": float(auc["insertion"].mean()),
            "deletion_auc_random": float(auc["deletion_random"].mean()),
            "insertion_auc_random": float(auc["insertion_random"].mean()),
        }
        for name, diff in (("deletion_gain", auc["deletion_random"] - auc["deletion"]),
                           ("insertion_gain", auc["insertion"] - auc["insertion_random"])):
            metrics[name] = float(diff.mean())
            low, high = bootstrap_mean_interval(diff, ctx.generator, s.confidence, s.bootstrap_resamples)
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
            metrics[name.replace("gain", "p_value")] = paired_sign_test(diff)
        metrics["n_images"] = float(n)
        metrics["steps"] = float(s.steps)
        failures = []
        if not moved:
            failures.append(
                "the class probability does not move when pixels are deleted or inserted: the model ignores its "
                "input, so no pixel order can be faithful"
            )
        rule = "; ".join(t.describe() for t in self.active_thresholds) or "no thresholds (report only)"
        message = (
            f"layer {explainer.layer.describe()}; explaining {explainer.explains_note} on {n} images, {s.steps} steps: "
            f"deletion_auc {metrics['deletion_auc']:.3f} vs random order {metrics['deletion_auc_random']:.3f} "
            f"(fill {s.deletion_fill}); insertion_auc {metrics['insertion_auc']:.3f} vs random order "
            f"{metrics['insertion_auc_random']:.3f} (start {s.insertion_start}); rule: {rule} "
            f"(deletion_p_value {metrics['deletion_p_value']:.3g}, insertion_p_value {metrics['insertion_p_value']:.3g})"
        )
        x = [k / s.steps for k in range(s.steps + 1)]
        labels = {
            "deletion": "deletion, Grad-CAM order",
            "deletion_random": "deletion, random order",
            "insertion": "insertion, Grad-CAM order",
            "insertion_random": "insertion, random order",
        }
        artifacts = [
            Artifact(f"{name}_curve", "curve", {"x": x, "y": (total / n).tolist(), "label": labels[name]},
                     caption=f"mean probability of the explained class against the fraction of pixels {_VERB[name.split('_')[0]]} ({labels[name]})")
            for name, total in curve_sums.items()
        ]
        return Findings(
            metrics=metrics,
            message=message,
            failures=failures,
            artifacts=artifacts,
            details={
                **explainer.layer.to_details(),
                "explained_class": explainer.explains_note,
                "deletion_fill": s.deletion_fill,
                "insertion_start": s.insertion_start,
                "rule": rule,
            },
        )

    def estimate(self, ctx: AuditContext) -> Cost:
        """Forward: at each of the ``steps - 1`` inner steps, deletion and insertion in both
        orders (4 per image); the end points: one per image for a blurred fill or start (one
        for both when both blur), one per run for a constant one (black, gray). Gradient: the
        Grad-CAM maps not already shared, and the layer probe (:func:`plan_maps`)."""
        s = self.settings
        plan = plan_maps(ctx, s)
        n = sum(len(index) for index in plan.batches)
        kinds = {s.deletion_fill, s.insertion_start}
        per_image = 4 * (s.steps - 1) + len(kinds - CONSTANT_SUBSTRATES)
        per_run = len(kinds & CONSTANT_SUBSTRATES) if n else 0
        return Cost(forward=n * per_image + per_run, gradient=plan.gradient_passes)

    @staticmethod
    @torch.no_grad()
    def _probabilities(ctx: AuditContext, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities [B,K] of every class for ``images``."""
        return torch.softmax(ctx.forward(images).float(), dim=1)

    @staticmethod
    @torch.no_grad()
    def _probability(ctx: AuditContext, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        probs = GradCamFaithfulness._probabilities(ctx, images)
        return probs.gather(1, classes.view(-1, 1)).squeeze(1)

