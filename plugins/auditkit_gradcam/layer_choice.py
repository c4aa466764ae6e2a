"""Which layer Grad-CAM explains: the toolkit's :func:`choose_layer` (the rule lives in the core
so that every check computing Grad-CAM explains the same layer), under the names the gradcam
checks and their tests use."""
from __future__ import annotations

from auditkit.toolkit import LayerChoice, applied_setting, choose_layer  # noqa: F401  (re-exported)
