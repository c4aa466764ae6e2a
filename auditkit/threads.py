"""CPU threads: how many PyTorch uses for an audit, and how its OpenMP workers wait.

By default OpenMP workers (PyTorch's CPU kernels run on them) spin between parallel regions,
which is fast on an idle machine and ruinous on a busy one: a spinning worker burns the core
that the worker it waits for needs. On a 2-core machine with other work running (a CI
runner), ``inversion.fidelity`` with 2 threads used 9.7x the CPU time of a one-thread run;
with passive waiting it used 1.03x (measured 2026-11-29, see benchmarks/README.md). The
``auditkit`` command therefore asks OpenMP to wait passively (``OMP_WAIT_POLICY=PASSIVE``)
unless the environment already says otherwise. OpenMP reads the variable once, when PyTorch
is imported, so the Python API cannot change it: set it before ``import torch`` there.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_waiting() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already; a no-op once torch is
    imported (OpenMP has read its environment by then)."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave torch's count,
    one per physical core), and put the caller's count back after it."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe_threads() -> dict[str, Any]:
    """``{"threads": N, "omp_wait_policy": "PASSIVE" | None}`` for the report's environment."""
    import torch

    return {"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get(WAIT_POLICY)}
