"""An example third-party auditkit plugin: one check, ``example.confidence``, measuring how
confident the model is on the clean evaluation images and how calibrated that confidence is."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import auditkit
from auditkit import Check, Findings, Threshold


class Confidence(Check):
    """Mean top-1 softmax confidence and its gap to accuracy (overconfidence)."""

    id = "example.confidence"
    requires = ("scores", "labels")
    headline = ("mean_confidence", "overconfidence")
    thresholds = (Threshold("overconfidence", "max", 0.5),)

    @dataclass
    class Settings:
        temperature: float = 1.0

    def run(self, ctx):
        clean = ctx.clean  # the shared forward pass: no extra model calls
        # log_probs, not logits: right whether the model answered logits (white box) or
        # probabilities (ONNX, HTTP endpoint); softmax(log p / T) is temperature scaling.
        probs = torch.softmax(clean.log_probs / self.settings.temperature, dim=1)
        confidence = probs.max(dim=1).values
        accuracy = clean.correct.float().mean()
        metrics = {
            "mean_confidence": float(confidence.mean()),
            "overconfidence": float(confidence.mean() - accuracy),
        }
        return Findings(metrics=metrics, message=f"accuracy {float(accuracy):.3f}")


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [Confidence]


from auditkit_example.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (registers the section)
