"""The ``occlusion.localization`` check: does the evidence lie on the object, judged by what
hiding parts of the image does to the model's answers? Needs only scores, so it works for
black boxes (ONNX files, HTTP endpoints, callables); on white boxes it also says whether
Grad-CAM agrees with occlusion."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

import auditkit
from auditkit import Check, Cost, Findings, UsageError
from auditkit.toolkit import (
    LOCALIZATION_DIRECTIONS,
    LOCALIZATION_HEADLINE,
    LOCALIZATION_METRICS,
    LOCALIZATION_MIN_SAMPLE,
    LOCALIZATION_THRESHOLDS,
    AuditContext,
    Batch,
    EvaluationMaps,
    LayerChoice,
    LocalizationScores,
    LocalizationSettings,
    applied_setting,
    bootstrap_mean_interval,
    choose_layer,
    evaluation_maps_key,
    grad_cam,
    localization_summary,
    object_regions,
    oom_backoff,
    rule_text,
    spearman_rows,
    upsample,
)

from auditkit_occlusion.maps import OcclusionGrid, baseline_colours, occlusion_grid, occlusion_maps, with_known_scores

EXPLAINED_CLASSES = ("label", "predicted")


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


@dataclass
class OcclusionSettings:
    """Settings of the occlusion maps and the Grad-CAM agreement signal.

    ``window``: side of the occluding square as a fraction of the image's shorter side
    (default 1/8, rounded to pixels: 4 px at 32, 28 px at 224). A fraction, not pixels, so
    that one setting means the same at every resolution and the number of positions (the
    cost) does not grow with the image: about an eighth of the side is a part of a typical
    object (a third to a half of one on synthetic shapes) and covers a small spurious cue
    whole (the synthetic corner marker is 5/64 of the side), so both show in the map.
    ``stride``: step between windows as a fraction of the window (default 1/2: every pixel is
    covered by up to 4 windows, which smooths the map; 1 tiles the image). With the defaults
    the grid has 15 x 15 = 225 positions whenever the side is a multiple of 16.
    ``baseline``: the colour a window is filled with: ``"mean"`` (default), each image's
    own mean colour per channel, or a grey level in [0, 1] for every image (0.5 is Zeiler
    and Fergus' grey square). The image's mean hides a region without adding an edge or a
    colour the image does not have; a fixed grey adds a grey square, which is itself new
    evidence on backgrounds far from grey (on dark photographs, on coloured plain
    backgrounds), so the map would partly record the square rather than what it hides.
    ``explain``: the class whose score is explained: the ground-truth ``"label"`` (the
    prediction when the data has no labels) or ``"predicted"``, as the gradcam checks.
    ``max_images``: at most this many evaluation images (default 32; None: all that
    ``--max-images`` lets through). Each costs ``positions + 1`` queries (226 at the
    defaults), so the default keeps a black-box audit at about 7,200 queries; 32 images
    already give McNemar's test enough discordant images to separate a model that looks at
    the object from one that does not.
    ``perturbations_per_eval``: occluded copies of each image per call of the model (captum's
    parameter); one call carries the batch's images x this many (64 at the defaults: 32
    images x 2), all held on the device at once. Larger calls are not cheaper on a CPU: at
    16 (512-image calls of ResNet-18 at 64 px) every activation buffer was too large for the
    allocator to keep, and page faults cost 7.5 s of system time out of 31 s, against none at
    2 (benchmarks/README.md, "Whole-audit cost"). Raise it for a GPU with small images, where
    fewer calls amortize launch overhead. ONNX files and HTTP endpoints split every call into
    their own ``batch_size``. CUDA out of memory halves the image batch automatically. It
    changes neither the maps nor the number of queries (identical metrics at 16 and 2).
    ``gradcam_agreement``: on white-box models with hookable layers, also compute Grad-CAM of
    the same class and report its Spearman rank correlation with the occlusion map
    (``gradcam_agreement``); False skips it.
    ``layer``, ``layers``: the layer Grad-CAM explains for the agreement, as the gradcam
    checks' settings of the same names (None: the gradcam checks' automatic choice); set
    them as there to compare with the Grad-CAM those checks judge.
    """

    check_id: ClassVar[str] = "occlusion"

    window: float = 0.125
    stride: float = 0.5
    baseline: float | Literal["mean"] = "mean"
    explain: Literal["label", "predicted"] = "label"
    max_images: int | None = 32
    perturbations_per_eval: int = 2
    gradcam_agreement: bool = True
    layer: str | None = None
    layers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"settings of {self.check_id!r}"
        if not _is_fraction(self.window):
            raise UsageError(f"{where}: window must be a fraction of the image's shorter side in (0, 1], got {self.window!r}")
        if not _is_fraction(self.stride):
            raise UsageError(f"{where}: stride must be a fraction of the window in (0, 1], got {self.stride!r}")
        grey = isinstance(self.baseline, (int, float)) and not isinstance(self.baseline, bool) and 0 <= self.baseline <= 1
        if self.baseline != "mean" and not grey:
            raise UsageError(f"{where}: baseline must be 'mean' or a grey level in [0, 1], got {self.baseline!r}")
        if self.explain not in EXPLAINED_CLASSES:
            raise UsageError(f"{where}: explain must be one of {', '.join(EXPLAINED_CLASSES)}, got {self.explain!r}")
        n = self.max_images
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UsageError(f"{where}: max_images must be a positive integer or unset, got {n!r}")
        p = self.perturbations_per_eval
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise UsageError(f"{where}: perturbations_per_eval must be a positive integer, got {p!r}")
        if not isinstance(self.gradcam_agreement, bool):
            raise UsageError(f"{where}: gradcam_agreement must be true or false, got {self.gradcam_agreement!r}")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise UsageError(f"{where}: layer must be a module name such as 'layer4', got {self.layer!r}")
        if not isinstance(self.layers, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.layers.items()):
            raise UsageError(f"{where}: layers must map model names to module names, like {{target = 'layer4'}}, got {self.layers!r}")


class OcclusionLocalization(Check):
    """Does the evidence lie on the object, by occlusion? (Zeiler and Fergus 2014)

    For each evaluation image with a box (or mask), a window filled with a baseline colour (the
    image's mean by default) slides over the image (``window``, ``stride``, ``baseline``); each
    pixel's value is the mean drop of the explained class's score over the windows covering it
    (captum's ``Occlusion``). Only the model's answers are used, through the black-box view
    (``target.query``: probabilities, counted), so ONNX files, HTTP endpoints and callables get
    it as white boxes do; each image costs ``positions`` queries, and one more for the image
    itself unless the shared clean pass scored its very batch (every image of the batch has an
    object, and ``max_images`` does not cut the batch short): its score is then read from
    there, as the same computation. The count is announced before the run and reported as
    ``n_queries`` (the images actually sent: a batch retried after CUDA out of memory counts
    again).

    The maps' positive part (the drops: evidence for the class, as Grad-CAM's ReLU keeps only
    evidence for it) is scored exactly as ``gradcam.localization`` scores Grad-CAM, with the
    same metric names, intervals and default rule (the toolkit's localization rule): the pointing
    game against the center baseline (``pointing_p_value <= 0.05``, McNemar's exact one-sided
    test), energy in the box against the box's area (``energy_gain_ci_low >= 0.05``), and
    ``loc_acc_iou50``. An image on which no window lowers the score (a model that ignores the
    image, a probability saturated at 1) has an empty map, which points nowhere.

    On white-box models with hookable layers it also computes Grad-CAM of the same class at
    the layer the gradcam checks choose (read from the model's shared maps when the Grad-CAM
    checks or ``cam.consistency`` already computed them) and reports ``gradcam_agreement``, the mean Spearman
    rank correlation of the two maps per image (at image resolution) with a bootstrap
    interval: Grad-CAM that disagrees with what hiding the image actually does is a finding
    about the explanation. It is not a default threshold: how high agreement should be
    depends on the layer's resolution and the window, and no published value calibrates it.

    Models that answer labels only are skipped. With labels, occlusion can only say where a
    window flips the predicted class (a binary flip map): on a model that classifies its
    images correctly and robustly most windows flip nothing, so the map is empty almost
    everywhere and cannot be scored with the pointing game or energy; it is not implemented.
    """

    id = "occlusion.localization"
    shards = True
    requires = ("scores", "localization")
    headline = (*LOCALIZATION_HEADLINE, "n_queries")
    metrics = (
        *LOCALIZATION_METRICS,
        "n_queries",
        "gradcam_agreement", "gradcam_agreement_ci_low", "gradcam_agreement_ci_high", "gradcam_agreement_images",
    )
    directions = {
        **LOCALIZATION_DIRECTIONS,
        "n_queries": None,  # a cost
        "gradcam_agreement_images": None,
        "gradcam_agreement*": "higher",
    }
    thresholds = LOCALIZATION_THRESHOLDS
    min_sample = LOCALIZATION_MIN_SAMPLE
    # A short run (the demo's) keeps every image and coarsens the grid: quarter-side windows,
    # 7 x 7 positions, 50 queries per image instead of 226.
    quick_settings = {"window": 0.25, "bootstrap_resamples": 1000}

    @dataclass
    class Settings(LocalizationSettings, OcclusionSettings):
        """Settings of ``occlusion.localization``: those of the occlusion maps
        (:class:`OcclusionSettings`: ``window``, ``stride``, ``baseline``, ``explain``,
        ``max_images``, ``perturbations_per_eval``, ``gradcam_agreement``, ``layer``,
        ``layers``) and those of the localization rule
        (:class:`auditkit.toolkit.LocalizationSettings`: ``region``, ``pointing_tolerance``,
        ``component_threshold``, ``confidence``, ``bootstrap_resamples``), as
        ``gradcam.localization`` has them."""

        check_id: ClassVar[str] = "occlusion.localization"

    def estimate(self, ctx: AuditContext) -> Cost:
        """Exact: every scored image's occluded copies and, where the clean pass did not score its
        batch, the image itself (forward); the Grad-CAM maps of the agreement not yet in the
        model's shared store, and the layer probe when no check has chosen the layer
        (gradient). Reads the data's boxes (loading the images, no model pass). When the layer
        is still to be chosen automatically, its maps count as missing: cam.consistency may
        have stored them under that layer's name, which only the probe will tell."""
        settings = self.settings
        plan = _plan(ctx, settings, self._n_images(ctx))  # kept for run(): the data is read once
        forward = sum(len(b.index) * (b.grid.positions + (not b.clean_scores)) for b in plan)
        return Cost(forward=forward, gradient=_Agreement.cost(ctx, settings, self._explains(ctx), plan))

    def _n_images(self, ctx: AuditContext) -> int:
        n = self.settings.max_images
        return ctx.n_images if n is None else min(ctx.n_images, n)

    def _explains(self, ctx: AuditContext) -> str:
        return self.settings.explain if ctx.clean.labels is not None else "predicted"

    def run(self, ctx: AuditContext) -> Findings:
        settings = self.settings
        if settings.region == "mask" and not ctx.data.has_masks:
            raise UsageError(f"{self.id}: region = 'mask' needs masks, and data {ctx.data.spec!r} has boxes only; use region = 'box'")
        clean = ctx.clean  # first: the clean pass's queries are the session's, not this check's
        explains = self._explains(ctx)
        explains_note = (
            "the true label" if explains == "label"
            else "the predicted class" + ("" if settings.explain == "predicted" else " (the data has no labels)")
        )
        n_images = self._n_images(ctx)
        agreement = _Agreement.for_model(ctx, settings, explains)
        scores = LocalizationScores(settings.pointing_tolerance, settings.component_threshold)
        plan = _plan(ctx, settings, n_images, shard=True)  # this process's batches
        overall = _PlanTotals.merged(ctx.world, plan)
        if overall.first is not None:  # the cost, before the first query (the first batch's size stands for all)
            first = overall.first
            ctx.announce(
                f"occlusion of {n_images:,} images at {first.height}x{first.width}: {first.describe()} -> "
                f"{overall.queries:,} queries"
            )
        grid: OcclusionGrid | None = None
        queries_before = ctx.target.queries
        n_batches = ctx.n_batches(limit=n_images)

        def occlude_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes is freed when it returns, not kept by
            # the loop's variables through the next batch's work.
            nonlocal grid
            objects = object_regions(batch.boxes, batch.masks, batch.images.shape[-2:], settings.region)
            if objects is None:
                return
            images = batch.images[objects.scored]
            classes = self._classes(ctx, batch, explains)[objects.scored]
            h, w = images.shape[-2:]
            if grid is None or (grid.height, grid.width) != (h, w):
                grid = occlusion_grid(h, w, settings.window, settings.stride)
            known = None
            if _scored_by_clean_pass(ctx, batch, objects.scored):
                known = clean.probs_at(batch.index)
            maps = self._maps(ctx, images, classes, grid, known)
            # Scored on the evidence for the class, the drops (as Grad-CAM's ReLU keeps the
            # positive part): a window whose removal raises the score is evidence against.
            index = batch.index.to(maps.device)[objects.scored]
            scores.add(maps.clamp_min(0), objects.region, objects.boxes, index=index)
            agreement.add(index, images, classes, maps)

        for batch in ctx.progress(ctx.batches(limit=n_images), total=n_batches, desc="occlusion"):
            occlude_batch(batch)

        # every process's images (one process: as they are)
        n_queries = ctx.world.all_sum(ctx.target.queries - queries_before)
        scores = scores.merged(ctx.world)
        agreement.merge(ctx.world)
        # the grid of the last batch with an object, as one process ends the loop with
        grid = overall.last
        if not scores.n_images:
            auditkit.skip(f"none of the first {n_images} evaluation images has a {settings.region}")
        metrics = scores.metrics(ctx.generator, settings.confidence, settings.bootstrap_resamples)
        metrics["n_queries"] = float(n_queries)
        metrics.update(agreement.metrics(ctx.generator, settings.confidence, settings.bootstrap_resamples))
        assert grid is not None
        return Findings(
            metrics=metrics,
            message=self._message(metrics, grid, explains_note, agreement),
            details={
                "explained_class": explains_note,
                "window_px": grid.window,
                "stride_px": grid.stride,
                "positions": grid.positions,
                "queries_per_image": grid.queries_per_image,
                "clean_scores_reused": overall.clean_scores_reused,
                "baseline": settings.baseline,
                "perturbations_per_eval": settings.perturbations_per_eval,
                "pointing_tolerance_px": scores.tolerance_px,
                "region": settings.region,
                "rule": rule_text(self.active_thresholds),
                **agreement.details(),
            },
        )

    @staticmethod
    def _classes(ctx: AuditContext, batch: Batch, explains: str) -> torch.Tensor:
        if explains == "label":
            return batch.labels.to(ctx.device)
        preds = ctx.clean.preds
        return preds[batch.index.to(preds.device)].to(ctx.device)

    def _maps(
        self, ctx: AuditContext, images: torch.Tensor, classes: torch.Tensor, grid: OcclusionGrid,
        known: torch.Tensor | None,
    ) -> torch.Tensor:
        """Occlusion maps [B,H,W] of ``images``; ``known``: their scores [B,K] when the shared
        clean pass has them (the same query on the same batch), else None."""
        settings = self.settings

        def compute(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            baselines = baseline_colours(x, settings.baseline)
            # after a CUDA out-of-memory split, x is a half: its own query, not the batch's scores
            forward = ctx.target.query if known is None else with_known_scores(ctx.target.query, images, known)
            return occlusion_maps(forward, x, c, grid, baselines, settings.perturbations_per_eval)

        return oom_backoff(compute, images, classes)

    def _message(self, m: dict[str, float], grid: OcclusionGrid, explains_note: str, agreement: "_Agreement") -> str:
        empty = f"; {int(m['empty_maps'])} empty maps (no window lowered the score)" if m["empty_maps"] else ""
        baseline = "the image's mean colour" if self.settings.baseline == "mean" else f"grey {self.settings.baseline:g}"
        return (
            f"occlusion with {grid.describe()}, filled with {baseline}; explaining {explains_note} on "
            f"{int(m['n_images'])} images with {int(m['n_queries']):,} queries{empty}: "
            + localization_summary(m, self.active_thresholds)
            + agreement.summary(m)
        )


class _Agreement:
    """Grad-CAM against occlusion on a white-box model: the Spearman rank correlation of the two
    maps of each image (Grad-CAM upsampled to the image), on the device."""

    def __init__(self, ctx: AuditContext, layer: LayerChoice | None, note: str | None, explains: str = "label"):
        self.ctx = ctx
        self.layer = layer
        self.note = note  # why there is no agreement on this model, when there is none
        self.explains = explains  # "label" or "predicted": the classes the maps explain
        self.per_image: list[torch.Tensor] = []
        self.index: list[torch.Tensor] = []  # the evaluation positions of per_image's rows

    @staticmethod
    def applies(ctx: AuditContext, settings: OcclusionSettings) -> bool:
        return {"white_box", "layers"} <= set(ctx.target.capabilities) and settings.gradcam_agreement

    @classmethod
    def cost(cls, ctx: AuditContext, settings: OcclusionSettings, explains: str, plan: list[_PlannedBatch]) -> int:
        """The gradient passes :meth:`for_model` and :meth:`add` will make over ``plan``: the
        layer probe (one image) when the layer is chosen automatically and no check has yet,
        and the maps of every planned batch the model's shared store does not hold whole."""
        if not cls.applies(ctx, settings):
            return 0
        setting = applied_setting(ctx.target, layer=settings.layer, layers=settings.layers)
        probe = 0
        if ctx.has_shared(("gradcam.layer", setting)):
            layer = ctx.shared(("gradcam.layer", setting), _never).name
        elif setting is not None:
            layer = setting[1]  # configured: chosen without a pass
        else:
            layer, probe = None, 1
        key = None if layer is None else evaluation_maps_key(layer, explains, ctx.n_images)
        store = ctx.shared(key, _never) if key is not None and ctx.has_shared(key) else None
        missing = sum(len(b.index) for b in plan if store is None or store.stored(b.index.to(ctx.device)) is None)
        return probe + missing

    @classmethod
    def for_model(cls, ctx: AuditContext, settings: OcclusionSettings, explains: str) -> "_Agreement":
        target = ctx.target
        if not {"white_box", "layers"} <= set(target.capabilities):
            return cls(ctx, None, None)  # a black box: no Grad-CAM to compare, nothing to say
        if not settings.gradcam_agreement:
            return cls(ctx, None, "not computed (gradcam_agreement = false)")
        setting = applied_setting(target, layer=settings.layer, layers=settings.layers)

        def probe() -> LayerChoice:
            first = next(iter(ctx.batches(limit=1, shard=False)))
            return choose_layer(target, first.images, layer=settings.layer, layers=settings.layers)

        try:
            # The key the gradcam checks store their layer choice under: one probe per model
            # and setting for all of them.
            layer = ctx.shared(("gradcam.layer", setting), probe)
        except UsageError as exc:
            if setting is not None:
                raise  # a configured layer that does not fit is the user's to fix
            return cls(ctx, None, f"not computed: {exc}")
        return cls(ctx, layer, None, explains)

    def add(self, index: torch.Tensor, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor) -> None:
        """Compare the occlusion ``maps`` [B,H,W] of evaluation ``images`` (at eval positions
        ``index``, explaining ``classes``) with their Grad-CAM maps, read from the model's
        shared maps (:class:`EvaluationMaps`, as the Grad-CAM checks and cam.consistency keep
        them: the same layer and explained classes) or computed here for this batch and kept
        there."""
        if self.layer is None:
            return
        ctx, name, layout = self.ctx, self.layer.name, self.layer.grid_layout

        def compute(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            cams, _ = grad_cam(ctx.target, x, c, name, layout=layout)
            return cams

        key = evaluation_maps_key(name, self.explains, ctx.n_images)
        store = ctx.shared(key, lambda: EvaluationMaps(ctx.n_images, ctx.device))
        raw = store.rows(index.to(ctx.device), lambda: oom_backoff(compute, images, classes))
        cams = upsample(raw, tuple(images.shape[-2:]))
        self.per_image.append(spearman_rows(cams, maps))
        self.index.append(index.to(maps.device))

    def merge(self, world: Any) -> None:
        """Take in every process's correlations, in evaluation order (a sharded audit)."""
        if self.layer is None or not world.distributed:
            return
        device = self.ctx.device
        index = torch.cat(self.index) if self.index else torch.zeros(0, dtype=torch.long, device=device)
        rows = {"rho": torch.cat(self.per_image)} if self.per_image else {}
        index, rows = world.gather_rows(index, rows)
        self.index, self.per_image = ([index], [rows["rho"]]) if index.numel() else ([], [])

    def metrics(self, generator: torch.Generator, confidence: float, resamples: int) -> dict[str, float]:
        if self.layer is None:
            return {}
        rho = torch.cat(self.per_image).double() if self.per_image else torch.zeros(0, dtype=torch.float64)
        rho = rho[~torch.isnan(rho)]  # a constant map has no order to compare
        n = int(rho.numel())
        mean = float(rho.mean()) if n else math.nan
        low, high = bootstrap_mean_interval(rho, generator, confidence, resamples)
        return {
            "gradcam_agreement": mean,
            "gradcam_agreement_ci_low": low,
            "gradcam_agreement_ci_high": high,
            "gradcam_agreement_images": float(n),
        }

    def summary(self, m: dict[str, float]) -> str:
        if self.layer is None:
            return f"; Grad-CAM agreement {self.note}" if self.note else ""
        if not m["gradcam_agreement_images"]:
            return f"; Grad-CAM agreement at layer {self.layer.name}: no image with two non-constant maps"
        return (
            f"; Grad-CAM agreement at layer {self.layer.name}: mean rank correlation {m['gradcam_agreement']:.3f} "
            f"[{m['gradcam_agreement_ci_low']:.3f}, {m['gradcam_agreement_ci_high']:.3f}] on "
            f"{int(m['gradcam_agreement_images'])} images"
        )

    def details(self) -> dict[str, Any]:
        if self.layer is not None:
            return {"gradcam_agreement": {**self.layer.to_details()}}
        return {"gradcam_agreement": self.note} if self.note else {}


@dataclass(frozen=True)
class _PlannedBatch:
    """One evaluation batch as the check will see it: its number (in evaluation order), the
    eval positions of its scored images (long [S], on the CPU), their window grid, and whether
    the shared clean pass scored this very batch (then their unoccluded scores are read from it)."""

    number: int
    index: torch.Tensor
    grid: OcclusionGrid
    clean_scores: bool


def _plan(ctx: AuditContext, settings: OcclusionSettings, n_images: int, shard: bool = False) -> list[_PlannedBatch]:
    """The batches of the first ``n_images`` evaluation images that hold a scored object, read
    from the data (the images are loaded; the model is not run); with ``shard``, only this
    process's batches (:meth:`AuditContext.batches`; all of them with one process).

    The whole plan is kept in the model's shared store: the estimate reads the data for it,
    and the run then takes its own batches from it instead of reading the data again."""
    key = ("occlusion.plan", n_images, ctx.batch_size, settings.region, settings.window, settings.stride)
    world = ctx.world
    if ctx.has_shared(key):
        plan: list[_PlannedBatch] = ctx.shared(key, _never)
        return [b for b in plan if world.owns_batch(b.number)] if shard else plan
    indices = ctx.own_positions(n_images) if shard else None
    plan = []
    for batch in ctx.data.batches("eval", ctx.batch_size, limit=n_images, indices=indices):
        objects = object_regions(batch.boxes, batch.masks, batch.images.shape[-2:], settings.region)
        if objects is None:
            continue
        h, w = batch.images.shape[-2:]
        plan.append(_PlannedBatch(
            int(batch.index[0]) // ctx.batch_size,
            batch.index[objects.scored.cpu()],
            occlusion_grid(h, w, settings.window, settings.stride),
            _scored_by_clean_pass(ctx, batch, objects.scored),
        ))
    if not shard or not world.distributed:  # the whole plan
        ctx.shared(key, lambda: plan)
    return plan


@dataclass(frozen=True)
class _PlanTotals:
    """What the announcement and the details need of the whole plan, over every process's
    batches: the queries, the images whose clean scores are reused, and the window grids of
    the first and the last batch with an object (None when there is none)."""

    queries: int
    clean_scores_reused: int
    first: OcclusionGrid | None
    last: OcclusionGrid | None

    @classmethod
    def merged(cls, world: Any, plan: list[_PlannedBatch]) -> "_PlanTotals":
        """The totals of this process's ``plan`` merged over the processes (one exchange)."""
        mine = (
            sum(len(b.index) * (b.grid.positions + (not b.clean_scores)) for b in plan),
            sum(len(b.index) for b in plan if b.clean_scores),
            (plan[0].number, plan[0].grid) if plan else None,
            (plan[-1].number, plan[-1].grid) if plan else None,
        )
        parts = world.all_gather(mine)
        ends = [p for p in parts if p[2] is not None]
        return cls(
            queries=sum(p[0] for p in parts),
            clean_scores_reused=sum(p[1] for p in parts),
            first=min((p[2] for p in ends), key=lambda e: e[0])[1] if ends else None,
            last=max((p[3] for p in ends), key=lambda e: e[0])[1] if ends else None,
        )


def _scored_by_clean_pass(ctx: AuditContext, batch: Batch, scored: torch.Tensor) -> bool:
    """Whether the shared clean pass ran the model on exactly the images this check queries
    in ``batch`` (its images with an object, ``scored``): every image of the batch is scored,
    and the batch is the clean pass's whole batch (not cut short by ``max_images``). Then the
    clean pass's scores are those the first query would return, bit for bit; any other
    batch is queried, since a model's output can round differently in another batch."""
    start = int(batch.index[0]) if len(batch) else 0
    return bool(scored.all()) and len(batch) == min(ctx.batch_size, ctx.n_images - start)


def _never() -> Any:
    raise AssertionError("read only after has_shared said the value is there")
