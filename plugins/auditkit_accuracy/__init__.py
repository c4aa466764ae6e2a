"""Built-in check ``accuracy.clean``: top-1 accuracy on the evaluation images, from the
shared clean forward pass. Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

from dataclasses import dataclass

import auditkit
from auditkit import Check, Findings


class CleanAccuracy(Check):
    """Top-1 accuracy on the clean evaluation images."""

    id = "accuracy.clean"
    requires = ("labels",)
    headline = ("top1",)
    metrics = ("top1", "n_images")
    directions = {"top1": "higher", "n_images": None}
    # top1 is a rate over images: 5 is the smallest n at which even a perfect score can be told
    # from a coin flip at the 5% level (0.5^n < 0.05).
    min_sample = 5

    @dataclass
    class Settings:
        per_class: bool = True

    def run(self, ctx):
        clean = ctx.clean
        correct = clean.correct.float()
        metrics = {"top1": float(correct.mean()), "n_images": float(len(clean))}
        details = {}
        if self.settings.per_class:
            per_class = {}
            for k, name in enumerate(ctx.data.class_names):
                sel = clean.labels == k
                if bool(sel.any()):
                    per_class[name] = float(correct[sel].mean())
            details["per_class_top1"] = per_class
        chance = 1.0 / max(ctx.data.num_classes, 1)
        return Findings(
            metrics=metrics,
            message=f"{int(correct.sum())}/{len(clean)} correct (chance {chance:.3f})",
            details=details,
        )


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [CleanAccuracy]
