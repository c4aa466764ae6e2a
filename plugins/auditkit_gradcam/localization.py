"""The ``gradcam.localization`` check: does the Grad-CAM evidence lie on the object? Pointing
game against its center baseline, energy in the box against the box's area, and box IoU; the
scores and the pass rule are the toolkit's (shared with every check that localizes maps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

import auditkit
from auditkit import Artifact, Check, Cost, Findings, UsageError
from auditkit.toolkit import (  # noqa: F401  (re-exported for the check's users and tests)
    IOU_HIT,
    LOCALIZATION_DIRECTIONS,
    LOCALIZATION_HEADLINE,
    LOCALIZATION_METRICS,
    LOCALIZATION_MIN_SAMPLE,
    LOCALIZATION_THRESHOLDS,
    AuditContext,
    POINTING_TOLERANCE_AT_224,
    LocalizationScores,
    LocalizationSettings,
    as_box_sets,
    box_iou,
    box_masks,
    boxes_from_masks,
    center_hits,
    connected_components,
    energy_in_region,
    is_constant,
    largest_component_boxes,
    localization_summary,
    minmax_normalize,
    object_regions,
    peak_points,
    pointing_hits,
    pointing_tolerance_px,
    rule_text,
    wilson_interval,
)

from auditkit_gradcam.maps import Explainer, GradCamSettings, plan_maps
from auditkit_gradcam.rendering import draw_box, draw_point, overlay_image, png_bytes


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

    def merged(self, world: Any) -> "_WorstImages":
        """The k worst of every process's k worst (their ``index`` item gives the order), the
        images one process seeing every batch in order would keep."""
        if not world.distributed or self.k == 0:
            return self
        parts = [p for p in world.all_gather(self.keep) if p is not None]
        out = _WorstImages(self.k)
        if not parts:
            return out
        device = parts[0]["key"].device if self.keep is None else self.keep["key"].device
        items = {name: parts[0][name] for name in parts[0]}
        for part in parts[1:]:
            items = {name: _cat_padded(items[name], part[name]) for name in items}
        by_index = torch.argsort(items["index"], stable=True)
        items = {name: value[by_index] for name, value in items.items()}
        order = torch.argsort(items["key"], stable=True)[: self.k]
        out.keep = {name: value[order].to(device) for name, value in items.items()}
        return out


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
    shards = True
    requires = ("white_box", "layers", "localization")
    headline = LOCALIZATION_HEADLINE
    metrics = LOCALIZATION_METRICS
    directions = LOCALIZATION_DIRECTIONS
    thresholds = LOCALIZATION_THRESHOLDS
    min_sample = LOCALIZATION_MIN_SAMPLE

    @dataclass
    class Settings(LocalizationSettings, GradCamSettings):
        """Settings of ``gradcam.localization``: those of :class:`GradCamSettings` (the layer,
        the explained class, ``max_images``), those of the localization rule
        (:class:`auditkit.toolkit.LocalizationSettings`: ``region``, ``pointing_tolerance``,
        ``component_threshold``, ``confidence``, ``bootstrap_resamples``), and:

        ``worst_images``: how many of the worst-localized images to keep as overlays.
        """

        check_id: ClassVar[str] = "gradcam.localization"

        worst_images: int = 4

        def __post_init__(self) -> None:
            super().__post_init__()
            where = f"settings of {self.check_id!r}"
            if isinstance(self.worst_images, bool) or not isinstance(self.worst_images, int) or self.worst_images < 0:
                raise UsageError(f"{where}: worst_images must be a non-negative integer, got {self.worst_images!r}")

    def run(self, ctx: AuditContext) -> Findings:
        settings = self.settings
        explainer = Explainer(ctx, settings)
        if settings.region == "mask" and not ctx.data.has_masks:
            raise UsageError(f"{self.id}: region = 'mask' needs masks, and data {ctx.data.spec!r} has boxes only; use region = 'box'")
        scores = LocalizationScores(settings.pointing_tolerance, settings.component_threshold)
        worst = _WorstImages(settings.worst_images)
        for batch in explainer.batches("localization"):
            # Every image's boxes [B,M,4]: the object region is their union, and the IoU is
            # with the best-overlapping one.
            objects = object_regions(batch.boxes, batch.masks, batch.images.shape[-2:], settings.region)
            if objects is None:
                continue
            scored = objects.scored
            images = batch.images[scored]
            classes = explainer.classes(batch)[scored]
            maps = explainer.evaluation_maps(batch)[scored]
            s = scores.add(maps, objects.region, objects.boxes, index=batch.index.to(maps.device)[scored])
            worst.add(
                s.hit.float() + s.energy,
                images=images, maps=maps, boxes=objects.boxes, predicted=s.predicted_boxes, peaks=peak_points(maps),
                index=batch.index.to(images.device)[scored], classes=classes, hit=s.hit, energy=s.energy, iou=s.iou,
            )
        scores, worst = scores.merged(ctx.world), worst.merged(ctx.world)  # every process's images
        if not scores.n_images:
            auditkit.skip(f"none of the first {explainer.n_images} evaluation images has a {settings.region}")
        metrics = scores.metrics(ctx.generator, settings.confidence, settings.bootstrap_resamples)
        return Findings(
            metrics=metrics,
            message=self._message(explainer, metrics),
            artifacts=self._worst_artifacts(worst, ctx),
            details={
                **explainer.layer.to_details(),
                "explained_class": explainer.explains_note,
                "pointing_tolerance_px": scores.tolerance_px,
                "region": settings.region,
                "rule": rule_text(self.active_thresholds),
            },
        )

    def estimate(self, ctx: AuditContext) -> Cost:
        """Gradient: the Grad-CAM maps of its images that no earlier check shared, and the layer
        probe (:func:`plan_maps`); no other pass. An upper bound where a whole batch has no
        object (its maps are not computed; knowing it would mean loading the data)."""
        return Cost(gradient=plan_maps(ctx, self.settings).gradient_passes)

    def _message(self, explainer: Explainer, m: dict[str, float]) -> str:
        empty = f"; {int(m['empty_maps'])} empty maps" if m["empty_maps"] else ""
        return (
            f"layer {explainer.layer.describe()}; explaining {explainer.explains_note} on {int(m['n_images'])} images{empty}: "
            + localization_summary(m, self.active_thresholds)
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
