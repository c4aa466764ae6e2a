"""Built-in Grad-CAM checks: ``gradcam.localization``, ``gradcam.randomization`` and
``gradcam.faithfulness``. Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

import auditkit

from auditkit_gradcam.faithfulness import GradCamFaithfulness
from auditkit_gradcam.localization import GradCamLocalization
from auditkit_gradcam.randomization import GradCamRandomization

__all__ = ["GradCamFaithfulness", "GradCamLocalization", "GradCamRandomization"]


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [GradCamLocalization, GradCamRandomization, GradCamFaithfulness]


from auditkit_gradcam.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
