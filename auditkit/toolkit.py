"""The plugin toolkit: everything a check plugin may import from auditkit, in one place.

This module (with the names exported by the top-level ``auditkit`` package) is the stable
surface for plugin authors: its names keep their meaning across minor versions, and a change
to one is announced in the changelog with a deprecation period. Every other module of
auditkit is private and may change without notice; the built-in checks under ``plugins/``
import only from here and from ``auditkit`` (a test holds them to it), so a third-party
plugin can do everything they do.

What is here, by topic (each name's own docstring gives shapes, units, errors and sources):

- Writing a check: :class:`Check`, :class:`Findings`, :class:`Threshold`, :class:`Artifact`,
  :class:`Curve`, :class:`CurvePoint`, :func:`skip`, :func:`xfail`, :data:`hookimpl`; the
  results: :class:`CheckResult`, :class:`Outcome`; what a run will cost, announced before a
  long one (:meth:`Check.estimate`): :class:`Cost`.
- What a check sees: :class:`AuditContext` (``ctx``), :class:`CleanPass` (``ctx.clean``),
  :class:`AuditData`, :class:`Batch`, :class:`TensorSplit`. A check's own per-image rows
  that should not grow in memory with the images: :class:`ImageRows` (in memory up to a
  limit, else in a temporary file).
- Models: :class:`AuditTarget` (the Protocol both kinds satisfy), :class:`Target` (white box),
  :class:`BlackBoxTarget`, :class:`LayerInfo`, :class:`GapHead`; loading another model
  (a proxy, a reference): :func:`load_model` with :class:`ModelOptions`;
  :func:`load_state_dict` / :func:`read_state_dict` (the one state-dict reader: accepts
  ``state_dict``/``model``/``model_state_dict`` keys, strips ``module.``/``_orig_mod.``).
- Gradients and numerics: :func:`contiguous_gradient`, :data:`NO_INPUT_GRADIENT`,
  :func:`relative_tolerance`, :func:`oom_backoff` (batch-size backoff on CUDA OOM).
- Attribution maps: :func:`grad_cam` (:func:`grad_cam_from`), :func:`upsample`,
  :func:`minmax_normalize`; the clean images' maps every check of a model shares
  (:class:`EvaluationMaps` under :func:`evaluation_maps_key` in ``ctx.shared``); the layer
  Grad-CAM explains: :func:`choose_layer` (:class:`LayerChoice`, :func:`applied_setting`);
  where the image grid is in a layer's output (channels first or last, ViT tokens):
  :class:`ActivationLayout`, as the probe records it in :attr:`LayerInfo.layout`.
- Localization metrics: :func:`pointing_hits`, :func:`center_hits`, :func:`energy_in_region`,
  :func:`pointing_tolerance_px`, :data:`POINTING_TOLERANCE_AT_224`, :func:`as_box_sets`,
  :func:`box_masks`, :func:`boxes_from_masks`, :func:`peak_points`, :func:`is_constant`,
  :func:`connected_components`, :func:`largest_component_boxes`, :func:`box_iou`
  (:data:`IOU_HIT`).
- The localization rule, for any check that scores maps against objects: a batch's objects
  (:func:`object_regions`, :class:`ObjectRegions`), the per-image scores and the metrics with
  intervals and p-value (:class:`LocalizationScores`, :class:`ScoredMaps`), its settings
  (:class:`LocalizationSettings`), what a check declares (:data:`LOCALIZATION_METRICS`,
  :data:`LOCALIZATION_HEADLINE`, :data:`LOCALIZATION_DIRECTIONS`,
  :data:`LOCALIZATION_THRESHOLDS`, :data:`LOCALIZATION_MIN_SAMPLE`) and its message
  (:func:`localization_summary`, :func:`rule_text`).
- Image similarity: :func:`ssim`, :func:`ssim_window` (:class:`SsimWindow`).
- Attacks: :func:`build_attack` and :func:`craft` (torchattacks, configured once for every
  check; :data:`ATTACK_METHODS`), :class:`LogitsModule` (a Target or network as the module
  torchattacks attacks), :func:`missing_input_gradient`, :data:`NORMS`, :func:`budget_label`,
  :func:`parse_budget`; FGSM at many budgets from one clean-point gradient, bit for bit
  torchattacks' step: :func:`clean_gradient` (:func:`clean_gradient_and_logits`),
  :func:`fgsm_step`; PGD and MI-FGSM from the clean images given that gradient and its
  logits (:class:`CleanPoint`, ``craft(clean_point=...)``).
- Statistics: :func:`wilson_interval` (rates); :func:`paired_sign_test` (exact, McNemar's on
  0/1 outcomes) with :func:`binomial_upper_tail`, :func:`bootstrap_mean_interval`,
  :func:`spearman_rows` with :func:`average_ranks` (per-image scores).
- Errors: :class:`UsageError` (the user's input is wrong: exit 4, one line),
  :class:`TargetError` (the model misbehaved: the check errors, the audit goes on).
- Scorecard sections: :mod:`svg` (tables, line charts, figures, number formatting, escaping)
  for the ``auditkit_scorecard_sections`` hook.
"""
from __future__ import annotations

from auditkit.attacks import METHODS as ATTACK_METHODS
from auditkit.attacks import (
    CleanPoint,
    LogitsModule,
    build_attack,
    clean_gradient,
    clean_gradient_and_logits,
    craft,
    fgsm_step,
    missing_input_gradient,
)
from auditkit.batching import oom_backoff
from auditkit.budgets import NORMS, budget_label, parse_budget
from auditkit.check import (
    Artifact,
    Check,
    CheckResult,
    Cost,
    Curve,
    CurvePoint,
    Findings,
    Outcome,
    Skipped,
    Threshold,
    XFailed,
    skip,
    xfail,
)
from auditkit.context import AuditContext, CleanPass
from auditkit.data.base import AuditData, Batch, TensorSplit
from auditkit.errors import TargetError, UsageError
from auditkit.layer_choice import LayerChoice, applied_setting, choose_layer
from auditkit.layouts import ActivationLayout
from auditkit.localization import (
    IOU_HIT,
    LOCALIZATION_DIRECTIONS,
    LOCALIZATION_HEADLINE,
    LOCALIZATION_METRICS,
    LOCALIZATION_MIN_SAMPLE,
    LOCALIZATION_THRESHOLDS,
    POINTING_TOLERANCE_AT_224,
    LocalizationScores,
    LocalizationSettings,
    ObjectRegions,
    ScoredMaps,
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
    object_regions,
    peak_points,
    pointing_hits,
    pointing_tolerance_px,
    rule_text,
)
from auditkit.markers import hookimpl
from auditkit.models.format import ModelOptions
from auditkit.models.loaders import load_model
from auditkit.models.state_dict import load_state_dict, read_state_dict
from auditkit.records import ImageRows
from auditkit.reporters import svg
from auditkit.saliency import EvaluationMaps, evaluation_maps_key, grad_cam, grad_cam_from, minmax_normalize, upsample
from auditkit.similarity import SsimWindow, ssim, ssim_window
from auditkit.statistics import average_ranks, binomial_upper_tail, bootstrap_mean_interval, paired_sign_test, spearman_rows
from auditkit.stats import wilson_interval
from auditkit.target import (
    NO_INPUT_GRADIENT,
    AuditTarget,
    BlackBoxTarget,
    GapHead,
    LayerInfo,
    Target,
    contiguous_gradient,
    relative_tolerance,
)

__all__ = [
    "ATTACK_METHODS",
    "ActivationLayout",
    "Artifact",
    "AuditContext",
    "AuditData",
    "AuditTarget",
    "Batch",
    "BlackBoxTarget",
    "Check",
    "CleanPoint",
    "Cost",
    "CheckResult",
    "CleanPass",
    "Curve",
    "CurvePoint",
    "EvaluationMaps",
    "ImageRows",
    "Findings",
    "GapHead",
    "IOU_HIT",
    "LOCALIZATION_DIRECTIONS",
    "LOCALIZATION_HEADLINE",
    "LOCALIZATION_METRICS",
    "LOCALIZATION_MIN_SAMPLE",
    "LOCALIZATION_THRESHOLDS",
    "LayerChoice",
    "LayerInfo",
    "LocalizationScores",
    "LocalizationSettings",
    "LogitsModule",
    "ModelOptions",
    "NORMS",
    "NO_INPUT_GRADIENT",
    "ObjectRegions",
    "Outcome",
    "POINTING_TOLERANCE_AT_224",
    "ScoredMaps",
    "Skipped",
    "SsimWindow",
    "Target",
    "TargetError",
    "TensorSplit",
    "Threshold",
    "UsageError",
    "XFailed",
    "applied_setting",
    "as_box_sets",
    "average_ranks",
    "binomial_upper_tail",
    "bootstrap_mean_interval",
    "box_iou",
    "box_masks",
    "boxes_from_masks",
    "budget_label",
    "build_attack",
    "center_hits",
    "choose_layer",
    "clean_gradient",
    "clean_gradient_and_logits",
    "connected_components",
    "contiguous_gradient",
    "craft",
    "energy_in_region",
    "evaluation_maps_key",
    "fgsm_step",
    "grad_cam",
    "grad_cam_from",
    "hookimpl",
    "is_constant",
    "largest_component_boxes",
    "load_model",
    "load_state_dict",
    "localization_summary",
    "minmax_normalize",
    "missing_input_gradient",
    "object_regions",
    "oom_backoff",
    "paired_sign_test",
    "parse_budget",
    "peak_points",
    "pointing_hits",
    "pointing_tolerance_px",
    "read_state_dict",
    "relative_tolerance",
    "rule_text",
    "skip",
    "spearman_rows",
    "ssim",
    "ssim_window",
    "svg",
    "upsample",
    "wilson_interval",
    "xfail",
]
