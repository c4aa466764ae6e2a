"""Built-in check ``accuracy.clean``: top-1 accuracy on the evaluation images, from the
shared clean forward pass. Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import auditkit
from auditkit import Check, Cost, Findings, Threshold
from auditkit.toolkit import AuditContext, binomial_upper_tail, wilson_interval

# The default pass rule's one-sided significance level.
SIGNIFICANCE = 0.05


class CleanAccuracy(Check):
    """Top-1 accuracy on the clean evaluation images, against chance.

    ``top1`` with its 95% Wilson interval (``top1_ci_low``, ``top1_ci_high``); ``chance``, the
    accuracy of the best constant answer on these images (the share of the most frequent
    label, 1/K on balanced data); ``p_above_chance``, the exact one-sided binomial p-value of
    the number of correct answers against ``chance``. The check passes when the model is
    right significantly more often than always answering the most frequent class
    (``p_above_chance <= 0.05``): a model at or below chance has nothing for the other checks
    to explain or attack. Raise the bar with a ``top1`` threshold in the configuration.
    """

    id = "accuracy.clean"
    requires = ("labels",)
    headline = ("top1", "chance")
    metrics = ("top1", "top1_ci_low", "top1_ci_high", "chance", "p_above_chance", "n_images")
    directions = {"top1*": "higher", "chance": None, "p_above_chance": "lower", "n_images": None}
    thresholds = (Threshold("p_above_chance", "max", SIGNIFICANCE),)
    # top1 is a rate over images: 5 is the smallest n at which even a perfect score can be told
    # from a coin flip at the 5% level (0.5^n < 0.05).
    min_sample = 5

    @dataclass
    class Settings:
        per_class: bool = True

    def estimate(self, ctx: AuditContext) -> Cost:
        """No image pass of its own: it reads the shared clean pass (``ctx.clean``), which the
        session makes once per model, outside every check, whichever check asks first."""
        return Cost()

    def run(self, ctx: AuditContext):
        clean = ctx.clean
        correct = clean.correct.float()
        n, hits = len(clean), int(correct.sum())
        counts = torch.bincount(clean.labels.long().cpu(), minlength=max(ctx.data.num_classes, 1))
        chance = float(counts.max()) / n if n else math.nan
        lo, hi = wilson_interval(hits, n)
        metrics = {
            "top1": float(correct.mean()),
            "top1_ci_low": lo,
            "top1_ci_high": hi,
            "chance": chance,
            "p_above_chance": binomial_upper_tail(hits, n, chance) if n else math.nan,
            "n_images": float(n),
        }
        details = {}
        if self.settings.per_class:
            per_class = {}
            for k, name in enumerate(ctx.data.class_names):
                sel = clean.labels == k
                if bool(sel.any()):
                    per_class[name] = float(correct[sel].mean())
            details["per_class_top1"] = per_class
        return Findings(
            metrics=metrics,
            message=f"{hits}/{n} correct, top-1 {metrics['top1']:.3f} [{lo:.3f}, {hi:.3f}] (chance {chance:.3f}, p = {metrics['p_above_chance']:.2g})",
            details=details,
        )


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [CleanAccuracy]
