"""Batch-size backoff on CUDA out-of-memory: split the batch in halves and retry, so one
too-large batch slows an audit down instead of killing it."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_backoff(fn: Callable[..., Any], *tensors: torch.Tensor, min_size: int = 1) -> Any:
    """Call ``fn(*tensors)``; on CUDA out-of-memory, free the cache, split every tensor in
    halves along dim 0 and retry each half (recursively, down to ``min_size`` items).

    ``fn`` must return a tensor, a tuple of tensors, or a dict of tensors, each with the batch
    along dim 0; the halves' results are concatenated in order. Tensors of the inputs that
    are not batched must be closed over by ``fn``, not passed.
    """
    try:
        return fn(*tensors)
    except Exception as exc:
        n = int(tensors[0].shape[0])
        if not is_oom(exc) or n <= min_size:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = (n + 1) // 2
    log.warning("CUDA out of memory on a batch of %d; retrying as two batches of <= %d", n, half)
    first = oom_backoff(fn, *(t[:half] for t in tensors), min_size=min_size)
    second = oom_backoff(fn, *(t[half:] for t in tensors), min_size=min_size)
    return _concat(first, second)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, tuple):
        return tuple(_concat(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    raise TypeError(f"oom_backoff: cannot concatenate results of type {type(a).__name__}")
