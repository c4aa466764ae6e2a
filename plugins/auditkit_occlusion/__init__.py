"""Built-in occlusion check: ``occlusion.localization``, localization through a model's answers
only (black boxes included). Registered through the ``auditkit`` entry-point group."""
from __future__ import annotations

import auditkit

from auditkit_occlusion.localization import OcclusionLocalization

__all__ = ["OcclusionLocalization"]


@auditkit.hookimpl
def auditkit_collect_checks(config):
    return [OcclusionLocalization]
