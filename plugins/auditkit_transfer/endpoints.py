"""Deprecated: HTTP endpoint targets moved to :mod:`auditkit.models.http_endpoint`."""
from __future__ import annotations

import warnings

from auditkit.models.http_endpoint import *  # noqa: F401,F403

warnings.warn("auditkit_transfer.endpoints is deprecated; import from auditkit.models.http_endpoint", DeprecationWarning, stacklevel=2)
