"""The ``gradcam.localization`` check: does the Grad-CAM evidence lie on the object? Pointing
game against its center baseline, energy in the box against the box's area, and box IoU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

import auditkit
from auditkit import Artifact, Check, Findings, Threshold, UsageError
from auditkit.toolkit import (  # noqa: F401  (re-exported for the check's users and tests)
    AuditContext,
    POINTING_TOLERANCE_AT_224,
    as_box_sets,
    box_masks,
    boxes_from_masks,
    center_hits,
    energy_in_region,
    is_constant,
    minmax_normalize,
    peak_points,
    pointing_hits,
    pointing_tolerance_px,
    wilson_interval,
)

from auditkit_gradcam.maps import Explainer, GradCamSettings, check_fraction, check_positive_int
from auditkit_gradcam.rendering import draw_box, draw_point, overlay_image, png_bytes
from auditkit_gradcam.statistics import bootstrap_mean_interval, paired_sign_test

# Zhou et al. (2016): a localization is correct when its box overlaps the object's with IoU >= 0.5.
IOU_HIT = 0.5
# The default pass rule: pointing beats the center baseline at this one-sided significance
# level, and the energy gain's lower 95% bound reaches this share of the map's mass.
SIGNIFICANCE = 0.05
ENERGY_MARGIN = 0.05


def connected_components(foreground: torch.Tensor) -> torch.Tensor:
    """8-connected components of bool ``foreground`` [B,H,W]: long [B,H,W], 0 on the
    background, each component labelled with the largest (row-major index + 1) of its pixels.

    Batched on the device, as in GPU union-find labelling: every pixel points at a pixel of
    its component with a larger or equal index; each round, a 3x3 max pool finds the largest
    pointer among a pixel's neighbours and hooks the pixel's root to it, then pointer jumping
    (p = p[p]) flattens the trees. Pointers only grow, so the trees stay acyclic, and the
    rounds needed grow with the logarithm of a component's size rather than its length.
    """
    b, h, w = foreground.shape
    n = b * h * w
    fg = foreground.reshape(-1)
    pointer = torch.arange(n, device=foreground.device)
    # max_pool2d needs floating point, exact for every index: float32 up to 2**24 pixels.
    dtype = torch.float32 if n < 2**24 else torch.float64
    while True:
        grid = torch.where(fg, pointer.to(dtype), torch.full((), -1.0, dtype=dtype, device=fg.device))
        largest = F.max_pool2d(grid.view(b, 1, h, w), 3, stride=1, padding=1).view(-1).long()
        largest = torch.where(fg, largest, pointer)  # background pixels stay their own roots
        hooked = pointer.scatter_reduce(0, pointer, largest, reduce="amax")
        hooked = torch.maximum(hooked, largest)
        while True:
            jumped = hooked.gather(0, hooked)
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, pointer):
            break
        pointer = hooked
    offsets = torch.arange(b, device=foreground.device).repeat_interleave(h * w) * (h * w)
    labels = torch.where(fg, pointer - offsets + 1, torch.zeros_like(pointer))
    return labels.view(b, h, w)


def largest_component_boxes(maps: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Zhou et al. (2016): threshold each min-max normalized map above ``fraction`` of its
    maximum and return the box (x0, y0, x1, y1), x1/y1 exclusive, of the largest 8-connected
    component [B,4]; NaN for a constant map."""
    b, h, w = maps.shape
    labels = connected_components(minmax_normalize(maps) > fraction).view(b, -1)
    keys = labels + torch.arange(b, device=maps.device)[:, None] * (h * w + 1)
    sizes = torch.bincount(keys.reshape(-1), minlength=b * (h * w + 1)).view(b, h * w + 1)
    sizes[:, 0] = 0
    best = sizes.argmax(dim=1)
    largest = (labels == best[:, None]) & (best[:, None] > 0)
    return boxes_from_masks(largest.view(b, h, w))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [B] of boxes (x0, y0, x1, y1), x1/y1 exclusive; 0 where either box is NaN.

    ``b`` may hold several boxes per image, [B,M,4] (NaN rows where an image has fewer): the
    IoU is then with the best-overlapping of them, as in ImageNet's localization protocol."""
    if b.ndim == 3:
        per_box = [box_iou(a, b[:, m]) for m in range(b.shape[1])]
        return torch.stack(per_box, dim=1).amax(dim=1) if per_box else torch.zeros(a.shape[0], device=a.device)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / (area_a + area_b - inter)
    return torch.nan_to_num(iou, nan=0.0)


class _WorstImages:
    """The k worst-localized images seen so far (misses first, then least energy in the box),
    kept on the device; memory stays k images whatever the number of batches."""

    def __init__(self, k: int):
        self.k = k
        self.keep: dict[str, torch.Tensor] | None = None

    def add(self, key: torch.Tensor, **items: torch.Tensor) -> None:
        if self.k == 0:
            return
        items["key"] = key
        if self.keep is not None:
            items = {name: _cat_padded(self.keep[name], value) for name, value in items.items()}
        order = torch.argsort(items["key"], stable=True)[: self.k]
        self.keep = {name: value[order] for name, value in items.items()}


def _cat_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` and ``b`` stacked along dim 0; box sets [B,M,4] of different M padded with NaN rows."""
    if a.ndim == 3 and b.ndim == 3 and a.shape[1] != b.shape[1] and a.is_floating_point():
        m = max(a.shape[1], b.shape[1])
        a, b = (F.pad(t, (0, 0, 0, m - t.shape[1]), value=float("nan")) for t in (a, b))
    return torch.cat([a, b])


class GradCamLocalization(Check):
    """Does the Grad-CAM evidence lie on the object? (Selvaraju et al. 2017)

    For each evaluation image with a box (or mask), Grad-CAM of the explained class at the
    chosen layer, upsampled to the image, is scored four ways:

    - ``pointing_game`` (Zhang et al. 2016): the map's maximum lies within a tolerance of the
      box (15 px at 224 x 224, scaled with the image); ``center_baseline`` is the same game
      for a map that always points at the image center, on the same images.
    - ``energy_in_box`` (Wang et al. 2020): the share of the min-max normalized map's mass
      inside the box; ``box_area_share`` is what a uniform map would score (the box's share of
      the image).
    - ``loc_acc_iou50`` (Zhou et al. 2016, ground-truth-class localization): the box around
      the largest connected region above 20% of the map's maximum overlaps the object's box
      with IoU >= 0.5.

    Rates come with 95% Wilson intervals, means and the paired gains over the baselines
    (``pointing_gain = pointing_game - center_baseline``, ``energy_gain = energy_in_box -
    box_area_share``) with paired bootstrap intervals. The check passes when the model
    localizes clearly better than both baselines on the same images:

    - it points at the object significantly more often than the center baseline:
      ``pointing_p_value <= 0.05``, McNemar's exact one-sided test (of the images where exactly
      one of the two hits, the model hits more). Counting only the images that tell the two
      apart keeps the test decisive where objects usually cover the image center and the
      center baseline is strong (about 0.8 on synthetic shapes); a tie never passes;
    - it puts clearly more of its map inside the box than a uniform map:
      ``energy_gain_ci_low >= 0.05``, the lower 95% bound of the mean energy gain. The margin
      is there because a diffuse map gains a little on almost every image (a model that
      follows a corner marker gains about 0.01 on synthetic shapes, on most images).

    Both are thresholds and can be changed or dropped in the configuration. The
    worst-localized images are kept as overlays.
    """

    id = "gradcam.localization"
    requires = ("white_box", "layers", "localization")
    headline = ("pointing_game", "center_baseline", "energy_in_box")
    metrics = (
        *(f"{name}{part}" for name in ("pointing_game", "center_baseline", "loc_acc_iou50", "pointing_gain",
                                       "energy_in_box", "energy_gain") for part in ("", "_ci_low", "_ci_high")),
        "pointing_p_value", "box_area_share", "mean_iou", "n_images", "empty_maps",
    )
    directions = {
        "center_baseline*": None,  # the centred-map control
        "pointing_game*": "higher",
        "energy_in_box*": "higher",
        "loc_acc_iou50*": "higher",
        "mean_iou": "higher",
        "pointing_gain*": "higher",
        "energy_gain*": "higher",
        "pointing_p_value": "lower",
        "box_area_share": None,  # a property of the data
        "n_images": None,
        "empty_maps": None,
    }
    thresholds = (
        Threshold("pointing_p_value", "max", SIGNIFICANCE),
        Threshold("energy_gain_ci_low", "min", ENERGY_MARGIN),
    )
    # McNemar's one-sided exact test at SIGNIFICANCE needs at least 5 images with a box: below
    # that even all of them telling the model from the center baseline gives 0.5^n > 0.05.
    min_sample = 5

    @dataclass
    class Settings(GradCamSettings):
        """Settings of ``gradcam.localization`` (and those of :class:`GradCamSettings`).

        ``region``: what counts as the object: its ``"box"`` (the standard protocol) or its
        ``"mask"`` (stricter; needs masks in the data).
        ``pointing_tolerance``: pointing-game tolerance in pixels at 224 x 224, scaled by the
        shorter image side / 224 (Zhang et al. 2016 use 15).
        ``component_threshold``: fraction of the map's maximum kept before boxing the largest
        connected component (Zhou et al. 2016 use 0.2).
        ``confidence``: level of the reported intervals.
        ``bootstrap_resamples``: resamples for the bootstrap intervals (Efron and Tibshirani
        recommend 1000-2000 for percentile intervals; at 2000 the Monte-Carlo error of a 95%
        bound is about 1.5% of the interval's width).
        ``worst_images``: how many of the worst-localized images to keep as overlays.
        """

        check_id: ClassVar[str] = "gradcam.localization"

        region: Literal["box", "mask"] = "box"
        pointing_tolerance: float = POINTING_TOLERANCE_AT_224
        component_threshold: float = 0.2
        confidence: float = 0.95
        bootstrap_resamples: int = 2000
        worst_images: int = 4

        def __post_init__(self) -> None:
            super().__post_init__()
            where = f"settings of {self.check_id!r}"
            if self.region not in ("box", "mask"):
                raise UsageError(f"{where}: region must be 'box' or 'mask', got {self.region!r}")
            tol = self.pointing_tolerance
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf"):
                raise UsageError(f"{where}: pointing_tolerance must be a non-negative number of pixels at 224, got {tol!r}")
            check_fraction(where, "component_threshold", self.component_threshold, open_low=False)
            check_fraction(where, "confidence", self.confidence)
            check_positive_int(where, "bootstrap_resamples", self.bootstrap_resamples)
            if isinstance(self.worst_images, bool) or not isinstance(self.worst_images, int) or self.worst_images < 0:
                raise UsageError(f"{where}: worst_images must be a non-negative integer, got {self.worst_images!r}")

    def run(self, ctx: AuditContext) -> Findings:
        settings = self.settings
        explainer = Explainer(ctx, settings)
        if settings.region == "mask" and not ctx.data.has_masks:
            raise UsageError(f"{self.id}: region = 'mask' needs masks, and data {ctx.data.spec!r} has boxes only; use region = 'box'")
        per_image: dict[str, list[torch.Tensor]] = {k: [] for k in ("hit", "center", "energy", "share", "iou", "empty")}
        worst = _WorstImages(settings.worst_images)
        tolerance = None
        for batch in explainer.batches("localization"):
            h, w = batch.images.shape[-2:]
            tolerance = pointing_tolerance_px(h, w, settings.pointing_tolerance)
            # Every image's boxes [B,M,4]: the object region is their union, and the IoU is
            # with the best-overlapping one.
            if batch.boxes is not None:
                gt_boxes = as_box_sets(batch.boxes.float())
            else:
                gt_boxes = as_box_sets(boxes_from_masks(batch.masks))
            region = batch.masks.bool() if settings.region == "mask" else box_masks(gt_boxes, h, w)
            scored = region.flatten(1).any(dim=1)
            if not bool(scored.any()):
                continue
            images, region, gt_boxes = batch.images[scored], region[scored], gt_boxes[scored]
            classes = explainer.classes(batch)[scored]
            maps = explainer.evaluation_maps(batch)[scored]
            hit = pointing_hits(maps, region, tolerance)
            energy = energy_in_region(maps, region)
            predicted_boxes = largest_component_boxes(maps, settings.component_threshold)
            iou = box_iou(predicted_boxes, gt_boxes)
            per_image["hit"].append(hit)
            per_image["center"].append(center_hits(region, tolerance))
            per_image["energy"].append(energy)
            per_image["share"].append(region.flatten(1).float().mean(dim=1))
            per_image["iou"].append(iou)
            per_image["empty"].append(is_constant(maps))
            worst.add(
                hit.float() + energy,
                images=images, maps=maps, boxes=gt_boxes, predicted=predicted_boxes, peaks=peak_points(maps),
                index=batch.index.to(images.device)[scored], classes=classes, hit=hit, energy=energy, iou=iou,
            )
        if not per_image["hit"]:
            auditkit.skip(f"none of the first {explainer.n_images} evaluation images has a {settings.region}")
        values = {k: torch.cat(v) for k, v in per_image.items()}
        metrics = self._metrics(values, ctx.generator)
        return Findings(
            metrics=metrics,
            message=self._message(explainer, metrics),
            artifacts=self._worst_artifacts(worst, ctx),
            details={
                **explainer.layer.to_details(),
                "explained_class": explainer.explains_note,
                "pointing_tolerance_px": tolerance,
                "region": settings.region,
                "rule": self._rule(),
            },
        )

    def _metrics(self, v: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        s = self.settings
        n = int(v["hit"].numel())
        metrics: dict[str, float] = {}
        for name, hits in (("pointing_game", v["hit"]), ("center_baseline", v["center"]), ("loc_acc_iou50", v["iou"] >= IOU_HIT)):
            k = int(hits.sum())
            metrics[name] = k / n
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = wilson_interval(k, n, s.confidence)

        def mean_with_interval(name: str, values: torch.Tensor) -> None:
            metrics[name] = float(values.double().mean())
            low, high = bootstrap_mean_interval(values, generator, s.confidence, s.bootstrap_resamples)
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high

        pointing_diff = v["hit"].double() - v["center"].double()
        energy_diff = v["energy"].double() - v["share"].double()
        mean_with_interval("pointing_gain", pointing_diff)
        metrics["pointing_p_value"] = paired_sign_test(pointing_diff)
        mean_with_interval("energy_in_box", v["energy"])
        metrics["box_area_share"] = float(v["share"].double().mean())
        mean_with_interval("energy_gain", energy_diff)
        metrics["mean_iou"] = float(v["iou"].double().mean())
        metrics["n_images"] = float(n)
        metrics["empty_maps"] = float(v["empty"].sum())
        return metrics

    def _rule(self) -> str:
        rules = [t.describe() for t in self.active_thresholds]
        return "; ".join(rules) if rules else "no thresholds (report only)"

    def _message(self, explainer: Explainer, m: dict[str, float]) -> str:
        empty = f"; {int(m['empty_maps'])} empty maps" if m["empty_maps"] else ""
        return (
            f"layer {explainer.layer.describe()}; explaining {explainer.explains_note} on {int(m['n_images'])} images{empty}: "
            f"pointing_game {m['pointing_game']:.3f} [{m['pointing_game_ci_low']:.3f}, {m['pointing_game_ci_high']:.3f}] "
            f"vs center_baseline {m['center_baseline']:.3f}; energy_in_box {m['energy_in_box']:.3f} "
            f"vs box_area_share {m['box_area_share']:.3f}; loc_acc_iou50 {m['loc_acc_iou50']:.3f}; "
            f"rule: {self._rule()} (pointing_p_value {m['pointing_p_value']:.3g}, energy_gain_ci_low {m['energy_gain_ci_low']:.3f})"
        )

    def _worst_artifacts(self, worst: _WorstImages, ctx: AuditContext) -> list[Artifact]:
        if worst.keep is None:
            return []
        keep = {k: v.detach().cpu() for k, v in worst.keep.items()}
        names = ctx.data.class_names
        artifacts = []
        for i in range(keep["key"].numel()):
            image = keep["images"][i]
            size = tuple(image.shape[-2:])
            picture = overlay_image(image, keep["maps"][i])
            for box in keep["boxes"][i]:
                if bool(torch.isfinite(box).all()):
                    draw_box(picture, box.tolist(), size, "#00c000")
            if not torch.isnan(keep["predicted"][i]).any():
                draw_box(picture, keep["predicted"][i].tolist(), size, "#ffffff")
            if keep["maps"][i].max() > keep["maps"][i].min():
                draw_point(picture, tuple(int(c) for c in keep["peaks"][i]), size, "#ff0000")
            cls = int(keep["classes"][i])
            label = names[cls] if cls < len(names) else str(cls)
            index = int(keep["index"][i])
            artifacts.append(
                Artifact(
                    name=f"worst_localized_{i + 1}",
                    kind="image/png",
                    data=png_bytes(picture),
                    caption=(
                        f"image {index} ({label}): pointing {'hit' if bool(keep['hit'][i]) else 'miss'}, "
                        f"energy_in_box {float(keep['energy'][i]):.2f}, IoU {float(keep['iou'][i]):.2f}; "
                        "green: object box, white: box of the map's largest region, red cross: map maximum"
                    ),
                )
            )
        return artifacts
