"""The statistics the Grad-CAM checks report, all from the toolkit (auditkit.statistics: exact
paired tests, bootstrap intervals, Spearman rank correlation; rates: wilson_interval), under
the names the checks and their tests use; SSIM is auditkit.similarity's."""
from __future__ import annotations

from auditkit.toolkit import (  # noqa: F401  (re-exported for the checks and their tests)
    average_ranks,
    binomial_upper_tail,
    bootstrap_mean_interval,
    paired_sign_test,
    spearman_rows,
    ssim,
)

# The randomization check's name for the shared SSIM on [B,H,W] maps (window policy, NaN for
# maps under 5 px: auditkit.similarity).
ssim_rows = ssim
