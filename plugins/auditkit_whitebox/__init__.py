"""Built-in white-box attack checks ``whitebox.fgsm``, ``whitebox.pgd`` and ``whitebox.masking``
(torchattacks on the Target in pixel space). Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

import auditkit

from auditkit_whitebox.masking import GradientMasking
from auditkit_whitebox.robustness import FGSMRobustness, PGDRobustness

__all__ = ["FGSMRobustness", "GradientMasking", "PGDRobustness"]


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [FGSMRobustness, PGDRobustness, GradientMasking]


from auditkit_whitebox.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
