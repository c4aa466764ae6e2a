"""The device an audit runs on: resolved once from ``--device`` (auto, cpu, cuda[:N]) to a
``torch.device`` and described for the reports."""
from __future__ import annotations

import torch

from auditkit.errors import UsageError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda[:N]`` must exist; ``cpu`` always works. A
    ``torch.device`` is checked the same way and returned as it is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return dev


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:N (the GPU's name)`` as the report's ``environment.device``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"
