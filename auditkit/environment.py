"""The machine and software an audit ran on, for the report's ``environment``."""
from __future__ import annotations

import os
from typing import Any

import torch

from auditkit.threads import describe_threads


def environment() -> dict[str, Any]:
    import platform

    import torchvision

    import auditkit

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "auditkit": auditkit.__version__,
        **describe_threads(),
        "cpu_count": os.cpu_count(),
    }
