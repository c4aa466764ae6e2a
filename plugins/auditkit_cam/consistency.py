"""The ``cam.consistency`` check: confirm a structurally detected GAP + linear head with the CAM
identities, then compare CAM with Grad-CAM, with its own mirror image, and with object boxes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import auditkit
from auditkit import Artifact, Check, Cost, Findings, UsageError
from auditkit.toolkit import (
    AuditContext,
    Batch,
    EvaluationMaps,
    GapHead,
    POINTING_TOLERANCE_AT_224,
    as_box_sets,
    box_masks,
    boxes_from_masks,
    center_hits,
    energy_in_region,
    evaluation_maps_key,
    grad_cam_from,
    oom_backoff,
    pointing_hits,
    pointing_tolerance_px,
    relative_tolerance,
    upsample,
)

from auditkit_cam.maps import (
    class_activation_maps,
    grad_cam_identity_errors,
    logit_identity_errors,
    pearson_rows,
    pool_input_pass,
)
from auditkit_cam.overlays import cam_overlay_png

# Only for a target that reaches the check without a detected head and without a reason of
# its own; normally the session skips such models, with the target's reason.
NO_GAP_HEAD_REASON = (
    "no global-average-pooling + single linear head was detected, so CAM is undefined for this model; "
    "use the gradcam checks"
)
LOGIT_IDENTITY = "logit_c = mean_ij CAM_c(i,j) + b_c"
GRAD_CAM_IDENTITY = "Grad-CAM_c = ReLU(CAM_c) / (H*W)"
CAM_CLASSES = ("label", "predicted")
# With the automatic tolerance, an identity off by more than the compute dtype's tolerance but
# at most this many times it is put down to rounding in that dtype, not to the head's structure.
PRECISION_FACTOR = 10


class CamConsistency(Check):
    """CAM consistency for models with a global-average-pooling + linear head (Zhou et al. 2016).

    For features f_k(i,j) (the pool's input, H x W) and the linear layer's weight w and bias
    b, CAM_c(i,j) = sum_k w_ck f_k(i,j). The head is detected structurally when the model is
    loaded; this check confirms it on the real logits of every evaluation image, because a
    model can look like GAP + linear and not be one (a scale or a nonlinearity applied to the
    pooled vector inside ``forward``):

    - logit_c = mean_ij CAM_c(i,j) + b_c, for every image and class (``logit_max_abs_err``);
    - Grad-CAM at the feature map equals ReLU(CAM_c) / (H*W) (``gradcam_max_abs_err``,
      ``cam_gradcam_corr``).

    Errors are relative to the magnitude of the summed terms. The tolerance follows the
    precision the model computes in: ``relative_tolerance(dtype)`` = max(1e-4, 4 eps), with
    dtype the coarser of ``target.compute_dtype`` and the feature map's own dtype (1e-4 for
    float32, 0.031 for bfloat16 autocast). An identity within the tolerance holds; one off by
    at most ``PRECISION_FACTOR`` (10) times it holds to that dtype's precision, which the
    message says (rounding, not a structural defect), and passes; one off by more fails the
    check, naming the identity and the error. A configured ``identity_rtol`` is a strict bar
    instead. When no gradient reaches the feature map at all (``forward`` detaches it or
    computes it under ``torch.no_grad()``), Grad-CAM is undefined and the check is skipped
    with that reason, rather than reporting a broken identity. It also reports ``flip_corr``:
    the Pearson correlation of the raw CAM of the mirrored image with the mirrored CAM (1 for a
    model whose evidence mirrors with the image), and, when the data has boxes or masks, the
    pointing game, its center baseline and the energy in the box on ReLU(CAM), defined as for
    Grad-CAM so the two can be set side by side. Models without such a head (AlexNet's fully
    connected head) are skipped by the session, with the target's reason why no head was
    detected: CAM is undefined for them.

    Definitions. Correlations are Pearson per image at feature resolution, averaged over the
    images where neither map is constant (the others are counted in ``details``). Localization
    uses ReLU(CAM_c) upsampled bilinearly to the image (align_corners=False): the pointing game
    hits when the first maximum lies within ``pointing_tolerance`` x min(H, W) / 224 pixels of
    the box (a constant map misses); the center baseline points at pixel (W // 2, H // 2);
    energy_in_box is the share of the min-max normalized map inside the box. A pixel is inside
    a box (x0, y0, x1, y1) when its center lies in [x0, x1) x [y0, y1). Images without a box
    are left out of the localization metrics (``n_localized``).
    """

    id = "cam.consistency"
    shards = True
    requires = ("white_box", "layers", "gap_head")
    headline = ("logit_max_abs_err", "cam_gradcam_corr", "flip_corr")
    metrics = (
        "logit_max_abs_err", "logit_rel_err", "cam_gradcam_corr", "gradcam_max_abs_err", "gradcam_rel_err",
        "flip_corr", "n_images", "pointing_game", "center_baseline", "energy_in_box", "n_localized",
    )
    directions = {
        "*_err": "lower",
        "cam_gradcam_corr": "higher",
        "flip_corr": "higher",
        "pointing_game": "higher",
        "energy_in_box": "higher",
        "center_baseline": None,  # where a centred map would point: a control, not a score
        "n_*": None,
    }
    # The rule is an identity that must hold on every image: one image already tests it.
    min_sample = 1

    @dataclass
    class Settings:
        """Settings of ``cam.consistency``.

        ``identity_rtol``: largest error allowed in either identity, relative to the magnitude
        of the summed terms (sum_k |w_ck| mean_ij |f_k(i,j)| + |b_c| for a logit). Unset (the
        default): the compute dtype's tolerance, max(1e-4, 4 eps), with errors up to
        ``PRECISION_FACTOR`` times it reported as rounding in that dtype. Float32 rounding
        stays below about (C + H*W) epsilons of the terms, typically far less: 1e-4 is about
        840 float32 epsilons, while a planted scale or ReLU after the pool gives errors of
        order 1/sqrt(C) or more. Set it to make one strict bar (e.g. for TF32 matmuls).
        ``cam_class``: the class whose map is explained, the ground-truth ``label`` (as in the
        pointing game; the prediction is used when the data has no labels) or ``predicted``.
        ``pointing_tolerance``: pointing-game tolerance in pixels at 224 x 224, scaled by the
        shorter image side / 224 (Zhang et al. 2016 use 15).
        ``overlays``: how many of the first evaluation images get a CAM overlay artifact.
        """

        identity_rtol: float | None = None
        cam_class: str = "label"
        pointing_tolerance: float = POINTING_TOLERANCE_AT_224
        overlays: int = 4

        def __post_init__(self) -> None:
            where = 'settings of "cam.consistency"'
            if self.identity_rtol is not None and not (
                isinstance(self.identity_rtol, (int, float)) and 0 < self.identity_rtol < math.inf
            ):
                raise UsageError(f"{where}: identity_rtol must be a positive number, got {self.identity_rtol!r}")
            if self.cam_class not in CAM_CLASSES:
                raise UsageError(f"{where}: cam_class must be one of {', '.join(CAM_CLASSES)}, got {self.cam_class!r}")
            if not (isinstance(self.pointing_tolerance, (int, float)) and 0 <= self.pointing_tolerance < math.inf):
                raise UsageError(
                    f"{where}: pointing_tolerance must be a non-negative number of pixels, "
                    f"got {self.pointing_tolerance!r}"
                )
            if isinstance(self.overlays, bool) or not isinstance(self.overlays, int) or self.overlays < 0:
                raise UsageError(f"{where}: overlays must be a non-negative integer, got {self.overlays!r}")

    def estimate(self, ctx: AuditContext) -> Cost:
        """Each evaluation image once with a backward to the feature map (the identities and
        Grad-CAM there) and its mirror image once without: n forward and n gradient passes,
        whatever the gradcam checks shared (this pass is what they may read, not the reverse).
        Fewer only when the check stops early: a model whose feature map no gradient reaches
        is skipped after the first batch."""
        return Cost(forward=ctx.n_images, gradient=ctx.n_images)

    def run(self, ctx: AuditContext) -> Findings:
        head = ctx.target.gap_head
        if head is None:
            auditkit.skip(getattr(ctx.target, "gap_head_reason", None) or NO_GAP_HEAD_REASON)
        settings = self.settings
        clean = ctx.clean
        weight = head.weight.detach()
        bias = None if head.bias is None else head.bias.detach()
        if clean.labels is not None and settings.cam_class == "label":
            classes, cam_class = clean.labels, "label"
        else:
            classes, cam_class = clean.preds, "predicted"

        feature_dtypes: set[torch.dtype] = set()

        def measure(images: torch.Tensor, cls: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
            return _measure(ctx.target, head, weight, bias, images, cls, reference, feature_dtypes)

        # The maps of this pass are the gradcam checks' maps when they explain the layer whose
        # output is the feature map, for the same classes: computed here once for all of them.
        shared_maps = None
        if head.feature_layer is not None:
            key = evaluation_maps_key(head.feature_layer, cam_class, ctx.n_images)
            shared_maps = ctx.shared(key, lambda: EvaluationMaps(ctx.n_images, ctx.device))
        tallies: list[tuple[int, _Tally]] = []  # one per batch, by its first evaluation position
        overlays: list[tuple[int, Artifact]] = []

        def measure_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes is freed when it returns, not kept by
            # the loop's variables through the next batch's work.
            tally = _Tally()
            tallies.append((int(batch.index[0]), tally))
            index = batch.index.to(clean.preds.device)
            out = oom_backoff(measure, batch.images, classes[index], clean.logits_at(index))
            if shared_maps is not None:
                shared_maps.rows(batch.index.to(ctx.device), lambda: out["layer_grad_cam"])
            tally.add_identities(out, batch.index)
            boxes = batch.boxes
            if boxes is None and batch.masks is not None:
                boxes = boxes_from_masks(batch.masks)
            if boxes is not None:
                boxes = as_box_sets(boxes)  # [B,M,4]: an image's object region is the union of its boxes
                tally.add_localization(out["cam"], boxes, batch.images.shape[-2:], settings.pointing_tolerance)
            for row in range(len(batch)):
                position = int(batch.index[row])
                if position >= settings.overlays:
                    continue
                c = int(classes[index[row]])
                pred = int(clean.preds[index[row]])
                confidence = float(torch.softmax(clean.logits_at(index[row:row + 1])[0].float(), dim=0)[pred])
                box = None if boxes is None else boxes[row]
                overlays.append((position, Artifact(
                    name=f"cam_overlay_{position}",
                    kind="image/png",
                    data=cam_overlay_png(batch.images[row], out["cam"][row], box),
                    caption=(
                        f"image {position}: CAM for the {cam_class} class {_class_name(ctx, c)} "
                        f"(predicted {_class_name(ctx, pred)}, p={confidence:.2f})"
                        + ("; white: object box" if box is not None and bool(torch.isfinite(box).all(-1).any()) else "")
                    ),
                )))

        for batch in ctx.progress(ctx.batches(), total=ctx.n_batches(), desc="CAM identities"):
            measure_batch(batch)

        # every process's batches (one process: its own), taken in evaluation order
        world = ctx.world
        tally = _Tally()
        for part in world.gather_ordered(tallies):
            tally.fold(part)
        overlay_artifacts = world.gather_ordered(overlays)
        metrics = tally.metrics()
        failures = []
        # The feature map's own dtype counts too: functional code in forward (no module, so
        # not in the probe's record) may have computed it in lower precision.
        dtype = _coarsest(getattr(ctx.target, "compute_dtype", torch.float32), *feature_dtypes)
        automatic = settings.identity_rtol is None
        rtol = relative_tolerance(dtype) if automatic else float(settings.identity_rtol)
        # Errors up to `bound` count as rounding: PRECISION_FACTOR x the dtype's tolerance, or
        # exactly the configured identity_rtol.
        bound = PRECISION_FACTOR * rtol if automatic else rtol
        dtype_name = str(dtype).replace("torch.", "")
        precision_limited = {
            name: err for name, err in (("logit", tally.logit_rel), ("Grad-CAM", tally.gradcam_rel)) if rtol < err <= bound
        }
        precision_notes = [
            f"the {name} identity holds to {dtype_name} precision only (max relative error {err:.3g} > "
            f"{rtol:g}, the {dtype_name} tolerance, but within {PRECISION_FACTOR}x it: rounding, not a structural defect)"
            for name, err in precision_limited.items()
        ]
        where = f"'{head.pool}' -> '{head.linear}'"
        if not tally.logit_rel <= bound:
            failure = (
                f"logit identity {LOGIT_IDENTITY} broken: max abs error {tally.logit_abs:.3g} "
                f"(image {tally.logit_worst[0]}, class {tally.logit_worst[1]}; max relative error "
                f"{tally.logit_rel:.3g} > {_bar(automatic, dtype_name, rtol)}): the head "
                f"{where} detected as global average "
                "pooling + one linear layer is not one (forward() changes the pooled features between them, "
                "e.g. a nonlinearity or a scaling), so CAM does not explain this model's logits"
            )
            if tally.hooked_logit_rel <= bound:
                failure += (
                    f"; the identity holds on the instrumented pass's own logits (relative error "
                    f"{tally.hooked_logit_rel:.3g}), so the model's forward pass is not deterministic"
                )
            failures.append(failure + _tf32_hint(ctx.device))
        if not tally.gradcam_rel <= bound:
            failures.append(
                f"Grad-CAM identity {GRAD_CAM_IDENTITY} at the {'output' if head.features == 'layer output' else 'input'} of '{head.pool}' broken: max abs error "
                f"{tally.gradcam_abs:.3g} (image {tally.gradcam_worst}; max relative error {tally.gradcam_rel:.3g} "
                f"> {_bar(automatic, dtype_name, rtol)}): the gradient of the logit "
                "with respect to the features is not "
                "w_c / (H*W)" + _tf32_hint(ctx.device)
            )
        tolerance = f"{dtype_name} tolerance {rtol:.2g}" if automatic else f"identity_rtol {rtol:g}"
        message = (
            f"GAP head {where} confirmed on {tally.n} images: logit identity max abs error "
            f"{tally.logit_abs:.2g} (relative {tally.logit_rel:.2g}; {tolerance}), Grad-CAM identity max abs error "
            f"{tally.gradcam_abs:.2g}; cam_gradcam_corr {_corr(metrics['cam_gradcam_corr'], tally.n)}, "
            f"flip_corr {_corr(metrics['flip_corr'], tally.n)}"
        )
        if precision_notes and not failures:
            message += "; " + "; ".join(precision_notes)
        if failures:
            message = f"CAM of {ctx.target.name} checked on {tally.n} images"
        if tally.n_localized:
            message += (
                f"; pointing_game {metrics['pointing_game']:.2f} (center baseline {metrics['center_baseline']:.2f}), "
                f"energy_in_box {metrics['energy_in_box']:.2f}"
            )
        details = {
            "gap_head": {
                "pool": head.pool,
                "linear": head.linear,
                "between": list(head.between),
                "feature_shape": list(head.feature_shape),
                "features": head.features,
                **({"layout": head.layout.to_details()} if head.layout is not None else {}),
            },
            "cam_class": cam_class,
            "identity_rtol": bound,
            "compute_dtype": dtype_name,
            "dtype_tolerance": rtol if automatic else None,
            "precision_limited": [name.lower().replace("-", "") for name in precision_limited],
            "logit_identity_worst": {"image": tally.logit_worst[0], "class": tally.logit_worst[1]},
            "gradcam_identity_worst_image": tally.gradcam_worst,
            "cam_gradcam_corr_undefined": tally.cam_gradcam_undefined,
            "flip_corr_undefined": tally.flip_undefined,
        }
        if tally.n_localized:
            details["pointing_tolerance_px"] = tally.tolerance_px
        return Findings(metrics=metrics, message=message, failures=failures, artifacts=overlay_artifacts, details=details)


def _measure(
    target: Any,
    head: GapHead,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    images: torch.Tensor,
    classes: torch.Tensor,
    reference_logits: torch.Tensor,
    feature_dtypes: set[torch.dtype],
) -> dict[str, torch.Tensor]:
    """Everything the check needs from one batch, as per-image tensors (so batch-size backoff
    can split and concatenate it): two forward passes, the image and its mirror. The feature
    map's dtype is added to ``feature_dtypes``. Skips the check when no gradient reaches the
    feature map."""
    # Its own pass, not the Grad-CAM maps the gradcam checks share (ctx.shared), even where
    # their layer's output is this same tensor: the identities need the whole feature map
    # (CAM_c = w_c . f, its magnitude scales, the logits from it) and Grad-CAM in float64 from
    # it, which the shared float32 maps (ReLU'd, summed over channels) no longer hold.
    pool = head.pool
    feature_pass = pool_input_pass(target, pool, images, classes, layout=head.layout, features=head.features)
    if not feature_pass.gradient_reaches_features:
        where = "output" if head.features == "layer output" else "input"
        auditkit.skip(
            f"no gradient reaches the feature layer (the {where} of '{pool}', the map CAM is built from): "
            "forward() detaches it or computes it under torch.no_grad(), so Grad-CAM and its identity with "
            "CAM are undefined for this model"
        )
    features = feature_pass.features
    feature_dtypes.add(features.dtype)
    real = logit_identity_errors(features, weight, bias, reference_logits)
    hooked = logit_identity_errors(features, weight, bias, feature_pass.logits)
    grad_cam = grad_cam_identity_errors(feature_pass.grad_cam, features, weight, classes)
    cam = class_activation_maps(features.double(), weight, classes)
    mirrored = pool_input_pass(target, pool, images.flip(-1), layout=head.layout, features=head.features).features
    return {
        # Grad-CAM at the feature map in its own dtype, by the formula the gradcam checks use:
        # shared with them when they explain the layer that produces it (see run)
        "layer_grad_cam": grad_cam_from(features, feature_pass.gradients),
        "logit_abs": real.abs_err,
        "logit_rel": real.rel_err,
        "logit_worst": real.worst,
        "hooked_logit_rel": hooked.rel_err,
        "gradcam_abs": grad_cam.abs_err,
        "gradcam_rel": grad_cam.rel_err,
        "cam": cam,
        "grad_cam": feature_pass.grad_cam,
        "cam_of_mirrored": class_activation_maps(mirrored.double(), weight, classes),
    }


class _Tally:
    """Running aggregates over batches, so memory does not grow with the number of images."""

    def __init__(self) -> None:
        self.n = 0
        self.logit_abs = 0.0
        self.logit_rel = 0.0
        self.logit_worst = (-1, -1)
        self.hooked_logit_rel = 0.0
        self.gradcam_abs = 0.0
        self.gradcam_rel = 0.0
        self.gradcam_worst = -1
        self.cam_gradcam_sum = 0.0
        self.cam_gradcam_defined = 0
        self.cam_gradcam_undefined = 0
        self.flip_sum = 0.0
        self.flip_defined = 0
        self.flip_undefined = 0
        self.n_localized = 0
        self.pointing_hits = 0
        self.center_hits = 0
        self.energy_sum = 0.0
        self.tolerance_px = math.nan

    def add_identities(self, out: dict[str, torch.Tensor], positions: torch.Tensor) -> None:
        self.n += int(out["cam"].shape[0])
        row = int(out["logit_abs"].argmax())
        if _replaces(float(out["logit_abs"][row]), self.logit_abs):
            self.logit_abs = float(out["logit_abs"][row])
            self.logit_worst = (int(positions[row]), int(out["logit_worst"][row]))
        self.logit_rel = _max(self.logit_rel, out["logit_rel"])
        self.hooked_logit_rel = _max(self.hooked_logit_rel, out["hooked_logit_rel"])
        row = int(out["gradcam_abs"].argmax())
        if _replaces(float(out["gradcam_abs"][row]), self.gradcam_abs):
            self.gradcam_abs = float(out["gradcam_abs"][row])
            self.gradcam_worst = int(positions[row])
        self.gradcam_rel = _max(self.gradcam_rel, out["gradcam_rel"])

        corr, defined = pearson_rows(F.relu(out["cam"]), out["grad_cam"])
        self.cam_gradcam_sum += float(corr[defined].sum())
        self.cam_gradcam_defined += int(defined.sum())
        self.cam_gradcam_undefined += int((~defined).sum())
        corr, defined = pearson_rows(out["cam_of_mirrored"], out["cam"].flip(-1))
        self.flip_sum += float(corr[defined].sum())
        self.flip_defined += int(defined.sum())
        self.flip_undefined += int((~defined).sum())

    def fold(self, later: "_Tally") -> None:
        """Take in the tally of later images, as if :meth:`add_identities` and
        :meth:`add_localization` had seen them here after these (the same maxima, the same
        sums in the same order)."""
        self.n += later.n
        if later.n:
            if _replaces(later.logit_abs, self.logit_abs):
                self.logit_abs, self.logit_worst = later.logit_abs, later.logit_worst
            if _replaces(later.gradcam_abs, self.gradcam_abs):
                self.gradcam_abs, self.gradcam_worst = later.gradcam_abs, later.gradcam_worst
            for name in ("logit_rel", "hooked_logit_rel", "gradcam_rel"):
                setattr(self, name, _max(getattr(self, name), torch.tensor([getattr(later, name)], dtype=torch.float64)))
        for name in ("cam_gradcam_sum", "cam_gradcam_defined", "cam_gradcam_undefined", "flip_sum", "flip_defined",
                     "flip_undefined", "n_localized", "pointing_hits", "center_hits", "energy_sum"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        if not math.isnan(later.tolerance_px):
            self.tolerance_px = later.tolerance_px

    def add_localization(self, cam: torch.Tensor, boxes: torch.Tensor, size: Any, tolerance_at_224: float) -> None:
        height, width = int(size[0]), int(size[1])
        keep = torch.isfinite(boxes).all(dim=-1).any(dim=-1)  # images with at least one box
        if not bool(keep.any()):
            return
        self.tolerance_px = pointing_tolerance_px(height, width, tolerance_at_224)
        maps = upsample(F.relu(cam[keep]), (height, width))
        region = box_masks(boxes[keep].to(maps.dtype), height, width)
        self.n_localized += int(keep.sum())
        self.pointing_hits += int(pointing_hits(maps, region, self.tolerance_px).sum())
        self.center_hits += int(center_hits(region, self.tolerance_px).sum())
        self.energy_sum += float(energy_in_region(maps, region).sum())

    def metrics(self) -> dict[str, float]:
        out = {
            "logit_max_abs_err": self.logit_abs,
            "logit_rel_err": self.logit_rel,
            "cam_gradcam_corr": _mean(self.cam_gradcam_sum, self.cam_gradcam_defined),
            "gradcam_max_abs_err": self.gradcam_abs,
            "gradcam_rel_err": self.gradcam_rel,
            "flip_corr": _mean(self.flip_sum, self.flip_defined),
            "n_images": float(self.n),
        }
        if self.n_localized:
            out["pointing_game"] = self.pointing_hits / self.n_localized
            out["center_baseline"] = self.center_hits / self.n_localized
            out["energy_in_box"] = self.energy_sum / self.n_localized
            out["n_localized"] = float(self.n_localized)
        return out


def _mean(total: float, count: int) -> float:
    """Mean over the images where a correlation is defined; NaN when it is defined on none."""
    return total / count if count else math.nan


def _corr(value: float, n: int) -> str:
    """A mean correlation for the message; why it is missing when it is NaN."""
    if math.isnan(value):
        return f"undefined (a map is constant on all {n} images)"
    return f"{value:.3f}"


def _max(current: float, values: torch.Tensor) -> float:
    """Running maximum in which NaN sticks: a NaN error must fail the check, never vanish."""
    if math.isnan(current) or bool(values.isnan().any()):
        return math.nan
    return max(current, float(values.max()))


def _replaces(value: float, current: float) -> bool:
    """Whether ``value`` is a new running maximum; NaN replaces a number and then sticks."""
    return not math.isnan(current) and not value <= current


def _class_name(ctx: AuditContext, c: int) -> str:
    names = ctx.data.class_names
    return names[c] if 0 <= c < len(names) else str(c)


def _coarsest(*dtypes: torch.dtype) -> torch.dtype:
    """The floating dtype with the largest machine epsilon among ``dtypes`` (float32 if none)."""
    floating = [d for d in dtypes if d.is_floating_point]
    return max(floating, key=lambda d: torch.finfo(d).eps, default=torch.float32)


def _bar(automatic: bool, dtype_name: str, rtol: float) -> str:
    """The bar an error failed, for messages."""
    if not automatic:
        return f"identity_rtol={rtol:g}"
    return f"{PRECISION_FACTOR} x identity_rtol={rtol:g}, the {dtype_name} tolerance: more than rounding explains"


def _tf32_hint(device: torch.device) -> str:
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return (
            "; note: TF32 matmuls are enabled (torch.backends.cuda.matmul.allow_tf32), whose ~1e-3 relative "
            "rounding can exceed identity_rtol: disable TF32 or raise identity_rtol"
        )
    return ""
