"""What the three Grad-CAM checks share: the settings that pick the layer and the explained
class, the layer choice, and batched Grad-CAM maps on the device, the evaluation images' maps
computed once per model for all of them; and what those maps will cost, known before a check
runs (:func:`plan_maps`, for ``Check.estimate``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

import auditkit
from auditkit import Batch, UsageError
from auditkit.toolkit import (
    AuditContext,
    EvaluationMaps,
    LayerChoice,
    applied_setting,
    choose_layer,
    evaluation_maps_key,
    grad_cam,
    oom_backoff,
    upsample,
)

EXPLAINED_CLASSES = ("label", "predicted")


@dataclass
class GradCamSettings:
    """Settings every Grad-CAM check has.

    ``layer``: module name Grad-CAM explains for the model under audit (``"layer4"``); None
    chooses automatically (the last layer with a spatial output that runs once and that the
    logits depend on). Baselines keep the automatic choice unless ``layers`` names them.
    ``layers``: per-model layer, model name -> module name (``{"target" = "features.10",
    "alexnet" = "features.11"}``); wins over ``layer``.
    ``explain``: the class whose score is explained, the ground-truth ``"label"`` (the
    prediction is used, and said so, when the data has no labels) or ``"predicted"``.
    ``max_images``: at most this many evaluation images (None: all that ``--max-images`` lets through).
    """

    check_id: ClassVar[str] = "gradcam"

    layer: str | None = None
    layers: dict[str, str] = field(default_factory=dict)
    explain: Literal["label", "predicted"] = "label"
    max_images: int | None = None

    def __post_init__(self) -> None:
        where = f"settings of {self.check_id!r}"
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise UsageError(f"{where}: layer must be a module name such as 'layer4', got {self.layer!r}")
        if not isinstance(self.layers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.layers.items()
        ):
            raise UsageError(f"{where}: layers must map model names to module names, like {{target = 'layer4'}}, got {self.layers!r}")
        if self.explain not in EXPLAINED_CLASSES:
            raise UsageError(f"{where}: explain must be one of {', '.join(EXPLAINED_CLASSES)}, got {self.explain!r}")
        if self.max_images is not None and (isinstance(self.max_images, bool) or not isinstance(self.max_images, int) or self.max_images < 1):
            raise UsageError(f"{where}: max_images must be a positive integer or unset, got {self.max_images!r}")


def check_positive_int(where: str, name: str, value: Any) -> None:
    """Raise UsageError unless ``value`` is an int >= 1 (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {name} must be a positive integer, got {value!r}")


def check_fraction(where: str, name: str, value: Any, *, open_low: bool = True) -> None:
    """Raise UsageError unless ``value`` is a number in (0, 1) (or [0, 1) with ``open_low=False``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value < 1 if open_low else 0 <= value < 1)
    if not ok:
        interval = "(0, 1)" if open_low else "[0, 1)"
        raise UsageError(f"{where}: {name} must be a number in {interval}, got {value!r}")


def images_explained(ctx: AuditContext, settings: GradCamSettings) -> int:
    """How many evaluation images a Grad-CAM check looks at: the first ``max_images`` of them."""
    return ctx.n_images if settings.max_images is None else min(ctx.n_images, settings.max_images)


def explained_mode(ctx: AuditContext, settings: GradCamSettings) -> str:
    """``"label"`` or ``"predicted"``: the classes whose maps a check computes (the prediction
    where the data has no labels)."""
    return settings.explain if ctx.clean.labels is not None else "predicted"


def layer_key(ctx: AuditContext, settings: GradCamSettings) -> tuple[str, Any]:
    """The ``ctx.shared`` key of the model's :class:`LayerChoice` under these settings."""
    return ("gradcam.layer", applied_setting(ctx.target, layer=settings.layer, layers=settings.layers))


@dataclass(frozen=True)
class MapsPlan:
    """What :class:`Explainer` will compute for one check before the check runs, from the
    settings and what earlier checks of the model stored (``ctx.shared``), without running
    the model: the input of a check's ``estimate``.

    :ivar probe_passes: gradient passes of the layer probe, 1 image (the automatic rule's
        dependence test, :func:`choose_layer`) when no check of this model has chosen the
        layer yet under these settings, else 0.
    :ivar batches: the positions (long [B], on the CPU) of each evaluation batch the check
        looks at, as ``ctx.batches(limit=...)`` yields them.
    :ivar computed: per batch, whether its maps are computed (the whole batch, as
        :meth:`EvaluationMaps.rows` does when one of its images has no map yet). True also
        where it cannot be known before the run: when the layer is chosen automatically and
        not probed yet, the maps' store is not known, and every batch is counted (an upper
        bound, exact when no check has stored maps for this model).
    :ivar stored: per batch, its raw maps [B,h,w] when every one is already stored, else None.
    """

    probe_passes: int
    batches: list[torch.Tensor]
    computed: list[bool]
    stored: list[torch.Tensor | None]

    @property
    def gradient_passes(self) -> int:
        """Images through a forward and backward pass: the probe's and the maps'."""
        return self.probe_passes + sum(len(index) for index, new in zip(self.batches, self.computed) if new)


def _never() -> Any:
    raise AssertionError("read only after has_shared said the value is there")


def plan_maps(ctx: AuditContext, settings: GradCamSettings) -> MapsPlan:
    """The Grad-CAM work :class:`Explainer` will do for a check with ``settings`` that reads
    :meth:`Explainer.evaluation_maps` for every batch of its images (see :class:`MapsPlan`).
    Cheap: no model run, no data loaded; reads the layer choice and the maps that earlier
    checks of this model shared."""
    if "layers" not in ctx.target.capabilities:  # Explainer skips the check
        return MapsPlan(0, [], [], [])
    n = images_explained(ctx, settings)
    batches = [torch.arange(start, min(start + ctx.batch_size, n)) for start in range(0, n, ctx.batch_size)]
    key = layer_key(ctx, settings)
    if ctx.has_shared(key):
        probe_passes, layer = 0, ctx.shared(key, _never).name
    elif key[1] is not None:
        probe_passes, layer = 0, key[1][1]  # a configured layer is looked up, not probed
    else:
        # The probe chooses the layer in the run: which maps are stored for it is not known.
        return MapsPlan(1, batches, [True] * len(batches), [None] * len(batches))
    maps_key = evaluation_maps_key(layer, explained_mode(ctx, settings), ctx.n_images)
    if not ctx.has_shared(maps_key):
        return MapsPlan(probe_passes, batches, [True] * len(batches), [None] * len(batches))
    store: EvaluationMaps = ctx.shared(maps_key, _never)
    stored = [store.stored(index.to(ctx.device)) for index in batches]
    return MapsPlan(probe_passes, batches, [rows is None for rows in stored], stored)


class Explainer:
    """Grad-CAM for one check on one model: the layer, the class explained per image, and
    maps upsampled to the input size, batch by batch on the device.

    The layer choice and the maps of the evaluation images are shared through ``ctx.shared``
    by every Grad-CAM check of the model: the layer is probed once, and each clean image's
    map is computed once (:class:`EvaluationMaps`)."""

    def __init__(self, ctx: AuditContext, settings: GradCamSettings):
        if "layers" not in ctx.target.capabilities:
            auditkit.skip("Grad-CAM needs hookable layers; this model has none (TorchScript, torch.export or black box)")
        self.ctx = ctx
        self.settings = settings

        def probe() -> LayerChoice:
            first = next(iter(ctx.batches(limit=1, shard=False)))
            choice = choose_layer(ctx.target, first.images, layer=settings.layer, layers=settings.layers)
            # once per model and setting (the choice is shared): which layer every map explains
            ctx.announce(f"Grad-CAM explains {choice.describe()}")
            return choice

        self.layer: LayerChoice = ctx.shared(layer_key(ctx, settings), probe)
        self.n_images = images_explained(ctx, settings)
        self.explains = explained_mode(ctx, settings)
        self.explains_note = (
            "the true label" if self.explains == "label"
            else "the predicted class" + ("" if settings.explain == "predicted" else " (the data has no labels)")
        )

    def batches(self, desc: str) -> Any:
        """The evaluation batches this check looks at, with a progress bar."""
        n_batches = self.ctx.n_batches(limit=self.n_images)
        return self.ctx.progress(self.ctx.batches(limit=self.n_images), total=n_batches, desc=desc)

    def classes(self, batch: Batch) -> torch.Tensor:
        """The explained class of each image of ``batch`` (long [B] on the device)."""
        if self.explains == "label":
            return batch.labels.to(self.ctx.device)
        clean = self.ctx.clean
        return clean.preds[batch.index.to(clean.preds.device)].to(self.ctx.device)

    def evaluation_maps(self, batch: Batch) -> torch.Tensor:
        """Grad-CAM maps [B,H,W] of the audited model for ``batch``, a batch of evaluation
        images (from :meth:`batches` or ``ctx.batches``) and their explained classes, upsampled
        as by :meth:`maps`. Read from the model's shared :class:`EvaluationMaps`: computed
        here only for images that no Grad-CAM check of this model has explained yet."""
        ctx = self.ctx
        key = evaluation_maps_key(self.layer.name, self.explains, ctx.n_images)
        store = ctx.shared(key, lambda: EvaluationMaps(ctx.n_images, ctx.device))
        raw = store.rows(batch.index.to(ctx.device), lambda: self.raw_maps(ctx.target, batch.images, self.classes(batch)))
        return upsample(raw, tuple(batch.images.shape[-2:]))

    def maps(self, target: Any, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps [B,H,W] of ``target`` at the chosen layer, upsampled bilinearly to the
        images' size (non-negative, unnormalized). ``target`` is the audited model or a copy
        of it with the same module names; for the audited model's evaluation images,
        :meth:`evaluation_maps` reads the maps the checks share."""
        return upsample(self.raw_maps(target, images, classes), tuple(images.shape[-2:]))

    def raw_maps(self, target: Any, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps [B,h,w] of ``target`` at the chosen layer's resolution (non-negative,
        unnormalized), with batch-size backoff on CUDA out-of-memory."""

        def compute(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            cams, _ = grad_cam(target, x, c, self.layer.name, layout=self.layer.grid_layout)
            return cams

        return oom_backoff(compute, images, classes)
