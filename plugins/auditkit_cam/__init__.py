"""Built-in check ``cam.consistency``: class activation maps of global-average-pooling models,
confirmed by their identities. Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

import auditkit
from auditkit_cam.consistency import NO_GAP_HEAD_REASON, CamConsistency
from auditkit_cam.maps import (
    FeaturePass,
    IdentityErrors,
    capture_pool_input,
    class_activation_maps,
    grad_cam_identity_errors,
    logit_identity_errors,
    pool_input_pass,
)

__all__ = [
    "CamConsistency",
    "FeaturePass",
    "IdentityErrors",
    "NO_GAP_HEAD_REASON",
    "capture_pool_input",
    "class_activation_maps",
    "grad_cam_identity_errors",
    "logit_identity_errors",
    "pool_input_pass",
]


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [CamConsistency]


from auditkit_cam.scorecard import auditkit_scorecard_sections  # noqa: E402,F401  (the scorecard section)
