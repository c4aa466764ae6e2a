"""Localization geometry, scores and the pass rule shared by checks that score saliency maps
against objects: boxes (x0, y0, x1, y1), x1/y1 exclusive, one or several per image, and their
pixel masks; the pointing game (Zhang et al. 2016) with its center-point baseline; the
energy-based pointing game (Wang et al. 2020); box IoU of the map's largest region (Zhou et
al. 2016). Scores take the object as a bool region [B,H,W] (a segmentation mask, or
:func:`box_masks` of an image's boxes: their union) and maps [B,H,W] at image resolution, so
an image with several objects counts a pointing-game hit on any of them and its energy in all
of them. :class:`LocalizationScores` accumulates them batch by batch and computes the metrics,
intervals and p-value that :data:`LOCALIZATION_THRESHOLDS` judge, whatever made the maps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F

from auditkit.check import Threshold
from auditkit.errors import UsageError
from auditkit.saliency import minmax_normalize
from auditkit.statistics import bootstrap_mean_interval, paired_sign_test
from auditkit.stats import wilson_interval

# Zhang et al. (2016) count a pointing-game hit within 15 pixels of the object at 224 x 224.
POINTING_TOLERANCE_AT_224 = 15.0


def pointing_tolerance_px(height: int, width: int, at_224: float = POINTING_TOLERANCE_AT_224) -> float:
    """The pointing-game tolerance in pixels for a ``height`` x ``width`` image: ``at_224``
    pixels at 224, scaled by the shorter side / 224."""
    return at_224 * min(height, width) / 224.0


def as_box_sets(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes as float [B,M,4], M boxes per image (NaN rows where an image has fewer): [B,4]
    (one box per image) becomes [B,1,4]; [B,M,4] is returned as is.

    Raises:
        ValueError: ``boxes`` is neither [B,4] nor [B,M,4].
    """
    if boxes.ndim == 2 and boxes.shape[-1] == 4:
        return boxes[:, None, :]
    if boxes.ndim == 3 and boxes.shape[-1] == 4:
        return boxes
    raise ValueError(f"boxes must be [B,4] or [B,M,4] (x0, y0, x1, y1), got shape {list(boxes.shape)}")


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool [B,height,width]: the pixels whose centers lie in any box of each image, the union
    of its boxes. ``boxes`` is [B,4] (one box per image) or [B,M,4] (NaN rows where an image
    has fewer than M), each (x0, y0, x1, y1) in pixels, x1/y1 exclusive: pixel x is inside
    when x0 <= x + 0.5 < x1. NaN boxes add nothing; an image with none has an empty mask."""
    sets = as_box_sets(boxes)
    lo = torch.ceil(sets[..., :2] - 0.5)
    hi = torch.ceil(sets[..., 2:] - 0.5) - 1
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    union = torch.zeros(sets.shape[0], height, width, dtype=torch.bool, device=boxes.device)
    for m in range(sets.shape[1]):  # M is small; one [B,H,W] at a time keeps memory flat
        in_cols = (cols[None, :] >= lo[:, m, 0:1]) & (cols[None, :] <= hi[:, m, 0:1])
        in_rows = (rows[None, :] >= lo[:, m, 1:2]) & (rows[None, :] <= hi[:, m, 1:2])
        union |= in_rows[:, :, None] & in_cols[:, None, :]
    return union


def polygon_mask(polygons: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Bool [height,width]: the union of polygons, each float [V,2] of (x, y) vertices in pixel
    coordinates; a pixel is inside when its center (x + 0.5, y + 0.5) is (even-odd rule), the
    same convention as :func:`box_masks`, so a rectangle's polygon gives its box's mask.
    Polygons of fewer than 3 vertices add nothing."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    px = torch.arange(width, dtype=torch.float64) + 0.5
    py = torch.arange(height, dtype=torch.float64) + 0.5
    for polygon in polygons:
        xy = torch.as_tensor(polygon, dtype=torch.float64).reshape(-1, 2)
        if xy.shape[0] < 3:
            continue
        inside = torch.zeros(height, width, dtype=torch.bool)
        x0, y0 = xy[:, 0], xy[:, 1]
        x1, y1 = xy.roll(-1, dims=0)[:, 0], xy.roll(-1, dims=0)[:, 1]
        for k in range(xy.shape[0]):
            crosses = (y0[k] > py) != (y1[k] > py)  # [H]: the edge spans this row's center line
            if not bool(crosses.any()):
                continue
            at_x = x0[k] + (py - y0[k]) * (x1[k] - x0[k]) / (y1[k] - y0[k])
            inside ^= crosses[:, None] & (at_x[:, None] > px[None, :])
        mask |= inside
    return mask


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x0, y0, x1, y1), x1/y1 exclusive, of bool masks [B,H,W]; NaN for empty masks."""
    _, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.full_like(boxes, float("nan")))


def is_constant(maps: torch.Tensor) -> torch.Tensor:
    """Bool [B]: maps that are constant (e.g. all zero after the ReLU): no evidence anywhere."""
    flat = maps.flatten(1)
    return flat.amax(dim=1) <= flat.amin(dim=1)


def peak_points(maps: torch.Tensor) -> torch.Tensor:
    """(col, row) [B,2] of each map's maximum (the first in row-major order)."""
    idx = maps.flatten(1).argmax(dim=1)
    w = maps.shape[-1]
    return torch.stack([idx % w, idx // w], dim=1)


def distance_to_region(points: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in pixels from ``points`` (col, row) [B,2] to the nearest pixel of
    each bool ``region`` [B,H,W]; 0 inside, inf for an empty region."""
    _, h, w = region.shape
    rows = torch.arange(h, device=region.device, dtype=torch.float32)
    cols = torch.arange(w, device=region.device, dtype=torch.float32)
    p = points.to(device=region.device, dtype=torch.float32)
    d2 = (rows[None, :, None] - p[:, 1, None, None]) ** 2 + (cols[None, None, :] - p[:, 0, None, None]) ** 2
    d2 = torch.where(region, d2, torch.full_like(d2, float("inf")))
    return d2.flatten(1).amin(dim=1).sqrt()


def pointing_hits(maps: torch.Tensor, region: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """Pointing game (Zhang et al. 2016): bool [B], True when the map's maximum lies within
    ``tolerance_px`` of the region. A constant map (no evidence, e.g. all zero after the ReLU)
    points nowhere and is a miss."""
    return (distance_to_region(peak_points(maps), region) <= tolerance_px) & ~is_constant(maps)


def center_hits(region: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """The pointing game of a map that always points at the image center, pixel
    (col, row) = (W // 2, H // 2): bool [B]."""
    b, h, w = region.shape
    center = torch.tensor([w // 2, h // 2], device=region.device).expand(b, 2)
    return distance_to_region(center, region) <= tolerance_px


def energy_in_region(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al. 2020): the share of each min-max normalized
    map's mass inside the region, float [B] in [0,1]; 0 for a constant map (it has no mass)."""
    norm = minmax_normalize(maps)
    inside = (norm * region).flatten(1).sum(dim=1)
    total = norm.flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


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


# -- the localization rule: metrics, directions, thresholds ------------------------------------

# Zhou et al. (2016): a localization is correct when its box overlaps the object's with IoU >= 0.5.
IOU_HIT = 0.5
# The default pass rule: pointing beats the center baseline at this one-sided significance
# level, and the energy gain's lower 95% bound reaches this share of the map's mass.
SIGNIFICANCE = 0.05
ENERGY_MARGIN = 0.05
# McNemar's one-sided exact test at SIGNIFICANCE needs at least 5 images with an object: below
# that even all of them telling the maps from the center baseline gives 0.5^n > 0.05.
LOCALIZATION_MIN_SAMPLE = 5

#: The metrics :meth:`LocalizationScores.metrics` reports, for a check's ``metrics``.
LOCALIZATION_METRICS: tuple[str, ...] = (
    *(f"{name}{part}" for name in ("pointing_game", "center_baseline", "loc_acc_iou50", "pointing_gain",
                                   "energy_in_box", "energy_gain") for part in ("", "_ci_low", "_ci_high")),
    "pointing_p_value", "box_area_share", "mean_iou", "n_images", "empty_maps",
)
#: What the localization metrics show first, for a check's ``headline``.
LOCALIZATION_HEADLINE: tuple[str, ...] = ("pointing_game", "center_baseline", "energy_in_box")
#: Which way each localization metric is better, for a check's ``directions`` (read-only).
LOCALIZATION_DIRECTIONS: dict[str, str | None] = {
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
#: The default pass rule: the maps point at the object significantly more often than the
#: center baseline (McNemar's exact one-sided test at 5%), and put clearly more of their mass
#: in it than a uniform map (the lower 95% bound of the mean energy gain reaches 0.05).
LOCALIZATION_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("pointing_p_value", "max", SIGNIFICANCE),
    Threshold("energy_gain_ci_low", "min", ENERGY_MARGIN),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class LocalizationSettings:
    """The settings of the localization rule, for a check's ``Settings`` to inherit (a
    dataclass; list it first among the bases so that its fields come after theirs and its
    validation runs after theirs).

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

    :raises UsageError: a setting out of its range, naming the check (``check_id``).
    """

    check_id: ClassVar[str] = "localization"

    region: Literal["box", "mask"] = "box"
    pointing_tolerance: float = POINTING_TOLERANCE_AT_224
    component_threshold: float = 0.2
    confidence: float = 0.95
    bootstrap_resamples: int = 2000

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        where = f"settings of {self.check_id!r}"
        if self.region not in ("box", "mask"):
            raise UsageError(f"{where}: region must be 'box' or 'mask', got {self.region!r}")
        tol = self.pointing_tolerance
        if not _is_number(tol) or not 0 <= tol < float("inf"):
            raise UsageError(f"{where}: pointing_tolerance must be a non-negative number of pixels at 224, got {tol!r}")
        if not _is_number(self.component_threshold) or not 0 <= self.component_threshold < 1:
            raise UsageError(f"{where}: component_threshold must be a number in [0, 1), got {self.component_threshold!r}")
        if not _is_number(self.confidence) or not 0 < self.confidence < 1:
            raise UsageError(f"{where}: confidence must be a number in (0, 1), got {self.confidence!r}")
        resamples = self.bootstrap_resamples
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
            raise UsageError(f"{where}: bootstrap_resamples must be a positive integer, got {resamples!r}")


@dataclass(frozen=True)
class ObjectRegions:
    """The objects of a batch's images, as :class:`LocalizationScores` scores maps against them.

    :ivar scored: bool [B]: the images with an object (a non-empty region); the others have
        nothing to score a map against.
    :ivar region: bool [S,H,W], the object region of each of the S scored images.
    :ivar boxes: float [S,M,4], each scored image's boxes (NaN rows where it has fewer than M).
    """

    scored: torch.Tensor
    region: torch.Tensor
    boxes: torch.Tensor


def object_regions(
    boxes: torch.Tensor | None, masks: torch.Tensor | None, size: Sequence[int], region: str = "box"
) -> ObjectRegions | None:
    """The object regions of a batch of ``size`` = (H, W) images from its ``boxes`` ([B,4] or
    [B,M,4]) and/or ``masks`` (bool [B,H,W]): the union of each image's boxes (``region="box"``;
    the tight box of the mask when the data has masks only) or its mask (``region="mask"``).
    None when no image of the batch has an object."""
    h, w = int(size[0]), int(size[1])
    if boxes is not None:
        sets = as_box_sets(boxes.float())
    elif masks is not None:
        sets = as_box_sets(boxes_from_masks(masks))
    else:
        raise ValueError("object_regions needs boxes or masks")
    if region == "mask":
        if masks is None:
            raise ValueError("region='mask' needs masks")
        pixels = masks.bool()
    else:
        pixels = box_masks(sets, h, w)
    scored = pixels.flatten(1).any(dim=1)
    if not bool(scored.any()):
        return None
    return ObjectRegions(scored, pixels[scored], sets[scored])


@dataclass(frozen=True)
class ScoredMaps:
    """One batch's per-image scores (float or bool [S], on the maps' device)."""

    hit: torch.Tensor
    energy: torch.Tensor
    iou: torch.Tensor
    predicted_boxes: torch.Tensor


class LocalizationScores:
    """Saliency maps scored against objects batch by batch, and the localization metrics of all
    of them: the pointing game (the map's maximum within ``pointing_tolerance`` px at 224,
    scaled with the image) against the center baseline (a map that always points at the image
    center, on the same images), energy in the object against its area share (what a uniform
    map scores), and IoU of the box around the map's largest region above
    ``component_threshold`` of its maximum. Per-image scores stay on the maps' device; memory
    grows by a few numbers per image."""

    def __init__(self, pointing_tolerance: float = POINTING_TOLERANCE_AT_224, component_threshold: float = 0.2):
        self.pointing_tolerance = pointing_tolerance
        self.component_threshold = component_threshold
        self.tolerance_px: float | None = None  # at the last scored batch's size
        self._per_image: dict[str, list[torch.Tensor]] = {k: [] for k in ("hit", "center", "energy", "share", "iou", "empty")}
        self._index: list[torch.Tensor] = []  # evaluation positions, when add() is given them

    @property
    def n_images(self) -> int:
        """Images scored so far."""
        return sum(int(t.numel()) for t in self._per_image["hit"])

    def add(
        self, maps: torch.Tensor, region: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor | None = None
    ) -> ScoredMaps:
        """Score ``maps`` [S,H,W] (any real values; larger is more evidence) against the bool
        object ``region`` [S,H,W] and the images' ``boxes`` [S,M,4] (both from
        :func:`object_regions`); returns the batch's scores and keeps them. ``index`` (long
        [S]): the images' evaluation positions, which :meth:`merged` needs."""
        h, w = region.shape[-2:]
        tolerance = pointing_tolerance_px(h, w, self.pointing_tolerance)
        self.tolerance_px = tolerance
        hit = pointing_hits(maps, region, tolerance)
        energy = energy_in_region(maps, region)
        predicted = largest_component_boxes(maps, self.component_threshold)
        iou = box_iou(predicted, boxes)
        kept = self._per_image
        kept["hit"].append(hit)
        kept["center"].append(center_hits(region, tolerance))
        kept["energy"].append(energy)
        kept["share"].append(region.flatten(1).float().mean(dim=1))
        kept["iou"].append(iou)
        kept["empty"].append(is_constant(maps))
        if index is not None:
            self._index.append(index.to(hit.device))
        return ScoredMaps(hit, energy, iou, predicted)

    def merged(self, world: Any) -> "LocalizationScores":
        """The scores of every process of ``world`` (:class:`auditkit.distributed.World`), in
        evaluation order, as one process scoring every image would hold them; ``self`` with
        one process.

        :raises ValueError: scores added without their ``index``.
        """
        if not world.distributed:
            return self
        if len(self._index) != len(self._per_image["hit"]):
            raise ValueError("LocalizationScores.merged needs every add() given the images' index")
        device = self._index[0].device if self._index else torch.device("cpu")
        index = torch.cat(self._index) if self._index else torch.zeros(0, dtype=torch.long)
        rows = {k: torch.cat(t) for k, t in self._per_image.items()} if self._index else {}
        index, rows = world.gather_rows(index.to(device), rows)
        out = LocalizationScores(self.pointing_tolerance, self.component_threshold)
        sizes = [t for t in world.all_gather(self.tolerance_px) if t is not None]
        out.tolerance_px = sizes[0] if sizes else None
        if index.numel():
            out._per_image = {k: [v] for k, v in rows.items()}
            out._index = [index]
        return out

    def metrics(self, generator: torch.Generator, confidence: float = 0.95, resamples: int = 2000) -> dict[str, float]:
        """The :data:`LOCALIZATION_METRICS` of every image scored so far: rates with Wilson
        intervals, means and paired gains over the baselines with percentile bootstrap
        intervals (indices drawn from ``generator``, so one seed gives the same numbers), and
        ``pointing_p_value``, McNemar's exact one-sided test that the maps hit more often
        than the center baseline (of the images where exactly one of them hits).

        :raises ValueError: no image was scored.
        """
        if not self._per_image["hit"]:
            raise ValueError("no image was scored")
        v = {k: torch.cat(t) for k, t in self._per_image.items()}
        n = int(v["hit"].numel())
        metrics: dict[str, float] = {}
        for name, hits in (("pointing_game", v["hit"]), ("center_baseline", v["center"]), ("loc_acc_iou50", v["iou"] >= IOU_HIT)):
            k = int(hits.sum())
            metrics[name] = k / n
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = wilson_interval(k, n, confidence)

        def mean_with_interval(name: str, values: torch.Tensor) -> None:
            metrics[name] = float(values.double().mean())
            low, high = bootstrap_mean_interval(values, generator, confidence, resamples)
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


def rule_text(thresholds: Sequence[Threshold]) -> str:
    """The pass rule of ``thresholds`` (a check's ``active_thresholds``) in words, for
    messages and details: ``"pointing_p_value <= 0.05; energy_gain_ci_low >= 0.05"``."""
    rules = [t.describe() for t in thresholds]
    return "; ".join(rules) if rules else "no thresholds (report only)"


def localization_summary(metrics: dict[str, float], thresholds: Sequence[Threshold]) -> str:
    """One line with the localization metrics beside their baselines and the rule, for a
    check's message: ``pointing_game 0.812 [0.70, 0.89] vs center_baseline 0.797; ...``."""
    m = metrics
    return (
        f"pointing_game {m['pointing_game']:.3f} [{m['pointing_game_ci_low']:.3f}, {m['pointing_game_ci_high']:.3f}] "
        f"vs center_baseline {m['center_baseline']:.3f}; energy_in_box {m['energy_in_box']:.3f} "
        f"vs box_area_share {m['box_area_share']:.3f}; loc_acc_iou50 {m['loc_acc_iou50']:.3f}; "
        f"rule: {rule_text(thresholds)} (pointing_p_value {m['pointing_p_value']:.3g}, energy_gain_ci_low {m['energy_gain_ci_low']:.3f})"
    )
